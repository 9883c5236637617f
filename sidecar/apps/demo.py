"""`rerank-sidecar demo`: a sidecar, a Milvus Lite index of a bundled catalogue, and reranked searches.

The sidecar runs as a separate process (`python -m sidecar.cli serve` on a loopback port the OS picks),
so this process never imports torch and reaches it only through `sidecar.client`, as an application
would. The demo indexes `demo_data/` into a temporary Milvus Lite file with
`connectors.milvus.index_documents`, runs text and image queries through
`connectors.search_and_rerank`, and prints first-stage and reranked orders side by side with per-stage
timings. Ctrl-C or SIGTERM stops the sidecar gracefully and removes the index; should this process die
outright, Linux sends the sidecar SIGTERM.

    rerank-sidecar demo            # Qwen3-VL-Reranker-2B + Qwen3-VL-Embedding-2B from the model hub
    rerank-sidecar demo --tiny     # offline: tiny random models (meaningless rankings, real plumbing)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.apps.demo_data import DATA_DIR, DemoQuery, load_catalogue
from sidecar.apps.embedded import (
    DEFAULT_EMBEDDER,
    DEFAULT_RERANKER,
    DemoError,
    Sidecar,
    open_milvus_lite,
    quiet_engine_logs,
    resolve_models,
    say,
)
from sidecar.apps.sidecar_flags import add_key_argument
from sidecar.settings import API_KEY_ENV, Settings

FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--model", {"help": f"reranker: hub id or local directory (default: {DEFAULT_RERANKER})"}),
    ("--embedding-model", {"help": f"embedding model: hub id or local directory (default: {DEFAULT_EMBEDDER})"}),
    ("--tiny", {"action": "store_true", "help": "offline: tiny RANDOM models (meaningless rankings, real plumbing)"}),
    ("--cache-dir", {"type": Path, "help": "where --tiny keeps its models (default: ~/.cache/rerank-sidecar/tiny)"}),
    ("--device", {"default": "auto", "help": "the sidecar's torch device: auto, cpu, cuda, ... (default: auto)"}),
    ("--top-k", {"type": int, "default": 10, "help": "first-stage candidates reranked per query (default: 10)"}),
    ("--show", {"type": int, "default": 5, "help": "rows shown per query (default: 5)"}),
    ("--query", {"action": "append", "help": "your own query instead of the built-in ones (repeatable): text or an image file"}),
    ("--startup-timeout", {"type": float, "default": 1800.0, "help": "seconds to wait for the sidecar, downloads included (default: 1800)"}),
    ("--verbose", {"action": "store_true", "help": "show the sidecar's and Milvus Lite's logs throughout"}),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `demo` subcommand's description and flags."""
    parser.description = (
        "Start a sidecar, index a bundled catalogue of real pictures into Milvus Lite, run text and image "
        "queries, and show first-stage vs reranked results with per-stage timings. --tiny runs offline."
    )
    for flag, options in FLAGS:
        parser.add_argument(flag, **options)
    add_key_argument(parser)  # the demo's sidecar requires it, and its client sends it
    # --- `demo --web`: the search page instead of the printed tables; see sidecar/apps/web/cli.py ---
    web = parser.add_argument_group("web page")
    web.add_argument("--web", action="store_true", help="serve the search page instead of printing tables")
    web.add_argument("--host", dest="web_host", default="127.0.0.1", help="--web: address to bind (default: 127.0.0.1)")
    web.add_argument("--port", dest="web_port", type=int, default=8000, help="--web: port to bind (default: 8000)")
    from sidecar.apps.web.cli import add_experiment_argument

    add_experiment_argument(web, default="a file in the demo's temporary directory")


class Timings:
    """Wall-clock seconds per stage, and the sidecar's own usage reports."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.usage: dict[str, list[Any]] = defaultdict(list)

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn`, timed under `stage`; a result with `usage` (a sidecar response) has it kept too."""

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                self.seconds[stage].append(time.perf_counter() - start)
            if getattr(result, "usage", None) is not None:
                self.usage[stage].append(result.usage)
            return result

        return call


class TimedClient:
    """A `RerankerClient` stand-in for `search_and_rerank` that times Embed and Rerank calls."""

    def __init__(self, client: Any, timings: Timings, embed_stage: str) -> None:
        self.target, self.model_info = client.target, client.model_info
        self.embed, self.rerank = timings.timed(embed_stage, client.embed), timings.timed("rerank", client.rerank)


def _ms(seconds: float) -> str:
    """Milliseconds below 10 s, else seconds."""
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def render(hits: list[Any], show: int, titles: dict[str, str]) -> list[str]:
    """First-stage and reranked top `show`, side by side, with each reranked item's rank change."""
    up, down = ("▲", "▼") if "utf" in (sys.stdout.encoding or "").lower() else ("^", "v")
    first = sorted(hits, key=lambda h: h.first_stage_rank)[:show]
    reranked = sorted(hits, key=lambda h: h.rank)[:show]

    def label(hit: Any) -> str:
        text = f"{hit.id}: {titles.get(str(hit.id), '')}"
        return text if len(text) <= 36 else text[:35] + "…"

    lines = [f"   # │ {'first stage':<36} {'score':>7} │ {'reranked':<36} {'rerank':>7}  change"]
    for i, (a, b) in enumerate(zip(first, reranked), start=1):
        moved = b.first_stage_rank - b.rank
        change = f"{up}{moved}" if moved > 0 else f"{down}{-moved}" if moved < 0 else "="
        change += f" (was #{b.first_stage_rank})" if moved else ""
        lines.append(
            f"  {i:>2} │ {label(a):<36} {a.first_stage_score:>7.4f} │ {label(b):<36} {b.rerank_score:>7.4f}  {change}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    """Entry point of `rerank-sidecar demo`; returns the exit status (130 after Ctrl-C)."""
    from connectors.errors import ConnectorError

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), interrupt)
    if not args.verbose:
        quiet_engine_logs()
    if args.sidecar_api_key:  # read by the sidecar process it starts and by its client alike
        os.environ[API_KEY_ENV] = args.sidecar_api_key
    try:
        if getattr(args, "web", False):  # `demo --web`
            from sidecar.apps.web.cli import run_embedded

            return run_embedded(args)
        return _run(args)
    except KeyboardInterrupt:
        say("\ninterrupted: sidecar stopped, temporary index removed", file=sys.stderr)
        return 130
    except (DemoError, ConnectorError) as exc:
        say(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    """The demo proper: [1/3] sidecar, [2/3] index, [3/3] queries; cleanup through one ExitStack."""
    if args.top_k < 1 or args.show < 1:
        raise DemoError("--top-k and --show must be at least 1")
    catalogue, timings = load_catalogue(), Timings()
    queries = [DemoQuery(image=Path(q)) if Path(q).is_file() else DemoQuery(q) for q in args.query or []]
    queries = queries or catalogue.queries
    items, titles = catalogue.items, {item.id: item.title for item in catalogue.items}
    say("rerank-sidecar demo: first-stage search in Milvus Lite, reranking in the sidecar")
    reranker, embedder = resolve_models(args)
    say(f"models: reranker = {reranker}\n        embedding = {embedder}")
    if args.tiny:
        say("NOTE: --tiny models have RANDOM weights: the rankings below are meaningless; the demo shows the plumbing.")
    serve_args = ["--model", reranker, "--embedding-model", embedder, "--media-root", str(DATA_DIR)]
    if "http" in {f.name for f in dataclasses.fields(Settings)}:
        serve_args.append("--no-http")  # the demo speaks gRPC; a fixed HTTP port could clash with another server
    with contextlib.ExitStack() as stack:
        sidecar = Sidecar([*serve_args, "--device", args.device, "--drain-seconds", "5"], args.verbose)
        say("[1/3] starting the sidecar (python -m sidecar.cli serve on 127.0.0.1, port picked by the OS) ...")
        start = time.perf_counter()
        sidecar.start()
        stack.callback(sidecar.stop)
        try:
            target = sidecar.wait_ready(args.startup_timeout)
        except DemoError as exc:
            hint = "" if args.tiny else "\n\n(Without the model hub, `rerank-sidecar demo --tiny` runs offline.)"
            raise DemoError(f"{exc}{hint}") from None
        timings.seconds["sidecar start + model load"].append(time.perf_counter() - start)
        say(f"  ready on {target} (pid {sidecar.process.pid}) after {time.perf_counter() - start:.1f}s")

        from connectors import Document, search_and_rerank
        from connectors.milvus import index_documents
        from sidecar.client import RerankerClient

        client = stack.enter_context(RerankerClient(target, timeout=600))
        for model in client.model_info().models:
            say(f"  loaded {model.kind}: {model.name} ({model.device}, {model.dtype}, hidden size {model.dimension})")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rerank-sidecar-demo-")))
        milvus = open_milvus_lite(workdir / "demo.db", stack)
        fields = [{"title": it.title, "category": it.category} for it in items]
        documents = [Document(it.id, it.text, image=it.file, fields=f) for it, f in zip(items, fields)]
        say(f"[2/3] indexing {len(items)} catalogue items (text + image) into Milvus Lite at {workdir / 'demo.db'} ...")
        start = time.perf_counter()
        connector = index_documents(
            milvus, "catalogue", documents, embed_client=TimedClient(client, timings, "catalogue embedding"),
            embed_batch_size=6, recreate=True,
        )  # fmt: skip
        indexing = time.perf_counter() - start
        timings.seconds["Milvus insert + index"].append(indexing - sum(timings.seconds["catalogue embedding"]))
        say(f"  indexed {len(items)} items in {indexing:.1f}s")
        connector.search = timings.timed("first-stage search", connector.search)  # type: ignore[method-assign]
        timed_client = TimedClient(client, timings, "query embedding")

        say(
            f"[3/3] {len(queries)} queries: top {args.top_k} from Milvus, reranked by the sidecar, top {args.show} shown"
        )
        for number, query in enumerate(queries, start=1):
            say(f"\nQuery {number}/{len(queries)}  {query.describe()}")
            hits = search_and_rerank(
                connector, query.image or query.text, top_k=args.top_k, top_n=None, mode=query.mode,  # type: ignore[arg-type]
                rerank_client=timed_client,
            )  # fmt: skip
            for line in render(hits, args.show, titles):
                say(line)
            usage, took = timings.usage["rerank"][-1], {k: _ms(v[-1]) for k, v in timings.seconds.items()}
            say(
                f"  timings: embed {took['query embedding']} · search {took['first-stage search']} · rerank {len(hits)} "
                f"{took['rerank']} (in the sidecar: preprocess {usage.preprocessing_ms:.0f} ms, "
                f"inference {usage.inference_ms:.0f} ms, {usage.input_tokens} tokens)"
            )
        say(f"\nPer-stage timings\n  {'stage':<28} {'calls':>5} {'total':>9} {'median':>9}")
        for stage, values in timings.seconds.items():
            say(f"  {stage:<28} {len(values):>5} {_ms(sum(values)):>9} {_ms(statistics.median(values)):>9}")
        if args.tiny:
            say("\n(Random tiny models: the reranked order is noise. Run without --tiny for the Qwen3-VL models.)")
    return 0
