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
import functools
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sidecar.demo_data import DATA_DIR, DemoQuery, load_catalogue
from sidecar.settings import Settings

DEFAULT_RERANKER = "Qwen/Qwen3-VL-Reranker-2B"
DEFAULT_EMBEDDER = "Qwen/Qwen3-VL-Embedding-2B"
TINY_SEEDS = {"reranker": 0, "embedding": 1}
TINY_MARK = ".complete"
PORT_LINE = re.compile(r"gRPC listening on [^\s:]+:(\d+)")
say = functools.partial(print, flush=True)


class DemoError(Exception):
    """A failure the demo explains in one message (exit status 2)."""


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
    # --- `demo --web`: the search page instead of the printed tables; see sidecar/web/cli.py ---
    web = parser.add_argument_group("web page")
    web.add_argument("--web", action="store_true", help="serve the search page instead of printing tables")
    web.add_argument("--host", dest="web_host", default="127.0.0.1", help="--web: address to bind (default: 127.0.0.1)")
    web.add_argument("--port", dest="web_port", type=int, default=8000, help="--web: port to bind (default: 8000)")


def ensure_tiny_models(cache_dir: Path) -> tuple[Path, Path]:
    """(reranker, embedding) tiny random checkpoints in `cache_dir`, built on first use (no network)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    missing = [kind for kind in TINY_SEEDS if not (cache_dir / kind / TINY_MARK).exists()]
    if not missing:
        say(f"  reusing tiny random models in {cache_dir}")
    for kind in missing:
        say(f"  building a tiny random {kind} model in {cache_dir / kind} (first run only) ...")
        staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=cache_dir))
        try:
            command = [sys.executable, "-m", "sidecar.cli", "make-tiny-model", str(staging), "--kind", kind]
            command += ["--seed", str(TINY_SEEDS[kind])]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if done.returncode != 0:
                raise DemoError(f"could not build the tiny {kind} model:\n{done.stderr[-3000:]}")
            (staging / TINY_MARK).write_text(f"tiny {kind} seed={TINY_SEEDS[kind]}\n")
            shutil.rmtree(cache_dir / kind, ignore_errors=True)
            with contextlib.suppress(OSError):  # a concurrent demo may have just put one there
                staging.rename(cache_dir / kind)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return cache_dir / "reranker", cache_dir / "embedding"


def hub_problem(name: str) -> str | None:
    """Why `name` cannot load here, found in seconds (the hub client retries for minutes); None if it may."""
    if Path(name).expanduser().is_dir():
        return None
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None
    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
    except ValueError:  # HFValidationError: not a repo id
        return "it is neither a local directory nor a model hub id"
    where = "it is neither a local directory nor in the Hugging Face cache"
    if constants.HF_HUB_OFFLINE:
        return f"{where}, and HF_HUB_OFFLINE is set"
    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout=5).close()
    except OSError as exc:
        return f"{where}, and the model hub ({constants.ENDPOINT}) cannot be reached: {exc}"
    return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Sidecar:
    """`rerank-sidecar serve` as a child process on a loopback port the OS picks."""

    def __init__(self, serve_args: list[str], verbose: bool) -> None:
        self.serve_args, self.verbose = serve_args, verbose
        self.echo = threading.Event()
        self.port: int | None = None
        self._port_seen = threading.Event()
        self._log = ""
        self.process: subprocess.Popen[bytes]
        self._reader: threading.Thread

    def start(self) -> None:
        """Spawn it in its own session: a terminal's Ctrl-C reaches only us, and we stop it in order."""
        command = [sys.executable, "-m", "sidecar.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
        self.process = subprocess.Popen(
            command + self.serve_args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )  # fmt: skip
        self.echo.set()
        self._reader = threading.Thread(target=self._pump, name="sidecar-log", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        """Reader thread: keep the log's tail, spot the bound port, echo while asked to."""
        assert self.process.stdout is not None
        while chunk := os.read(self.process.stdout.fileno(), 65536):
            text = chunk.decode(errors="replace")
            self._log = (self._log + text)[-200_000:]
            if self.port is None and (match := PORT_LINE.search(self._log)):
                self.port = int(match.group(1))
                self._port_seen.set()
            if self.echo.is_set():  # model loading (and downloading) progress
                sys.stderr.write(text)
                sys.stderr.flush()

    def log_tail(self, lines: int = 25) -> str:
        """The last `lines` lines of the sidecar's log (progress-bar redraws as separate lines)."""
        return "\n".join(self._log.replace("\r", "\n").splitlines()[-lines:])

    def _check_alive(self) -> None:
        """Raise `DemoError` with the log's tail if the sidecar has exited."""
        if self.process.poll() is not None:
            time.sleep(0.2)  # let the reader drain the last lines
            raise DemoError(
                f"the sidecar exited with status {self.process.returncode}; its last lines:\n{self.log_tail()}"
            )

    def wait_ready(self, timeout: float) -> str:
        """Block until the sidecar reports SERVING (models loaded and warmed up); return its target."""
        from sidecar.client import RerankerClient

        deadline = time.monotonic() + timeout
        while not self._port_seen.wait(0.2):
            self._check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"the sidecar did not bind a port in {timeout:.0f}s:\n{self.log_tail()}")
        target = f"127.0.0.1:{self.port}"
        with RerankerClient(target, retries=0) as probe:
            while True:
                self._check_alive()
                try:
                    probe.wait_until_ready(timeout=1.0)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise DemoError(f"the sidecar was not ready after {timeout:.0f}s") from None
        if not self.verbose:
            self.echo.clear()
        return target

    def stop(self) -> None:
        """SIGTERM (the server drains in-flight requests and exits), SIGKILL after 20 s."""
        if self.process.poll() is None:
            say("stopping the sidecar ...", file=sys.stderr)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=2)
        say(f"sidecar stopped (exit status {self.process.returncode})", file=sys.stderr)


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


def open_milvus_lite(path: Path, stack: contextlib.ExitStack) -> Any:
    """A MilvusClient on a Milvus Lite file; on exit its in-process server is stopped too, which flushes it."""
    from pymilvus import MilvusClient

    client = MilvusClient(str(path))

    def close() -> None:
        client.close()  # leaves the server running until interpreter exit: it would write into a removed dir
        with contextlib.suppress(ImportError):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(path))

    stack.callback(close)
    return client


def quiet_engine_logs() -> None:
    """Milvus Lite logs its start-up at INFO, and pymilvus calls one RPC it lacks (a harmless logged ERROR)."""
    for name in ("faiss", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("grpc._server").addFilter(
        lambda record: not (record.exc_info and isinstance(record.exc_info[1], NotImplementedError))
    )


def run_demo(args: argparse.Namespace) -> int:
    """Entry point of `rerank-sidecar demo`; returns the exit status (130 after Ctrl-C)."""
    from connectors.errors import ConnectorError

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), interrupt)
    if not args.verbose:
        quiet_engine_logs()
    try:
        if getattr(args, "web", False):  # `demo --web`
            from sidecar.web.cli import run_embedded

            return run_embedded(args)
        return _run(args)
    except KeyboardInterrupt:
        say("\ninterrupted: sidecar stopped, temporary index removed", file=sys.stderr)
        return 130
    except (DemoError, ConnectorError) as exc:
        say(f"error: {exc}", file=sys.stderr)
        return 2


def resolve_models(args: argparse.Namespace) -> tuple[str, str]:
    """(reranker, embedding model) to serve: tiny ones built on first use, or names checked for loadability."""
    if args.tiny:
        if args.model or args.embedding_model:
            raise DemoError("--tiny picks both models: leave out --model and --embedding-model, or --tiny")
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rerank-sidecar" / "tiny"
        reranker, embedder = ensure_tiny_models(args.cache_dir or cache)
        return str(reranker), str(embedder)
    names = args.model or DEFAULT_RERANKER, args.embedding_model or DEFAULT_EMBEDDER
    for name in dict.fromkeys(names):
        if problem := hub_problem(name):
            raise DemoError(
                f"cannot load {name}: {problem}.\n  Run `rerank-sidecar demo --tiny` for an offline demo with tiny random "
                "models,\n  or pass --model and --embedding-model with local checkpoint directories."
            )
    return names


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
