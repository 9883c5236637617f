"""Where a text query over K image documents spends its time: preparation, vision tower, language
model, and the rest of the forward (input assembly, key/value layout, scoring), with the document
feature cache cold and warm.

    python bench/profile_images.py --out bench/results/cpu-images            # CPU, "mini" shape, fp32
    python bench/profile_images.py --out OUT --shape 2b --model-dir DIR       # GPU, bf16

Runs the engine's own steps on one thread, in the micro-batches the engine would form, timing each
part with wall clocks (synchronised on a GPU); then one cold micro-batch under torch.profiler for
the top operators. Writes profile.txt (the split and the operator tables) and profile.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workloads  # noqa: E402
from bench.machine import load_reranker  # noqa: E402
from sidecar.media import MediaPolicy, MediaResolver  # noqa: E402
from sidecar.models import fused, visual_inputs  # noqa: E402
from sidecar.scheduler import batch_token_budget, feature_cache  # noqa: E402
from sidecar.settings import Settings  # noqa: E402
from sidecar.types import RerankInput  # noqa: E402


class Clock:
    """Accumulated wall time per part; parts may nest (the inner time is subtracted from the outer)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner: list[float] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def part(self, name: str):
        self.sync()
        self._inner.append(0.0)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            elapsed = time.perf_counter() - start
            inner = self._inner.pop()
            self.seconds[name] += elapsed - inner
            if self._inner:
                self._inner[-1] += elapsed


def micro_batches(rows: list, budget: int) -> list[list]:
    """Rows sorted by length, cut under the token budget (what the model thread does for one request)."""
    batches, current = [], []
    for row in sorted(rows, key=lambda r: len(r.ids)):
        if current and (len(current) + 1) * len(row.ids) > budget:
            batches.append(current)
            current = []
        current.append(row)
    return batches + [current] if current else batches


def one_request(reranker, request: RerankInput, cache, clock: Clock, budget: int) -> None:
    with clock.part("preparation (fetch, decode, resize, patchify, tokens, positions)"):
        prepared = reranker.prepare(request, MediaResolver(MediaPolicy()), cache=cache)
    with clock.part("prefix forward (rest)"):
        reranker.forward_prefix(prepared.prefix, cache)
    for batch in micro_batches(prepared.rows, budget):
        with clock.part("rows forward: input assembly, layout, scoring (rest)"):
            reranker.forward_rows(batch, cache)


def instrument(reranker, clock: Clock):
    """Time the vision tower and the language model wherever the engine calls them; returns the undo."""
    tower = visual_inputs.vision_tower

    def timed_tower(*args):
        with clock.part("vision tower"):
            return tower(*args)

    visual_inputs.vision_tower = timed_tower
    language_model = reranker.base.language_model
    forward = language_model.forward

    def timed_language_model(*args, **kwargs):
        with clock.part("language model (decoder layers)"):
            return forward(*args, **kwargs)

    language_model.forward = timed_language_model

    def undo() -> None:
        visual_inputs.vision_tower = tower
        del language_model.forward

    return undo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shape", choices=["tiny", "mini", "2b"])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--compile-layers", default="auto", help="auto (on for CUDA), on or off")
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-batch-tokens", type=int, help="default: the engine's auto budget")
    args = parser.parse_args()
    reranker, facts = load_reranker(args.shape, args.model_dir, args.device, args.dtype, args.compile_layers)
    device = reranker.device
    budget = batch_token_budget(Settings(max_batch_tokens=args.max_batch_tokens), device)
    request = RerankInput(workloads.text_query(), workloads.image_documents(reranker.tokenizer, args.documents))
    cache = feature_cache(Settings(), reranker)
    one_request(reranker, request, cache, Clock(device), budget)  # warm-up (allocator, kernels)

    states = ["cold", "warm"] + (["cold, eager layers"] if facts["compiled_layers"] else [])
    splits: dict[str, list[dict[str, float]]] = {state: [] for state in states}
    for _ in range(args.repeats):  # the states take turns, so load on a shared machine hits them alike
        for state in states:
            if state.startswith("cold"):
                cache.clear()
            fused.set_enabled(not state.endswith("eager layers"))
            clock = Clock(device)
            undo = instrument(reranker, clock)
            try:
                with clock.part("total"):
                    one_request(reranker, request, cache, clock, budget)
            finally:
                undo()
                fused.set_enabled(True)
            splits[state].append(dict(clock.seconds))

    lines = [f"{k}: {v}" for k, v in facts.items()] + [f"documents: {args.documents} images of 320x320, text query"]
    report = {"machine": facts, "documents": args.documents, "split_ms": {}}
    for state, runs in splits.items():
        total = statistics.median(r["total"] + sum(v for k, v in r.items() if k != "total") for r in runs)
        parts = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0] if k != "total"}
        report["split_ms"][state] = {k: round(v * 1000, 1) for k, v in parts.items()} | {"total": round(total * 1000)}
        lines += ["", f"{state} feature cache: {total * 1000:.0f} ms per request (median of {len(runs)})"]
        lines += [
            f"  {k:68s} {v * 1000:8.0f} ms  {v / total:6.1%}" for k, v in sorted(parts.items(), key=lambda x: -x[1])
        ]

    cache.clear()
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy()), cache=cache)
    reranker.forward_prefix(prepared.prefix, cache)
    batch = micro_batches(prepared.rows, budget)[0]
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        reranker.forward_rows(batch, cache)
        Clock(device).sync()
    sort = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    lines += ["", f"one cold micro-batch of {len(batch)} rows, top operators by {sort}:"]
    lines.append(prof.key_averages().table(sort_by=sort, row_limit=20, max_name_column_width=50))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.txt").write_text("\n".join(lines) + "\n")
    (args.out / "profile.json").write_text(json.dumps(report, indent=2))
    print("\n".join(lines[: lines.index("") + 40]), flush=True)


if __name__ == "__main__":
    main()
