"""Reranking throughput and latency: the reference loop vs the engine without and with prefix reuse.

Runs in one process on one model of a fixed shape with random weights (same compute as trained
ones). Variants: (a) `reference` - one pair per forward, as the official code scores (transformers'
eager layers); (b) `batched` - the engine, pairs batched and sorted by length, no prefix reuse;
(c) `engine` - everything on, the document feature cache emptied before each request (every
picture decoded and encoded: a catalogue seen for the first time); `engine-warm` - (c) with every
picture already in the feature cache; and `engine-eager` - (c) with transformers' eager decoder
layers instead of the compiled ones (only when the layers are compiled). With one client, the
variants of a workload take turns request by request, so load on a shared machine hits them alike.
Reports pairs/s, p50/p95 latency, peak memory, the FLOPs each variant performs (so speedups can
be checked against their FLOP bound), the share of preprocessing hidden behind the request's own
forwards (streamed preparation) and, on a GPU, model FLOP utilisation.

    python bench/rerank_bench.py --plan cpu --out bench/results/cpu      # CPU, "mini" shape, fp32
    python bench/rerank_bench.py --plan gpu --out bench/results/gpu      # GPU, Qwen3-VL-2B shape, bf16
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report, workloads  # noqa: E402
from bench.flops import Shape, decoder_flops, peak_matmul_flops, vision_flops  # noqa: E402
from bench.machine import load_reranker  # noqa: E402
from sidecar.media import MediaPolicy, MediaResolver  # noqa: E402
from sidecar.models import fused  # noqa: E402
from sidecar.models.reranker import RerankerModel  # noqa: E402
from sidecar.scheduler import Engine, batch_token_budget, min_saved_tokens  # noqa: E402
from sidecar.settings import Settings  # noqa: E402
from sidecar.types import RerankInput  # noqa: E402


@dataclass
class Case:
    """One measured configuration."""

    workload: str
    variant: str  # reference | batched | engine | engine-warm | engine-eager

    @property
    def reuses_prefix(self) -> bool:
        return self.variant in PREFIX_REUSE

    @property
    def compiled_layers(self) -> bool:
        return self.variant not in EAGER_LAYERS

    @property
    def warm_cache(self) -> bool:
        return self.variant in WARM_CACHE

    documents: int
    clients: int = 1
    requests: int = 3  # per client, after one warm-up request
    latencies_ms: list[float] = field(default_factory=list)
    pairs_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    flops_per_request: float = 0.0
    achieved_tflops: float = 0.0
    mfu: float | None = None
    peak_memory_mb: float = 0.0
    rss_growth_mb: float = 0.0
    preprocessing_ms: float = 0.0  # engine variants: mean per request, from the engine's own usage
    inference_ms: float = 0.0
    queue_ms: float = 0.0
    overlap_ms: float = 0.0  # preprocessing time during which the request's own forwards ran
    feature_cache_hits: float = 0.0  # per request
    load_average: float = 0.0  # the machine's 1-minute load average when the case ended


# What each variant turns on (with the layers compiled at all; see --compile-layers).
PREFIX_REUSE = frozenset({"engine", "engine-eager", "engine-warm"})
EAGER_LAYERS = frozenset({"reference", "engine-eager"})
WARM_CACHE = frozenset({"engine-warm"})

PLANS = {
    # (workload, K, variants, clients, requests per client)
    "cpu": [
        ("text-query/text-docs", 100, ("reference", "batched", "engine", "engine-eager"), 1, 2),
        ("text+image-query/text-docs", 100, ("reference", "batched", "engine", "engine-eager"), 1, 2),
        ("text-query/text-docs", 10, ("reference", "batched", "engine"), 1, 5),
        ("text-query/image-docs", 100, ("reference", "batched", "engine", "engine-warm"), 1, 2),
        ("text-query/text-docs", 1000, ("batched", "engine"), 1, 1),
        ("text-query/text-docs", 100, ("engine",), 8, 1),
    ],
    # The feature cache and streamed preparation alone: image documents, cold and warm, in turns.
    "cpu-images": [
        ("text-query/image-docs", 100, ("engine", "engine-warm"), 1, 6),
    ],
    "gpu": [
        ("text-query/text-docs", 100, ("reference", "batched", "engine", "engine-eager"), 1, 10),
        ("text+image-query/text-docs", 100, ("reference", "batched", "engine", "engine-eager"), 1, 10),
        ("text-query/text-docs", 10, ("reference", "batched", "engine"), 1, 20),
        ("text-query/text-docs", 10, ("engine",), 8, 10),
        ("text-query/image-docs", 100, ("reference", "batched", "engine", "engine-warm"), 1, 10),
        ("text-query/image-docs", 200, ("engine", "engine-warm"), 1, 10),
        ("text-query/text-docs", 1000, ("batched", "engine"), 1, 5),
        ("text-query/text-docs", 1000, ("engine",), 8, 1),
    ],
    # The image-document rows of the GPU plan alone.
    "gpu-images": [
        ("text-query/image-docs", 100, ("engine", "engine-warm"), 1, 10),
        ("text-query/image-docs", 200, ("engine", "engine-warm"), 1, 10),
    ],
    "quick": [
        ("text-query/text-docs", 10, ("reference", "batched", "engine"), 1, 2),
        ("text+image-query/text-docs", 10, ("reference", "engine"), 1, 1),
        ("text-query/image-docs", 10, ("engine", "engine-warm"), 1, 2),
        ("text-query/text-docs", 10, ("engine",), 4, 1),
    ],
}


MEMORY_ROUNDS = 12  # identical requests per memory-stability run


def build_request(reranker: RerankerModel, workload: str, k: int) -> RerankInput:
    query_kind, doc_kind = workload.split("/")
    query = workloads.image_query() if query_kind.startswith("text+image") else workloads.text_query()
    if doc_kind == "image-docs":
        docs = workloads.image_documents(reranker.tokenizer, k)
    else:
        docs = workloads.text_documents(reranker.tokenizer, k)
    return RerankInput(query, docs)


def request_flops(
    reranker: RerankerModel, shape: Shape, request: RerankInput, reuse: bool, warm: bool = False
) -> tuple[float, int]:
    """FLOPs of one request's forwards, and its pair count, from the real token counts.

    The prefix split follows the engine's own rule (Engine.min_saved_tokens for this device). With
    `warm`, every picture's vision-tower output comes from the feature cache: no vision FLOPs.
    """
    min_saved = min_saved_tokens(Settings(), reranker.device) if reuse else 0
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy()), reuse_prefix=reuse, min_saved_tokens=min_saved)
    vision = 0.0 if warm else 1.0
    prefix = prepared.prefix
    total = decoder_flops(shape, len(prefix)) if len(prefix) else 0.0
    total += vision * sum(vision_flops(shape, int(v.grid_thw.prod())) for v in prefix.visuals)
    for row in prepared.rows:
        total += decoder_flops(shape, len(row.ids), len(row.prefix))
        total += vision * sum(vision_flops(shape, int(v.grid_thw.prod())) for v in row.visuals)
    return total, len(prepared.rows)


def logits_of(reranker: RerankerModel, request: RerankInput, reuse: bool) -> torch.Tensor:
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy()), reuse_prefix=reuse)
    reranker.forward_prefix(prepared.prefix)
    return reranker.forward_rows(prepared.rows)


def parity(reranker: RerankerModel, request: RerankInput, compiled: bool) -> dict:
    """Largest score and logit differences of prefix reuse, of batching against one pair per forward
    and, when the layers are compiled, of the compiled layers against transformers' eager ones."""
    full = logits_of(reranker, request, reuse=False)
    reused = logits_of(reranker, request, reuse=True)
    single = torch.cat(
        [logits_of(reranker, RerankInput(request.query, (d,)), reuse=False) for d in request.documents[:20]]
    )
    result = {
        "prefix_reuse_vs_batched_max_logit_diff": float((full - reused).abs().max()),
        "prefix_reuse_vs_batched_max_score_diff": float((full.sigmoid() - reused.sigmoid()).abs().max()),
        "batched_vs_one_pair_per_forward_max_logit_diff": float((full[:20] - single).abs().max()),
        "finite": bool(torch.isfinite(full).all() and torch.isfinite(reused).all()),
    }
    if compiled:
        fused.set_enabled(False)
        eager = logits_of(reranker, request, reuse=False)
        fused.set_enabled(True)
        result["compiled_vs_eager_max_logit_diff"] = float((full - eager).abs().max())
        result["compiled_vs_eager_max_score_diff"] = float((full.sigmoid() - eager.sigmoid()).abs().max())
    return result


async def cache_parity(reranker: RerankerModel, request: RerankInput, settings: Settings) -> dict:
    """Largest logit difference between a request scored from a warm feature cache and without a cache."""
    plain = Engine(replace(settings, feature_cache_mb=0, feature_cache_host_mb=0), reranker)
    cached = Engine(settings, reranker)
    try:
        expected = (await plain.rerank(request)).logits
        await cached.rerank(request)
        warm = await cached.rerank(request)
    finally:
        plain.close()
        cached.close()
    return {
        "warm_cache_vs_no_cache_max_logit_diff": max(abs(a - b) for a, b in zip(warm.logits, expected)),
        "warm_request_feature_cache_hits": warm.timings.feature_cache_hits,
    }


def run_reference(reranker: RerankerModel, request: RerankInput) -> None:
    """The official scoring loop: every pair prepared and forwarded on its own."""
    for doc in request.documents:
        prepared = reranker.prepare(
            RerankInput(request.query, (doc,), request.instruction), MediaResolver(MediaPolicy()), reuse_prefix=False
        )
        reranker.forward_rows(prepared.rows)


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


async def measure(cases: list[Case], reranker: RerankerModel, request: RerankInput, settings: Settings) -> None:
    """Fill `cases` (variants of one workload): `clients` concurrent loops of `requests` requests each.

    With one client, the cases take turns request by request; with several, there is one case.
    """
    device = reranker.device
    engines = {
        id(c): None if c.variant == "reference" else Engine(replace(settings, prefix_reuse=c.reuses_prefix), reranker)
        for c in cases
    }
    usage: dict[int, list] = {id(c): [] for c in cases}
    walls: dict[int, float] = dict.fromkeys(usage, 0.0)

    async def one(case: Case) -> float:
        engine = engines[id(case)]
        fused.set_enabled(case.compiled_layers)
        cache = engine.feature_caches["reranker"] if engine is not None else None
        if cache is not None and not case.warm_cache:
            cache.clear()  # every picture decoded and encoded, as on its first sighting
        start = time.perf_counter()
        if engine is None:
            await asyncio.to_thread(run_reference, reranker, request)
        else:
            usage[id(case)].append((await engine.rerank(request)).timings)
        sync_device(device)
        return (time.perf_counter() - start) * 1000

    try:
        for case in cases:
            await one(case)  # warm-up (for engine-warm, this also fills the feature cache)
            usage[id(case)].clear()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss_before = rss_mb()
        if len(cases) == 1 and cases[0].clients > 1:
            case = cases[0]

            async def client() -> list[float]:
                return [await one(case) for _ in range(case.requests)]

            start = time.perf_counter()
            results = await asyncio.gather(*(client() for _ in range(case.clients)))
            walls[id(case)] = time.perf_counter() - start
            case.latencies_ms = [x for r in results for x in r]
        else:
            for _ in range(max(c.requests for c in cases)):
                for case in cases:
                    if len(case.latencies_ms) < case.requests:
                        case.latencies_ms.append(await one(case))
                        walls[id(case)] += case.latencies_ms[-1] / 1000
        rss_growth = rss_mb() - rss_before
    finally:
        for engine in engines.values():
            if engine is not None:
                engine.close()
        fused.set_enabled(True)
    for case in cases:
        case.rss_growth_mb = rss_growth
        timings = usage[id(case)]
        if timings:
            case.preprocessing_ms = statistics.mean(u.preprocessing_ms for u in timings)
            case.inference_ms = statistics.mean(u.inference_ms for u in timings)
            case.queue_ms = statistics.mean(u.queue_ms for u in timings)
            case.overlap_ms = statistics.mean(u.overlap_ms for u in timings)
            case.feature_cache_hits = statistics.mean(u.feature_cache_hits for u in timings)
        wall = walls[id(case)]
        case.pairs_per_s = case.documents * len(case.latencies_ms) / wall
        case.p50_ms = statistics.median(case.latencies_ms)
        case.p95_ms = percentile(case.latencies_ms, 95)
        case.peak_memory_mb = (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb()
        )
        case.achieved_tflops = case.flops_per_request * len(case.latencies_ms) / wall / 1e12
        case.load_average = os.getloadavg()[0]


async def memory_rounds(
    reranker: RerankerModel, request: RerankInput, settings: Settings, rounds: int
) -> dict[str, list[float]]:
    """Resident memory (MB) after each of `rounds` identical requests to one engine, and on a GPU the
    memory torch has allocated there: flat means no leak. The first rounds may grow while
    allocators, thread arenas and caches warm up; the check looks at the later ones.
    """
    engine = Engine(settings, reranker)
    fused.set_enabled(True)
    samples: dict[str, list[float]] = {"RSS": []}
    if reranker.device.type == "cuda":
        samples["GPU allocated"] = []
    try:
        for _ in range(rounds):
            await engine.rerank(request)
            gc.collect()
            samples["RSS"].append(round(rss_mb(), 1))
            if "GPU allocated" in samples:
                samples["GPU allocated"].append(round(torch.cuda.memory_allocated(reranker.device) / 2**20, 1))
    finally:
        engine.close()
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), default="cpu")
    parser.add_argument("--shape", choices=["tiny", "mini", "2b"], help="default: mini on CPU, 2b on GPU")
    parser.add_argument("--model-dir", type=Path, help="a checkpoint dir (config + processor; weights optional)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--compile-layers", default="auto", help="auto (on for CUDA), on or off: the engine's compiled decoder layers"
    )
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: the engine's auto budget")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the memory-stability rounds")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json, results.md, plot.png")
    args = parser.parse_args()

    reranker, facts = load_reranker(args.shape, args.model_dir, args.device, args.dtype, args.compile_layers)
    device, compiled = reranker.device, facts["compiled_layers"]
    shape = Shape.from_config(reranker.base.config)
    settings = Settings(max_batch_tokens=args.max_batch_tokens)
    facts.update(max_batch_tokens=batch_token_budget(settings, device), plan=args.plan)
    if device.type == "cuda":
        facts["peak_matmul_tflops"] = peak_matmul_flops(device, reranker.dtype) / 1e12
        print(f"measured {reranker.dtype} matmul peak: {facts['peak_matmul_tflops']:.0f} TFLOP/s", flush=True)

    requests: dict[tuple[str, int], RerankInput] = {}
    workloads_run = {w for w, *_ in PLANS[args.plan]}
    for workload in ("text-query/text-docs", "text+image-query/text-docs"):
        if workload in workloads_run:
            request = requests.setdefault((workload, 100), build_request(reranker, workload, 100))
            facts[f"parity {workload} K=100"] = parity(reranker, request, compiled)
            print(f"parity {workload}: {facts[f'parity {workload} K=100']}", flush=True)
    if "text-query/image-docs" in workloads_run:
        request = build_request(reranker, "text-query/image-docs", 20)
        facts["parity text-query/image-docs K=20 feature cache"] = asyncio.run(
            cache_parity(reranker, request, settings)
        )
        print(f"feature cache parity: {facts['parity text-query/image-docs K=20 feature cache']}", flush=True)

    cases: list[Case] = []
    for workload, k, variants, clients, per_client in PLANS[args.plan]:
        request = requests.setdefault((workload, k), build_request(reranker, workload, k))
        group = []
        for variant in variants:
            if variant == "engine-eager" and not compiled:
                continue
            # The reference loop is slow by design: a few requests measure it well enough.
            case = Case(workload, variant, k, clients, min(per_client, 3) if variant == "reference" else per_client)
            case.flops_per_request, _ = request_flops(
                reranker, shape, request, reuse=case.reuses_prefix, warm=case.warm_cache
            )
            group.append(case)
        asyncio.run(measure(group, reranker, request, settings))
        for case in group:
            if "peak_matmul_tflops" in facts:
                case.mfu = case.achieved_tflops / facts["peak_matmul_tflops"]
            cases.append(case)
            print(report.line(case), flush=True)

    memory = {}
    for workload in () if args.skip_memory else ("text-query/image-docs", "text-query/text-docs"):
        request = requests.setdefault((workload, 100), build_request(reranker, workload, 100))
        for kind, samples in asyncio.run(memory_rounds(reranker, request, settings, MEMORY_ROUNDS)).items():
            memory[f"{workload} K=100, {kind}"] = samples
            print(f"{kind} after each of {MEMORY_ROUNDS} {workload} K=100 requests (MB): {samples}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    facts["load_average_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    checks = report.targets(cases, device.type) + report.memory_targets(memory)
    payload = {"machine": facts, "cases": [asdict(c) for c in cases], "memory_rss_mb": memory, "targets": checks}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2))
    (args.out / "results.md").write_text(report.markdown(facts, cases, checks, memory))
    report.plot(cases, args.out / "plot.png", facts)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
