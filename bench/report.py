"""Benchmark output: a console line per case, target checks, a Markdown table and a PNG plot."""

from __future__ import annotations


def line(case) -> str:
    mfu = f" mfu={case.mfu:.1%}" if case.mfu is not None else ""
    return (
        f"{case.workload:28s} K={case.documents:<5d} {case.variant:9s} clients={case.clients} "
        f"pairs/s={case.pairs_per_s:9.1f} p50={case.p50_ms:9.1f}ms p95={case.p95_ms:9.1f}ms "
        f"GFLOP/req={case.flops_per_request / 1e9:9.1f} TFLOP/s={case.achieved_tflops:6.2f}{mfu} "
        f"peak_mem={case.peak_memory_mb:8.0f}MB rss_growth={case.rss_growth_mb:+.0f}MB "
        f"pre={case.preprocessing_ms:.0f}ms infer={case.inference_ms:.0f}ms queue={case.queue_ms:.0f}ms "
        f"hidden={overlap_share(case):.0%} cache_hits={case.feature_cache_hits:.0f} load={case.load_average:.1f}"
    )


def overlap_share(case) -> float:
    """The share of the request's preprocessing during which its own forwards already ran."""
    return case.overlap_ms / case.preprocessing_ms if case.preprocessing_ms else 0.0


def _find(cases, workload, variant, k, clients=1):
    for case in cases:
        if (case.workload, case.variant, case.documents, case.clients) == (workload, variant, k, clients):
            return case
    return None


def targets(cases, device_type: str) -> list[dict]:
    """The benchmark's targets, each with the measured value and whether it was met."""
    checks: list[dict] = []

    def check(name: str, value: float | None, goal: str, met: bool | None) -> None:
        checks.append({"target": name, "measured": value, "goal": goal, "met": met})

    for workload in ("text-query/text-docs", "text+image-query/text-docs"):
        ref, batched, full = (_find(cases, workload, v, 100) for v in ("reference", "batched", "engine"))
        if ref and full:
            speedup = full.pairs_per_s / ref.pairs_per_s
            bound = ref.flops_per_request / full.flops_per_request
            check(f"{workload} K=100: (c)/(a) speedup", round(speedup, 2), f"FLOP bound {bound:.2f}x", None)
            if device_type == "cpu":
                check(
                    f"{workload} K=100: share of FLOP bound",
                    round(speedup / bound, 3),
                    ">= 0.90",
                    speedup / bound >= 0.9,
                )
            else:
                check(f"{workload} K=100: (c) >= 10x (a)", round(speedup, 2), ">= 10", speedup >= 10)
        eager = _find(cases, workload, "engine-eager", 100)
        if eager and full:
            ratio = full.pairs_per_s / eager.pairs_per_s
            check(f"{workload} K=100: compiled / eager layers", round(ratio, 2), "(c) with and without compile", None)
        if batched and full and workload.startswith("text+image") and device_type == "cpu":
            ratio = full.pairs_per_s / batched.pairs_per_s
            check(f"{workload} K=100: (c)/(b)", round(ratio, 2), ">= 2", ratio >= 2)

    def feature_cache(k: int) -> None:
        cold, warm = (_find(cases, "text-query/image-docs", v, k) for v in ("engine", "engine-warm"))
        if cold and warm:
            speedup = warm.pairs_per_s / cold.pairs_per_s
            bound = cold.flops_per_request / warm.flops_per_request
            check(f"image-docs K={k}: warm / cold feature cache", round(speedup, 2), f"FLOP bound {bound:.2f}x", None)
            if device_type == "cpu":
                share = speedup / bound
                check(
                    f"image-docs K={k}: warm cache, share of its FLOP bound", round(share, 3), ">= 0.90", share >= 0.9
                )
        for case in (cold, warm):
            if case and case.preprocessing_ms:
                check(
                    f"image-docs K={k} {case.variant}: preprocessing hidden behind its forwards",
                    round(overlap_share(case), 3),
                    f"of {case.preprocessing_ms:.0f} ms (measured)",
                    None,
                )

    def eight_clients(k: int, goal: float):
        """Aggregate pairs/s of 8 concurrent clients against one client's; the 8-client case, if measured."""
        one, many = (_find(cases, "text-query/text-docs", "engine", k, clients) for clients in (1, 8))
        if not (one and many):
            return None
        ratio = many.pairs_per_s / one.pairs_per_s
        check(f"8 clients K={k}: aggregate / one client", round(ratio, 2), f">= {goal}", ratio >= goal)
        return many

    feature_cache(100)
    if device_type == "cpu":
        many = eight_clients(100, 0.95)
        if many:
            check(
                "8 clients K=100: p95 / p50",
                round(many.p95_ms / many.p50_ms, 2),
                "<= 2",
                many.p95_ms <= 2 * many.p50_ms,
            )
    else:
        full = _find(cases, "text-query/text-docs", "engine", 100)
        if full:
            check("K=100 text: p50 latency (ms)", round(full.p50_ms, 1), "<= 250", full.p50_ms <= 250)
            check("K=100 text: model FLOP utilisation", round(full.mfu or 0, 3), ">= 0.40", (full.mfu or 0) >= 0.4)
        eight_clients(10, 1.5)
        feature_cache(200)
        for workload, k, variant, goal in (
            ("text-query/image-docs", 100, "engine", 250),
            ("text-query/image-docs", 100, "engine-warm", 150),
            ("text-query/image-docs", 200, "engine", 400),
            ("text-query/text-docs", 1000, "engine", 800),
        ):
            case = _find(cases, workload, variant, k)
            if case:
                mfu = f", MFU {case.mfu:.1%}" if case.mfu is not None else ""
                check(
                    f"{workload} K={k} {variant}: p50 (ms){mfu}",
                    round(case.p50_ms, 1),
                    f"<= {goal}",
                    case.p50_ms <= goal,
                )
        eight_clients(1000, 1.0)
    growth = max((c.rss_growth_mb for c in cases), default=0.0)
    check("RSS growth within a measured case (MB)", round(growth, 1), "(allocator and cache warm-up)", None)
    return checks


def memory_targets(memory: dict[str, list[float]]) -> list[dict]:
    """No steady growth: over the second half of identical requests, memory varies by at most 64 MB."""
    checks = []
    for name, samples in memory.items():
        later = samples[len(samples) // 2 :]
        spread = max(later) - min(later)
        checks.append(
            {
                "target": f"{name}: spread over requests {len(samples) - len(later) + 1}-{len(samples)} (MB)",
                "measured": round(spread, 1),
                "goal": "<= 64 (no steady growth)",
                "met": spread <= 64,
            }
        )
    return checks


def markdown(facts: dict, cases, checks: list[dict], memory: dict[str, list[float]] | None = None) -> str:
    out = ["# Reranking benchmark", ""]
    out += [f"- **{k}**: {v}" for k, v in facts.items()]
    out += [
        "",
        "Variants: (a) `reference` = one pair per forward as the official code; (b) `batched` = the engine "
        "without prefix reuse; (c) `engine` = batching + query-prefix reuse (+ compiled decoder layers when "
        "`compiled_layers` is true; `engine-eager` is (c) with transformers' eager layers); the engine variants "
        "empty the document feature cache before each request, except `engine-warm`, (c) with every picture "
        "already cached. `pre hidden` = the share of preprocessing during which the request's own forwards ran "
        "(streamed preparation); `load` = the machine's 1-minute load average at the end of the case.",
        "",
    ]
    out += [
        "| workload | K | variant | clients | pairs/s | p50 ms | p95 ms | GFLOP/request | TFLOP/s | MFU | peak MB "
        "| pre ms | infer ms | queue ms | pre hidden | cache hits | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        mfu = f"{c.mfu:.1%}" if c.mfu is not None else "-"
        out.append(
            f"| {c.workload} | {c.documents} | {c.variant} | {c.clients} | {c.pairs_per_s:.1f} | "
            f"{c.p50_ms:.0f} | {c.p95_ms:.0f} | {c.flops_per_request / 1e9:.1f} | {c.achieved_tflops:.3f} | "
            f"{mfu} | {c.peak_memory_mb:.0f} | {c.preprocessing_ms:.0f} | {c.inference_ms:.0f} | {c.queue_ms:.0f} "
            f"| {overlap_share(c):.0%} | {c.feature_cache_hits:.0f} | {c.load_average:.1f} |"
        )
    if memory:
        out += ["", "## Memory (MB) after each of a run of identical requests to one engine", ""]
        out += [f"- {name}: {', '.join(f'{x:.0f}' for x in samples)}" for name, samples in memory.items()]
    out += ["", "## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in checks:
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        out.append(f"| {t['target']} | {t['measured']} | {t['goal']} | {met} |")
    return "\n".join(out) + "\n"


def plot(cases, path, facts: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return
    groups = sorted({(c.workload, c.documents, c.clients) for c in cases}, key=str)
    variants = [
        v
        for v in ("reference", "batched", "engine", "engine-warm", "engine-eager")
        if any(c.variant == v for c in cases)
    ]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        values = [
            next(
                (c.pairs_per_s for c in cases if (c.workload, c.documents, c.clients) == g and c.variant == variant), 0
            )
            for g in groups
        ]
        offset = (i - (len(variants) - 1) / 2) * width
        ax.bar([x + offset for x in range(len(groups))], values, width, label=variant)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{w}\nK={k}, clients={n}" for w, k, n in groups], fontsize=7)
    ax.set_ylabel("pairs / s")
    ax.set_yscale("log")
    ax.set_title(f"{facts.get('shape')} shape, {facts.get('dtype')}, {facts.get('gpu', facts.get('cpu'))}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
