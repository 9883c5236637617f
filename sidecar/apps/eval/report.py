"""What an evaluation reports: metrics per first stage before and after reranking, their paired
significance, latency percentiles; as JSON, a Markdown table, TREC run files and a plot of metric by k.

`results.json` keeps per-query values, so `eval --compare` can test earlier runs against each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar.apps.eval.metrics import FAMILIES, mean, metric_names, paired_p_value, per_query
from sidecar.apps.eval.runfile import write_run
from sidecar.apps.eval.runner import Outcomes

RESULTS, TABLE, PLOT, RUNS = "results.json", "results.md", "plot.png", "runs"
STAGES = ("first_stage", "reranked")


def latency(values: Sequence[float | None]) -> dict[str, float] | None:
    """p50/p90/p95/p99/mean/max in milliseconds (numpy percentiles); None when nothing was timed."""
    import numpy as np

    timed = np.array([v for v in values if v is not None], dtype=float)
    if timed.size == 0:
        return None
    p50, p90, p95, p99 = np.percentile(timed, [50, 90, 95, 99])
    return {"p50": p50, "p90": p90, "p95": p95, "p99": p99, "mean": timed.mean(), "max": timed.max(), "n": timed.size}


def summarise(qrels: dict[str, dict[str, int]], outcomes: Outcomes, ks: Sequence[int], **about: Any) -> dict[str, Any]:
    """The results document: `about` (label, model, depth, ...) plus, per first stage and stage,
    mean metrics, per-query values and latency; reranked stages also carry delta and p-value against
    their first stage."""
    names = metric_names(ks)
    systems: dict[str, Any] = {}
    for system, by_query in outcomes.items():
        stages: dict[str, Any] = {}
        for stage in STAGES:
            rankings = {qid: getattr(o, stage) for qid, o in by_query.items()}
            values = per_query(qrels, rankings, names)
            timings = [o.first_stage_ms if stage == "first_stage" else o.rerank_ms for o in by_query.values()]
            stages[stage] = {
                "metrics": {n: mean(values[n]) for n in names},
                "per_query": values,
                "latency_ms": latency(timings),
            }
        first, reranked = stages["first_stage"], stages["reranked"]
        reranked["vs_first_stage"] = {
            n: {
                "delta": reranked["metrics"][n] - first["metrics"][n],
                "p_value": paired_p_value(first["per_query"][n], reranked["per_query"][n]),
            }
            for n in names
        }
        systems[system] = stages
    return {**about, "queries": len(qrels), "ks": list(ks), "systems": systems}


def table_columns(results: dict[str, Any], table_k: int) -> list[str]:
    """The metrics a table shows: each family at `table_k`, plus recall at the deepest k (the reranker's ceiling)."""
    columns = [f"{family}@{table_k}" for family in FAMILIES]
    deepest = max(results["ks"])
    return columns + ([f"R@{deepest}"] if deepest != table_k else [])


def _cell(value: float, versus: dict[str, Any] | None = None) -> str:
    if not versus:
        return f"{value:.4f}"
    p = versus["p_value"]
    return f"{value:.4f} ({versus['delta']:+.4f}, p={'n/a' if p is None else format(p, '.3g')})"


def _ms(stats: dict[str, float] | None) -> str:
    return "n/a" if not stats else f"{stats['p50']:.0f} / {stats['p95']:.0f} / {stats['p99']:.0f}"


def markdown(results: dict[str, Any], table_k: int = 10) -> str:
    """One row per first stage and one per its reranked list, with deltas, p-values and latency."""
    columns = table_columns(results, table_k)
    lines = [
        f"| system | {' | '.join(columns)} | latency p50 / p95 / p99 ms |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for system, stages in results["systems"].items():
        first, reranked = stages["first_stage"], stages["reranked"]
        lines.append(
            f"| {system} | {' | '.join(_cell(first['metrics'][c]) for c in columns)} | {_ms(first['latency_ms'])} |"
        )
        cells = [_cell(reranked["metrics"][c], reranked["vs_first_stage"][c]) for c in columns]
        lines.append(f"| {system} → reranked | {' | '.join(cells)} | {_ms(reranked['latency_ms'])} |")
    model = results.get("model") or {}
    served = model.get("name", "?") + (f" + adapter {model['adapter']}" if model.get("adapter") else "")
    lines += [
        "",
        f"{results['queries']} judged queries, up to {results.get('depth', '?')} candidates each, reranked by {served}. "
        "In parentheses: the change against the first stage and the two-sided paired t-test's p-value. "
        "Latency: the first stage's search (query embedding included for dense and hybrid); "
        "for reranked rows, the rerank step alone.",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Each metric family by k: the first stage dashed, its reranked list solid, one colour per first stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = results["ks"]
    figure, axes = plt.subplots(1, len(FAMILIES), figsize=(4 * len(FAMILIES), 3.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (system, stages) in enumerate(results["systems"].items()):
        colour = colours[index % len(colours)]
        for axis, family in zip(axes[0], FAMILIES):
            for stage, style, label in (("first_stage", "--", system), ("reranked", "-", f"{system} → reranked")):
                values = [stages[stage]["metrics"][f"{family}@{k}"] for k in ks]
                axis.plot(ks, values, style, marker="o", color=colour, label=label)
    for axis, family in zip(axes[0], FAMILIES):
        axis.set(title=f"{family}@k", xlabel="k", xscale="log", ylim=(0, 1.02))
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    figure.suptitle(
        f"{results.get('label', '')}: first stage (dashed) vs reranked (solid), {results['queries']} queries"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(directory: Path, results: dict[str, Any], outcomes: Outcomes, table_k: int) -> list[Path]:
    """results.json, results.md, plot.png and runs/<first stage>.<stage>.run under `directory`."""
    written = [directory / RESULTS, directory / TABLE, directory / PLOT]
    written[0].write_text(json.dumps(results, indent=1) + "\n")
    written[1].write_text(markdown(results, table_k))
    plot(results, written[2])
    for system, by_query in outcomes.items():
        for stage in STAGES:
            path = directory / RUNS / f"{system}.{stage.replace('_', '-')}.run"
            write_run(path, {qid: getattr(o, stage) for qid, o in by_query.items()}, f"{system}-{stage}")
            written.append(path)
    return written


def compare(runs: Sequence[tuple[str, dict[str, Any]]], table_k: int = 10) -> str:
    """Earlier evaluations side by side: per first stage, its first-stage row (from the first run) and
    each run's reranked row, with deltas and p-values against the first run's reranked list."""
    label0, base = runs[0]
    columns = table_columns(base, table_k)
    lines = [f"| run | system | {' | '.join(columns)} | rerank p50 / p95 / p99 ms |", "|---" * (len(columns) + 3) + "|"]
    for system, stages in base["systems"].items():
        first = stages["first_stage"]
        lines.append(f"| {label0} | {system} | {' | '.join(_cell(first['metrics'][c]) for c in columns)} | n/a |")
        reference = stages["reranked"]
        for label, results in runs:
            other = results["systems"].get(system)
            if other is None:
                lines.append(f"| {label} | {system} → reranked | {' | '.join('—' for _ in columns)} | n/a |")
                continue
            reranked = other["reranked"]
            cells = []
            for c in columns:
                versus = None
                if results is not base:
                    p = paired_p_value(reference["per_query"][c], reranked["per_query"][c])
                    versus = {"delta": reranked["metrics"][c] - reference["metrics"][c], "p_value": p}
                cells.append(_cell(reranked["metrics"][c], versus))
            lines.append(f"| {label} | {system} → reranked | {' | '.join(cells)} | {_ms(reranked['latency_ms'])} |")
    lines += [
        "",
        f"In parentheses: the change against {label0}'s reranked list and the two-sided paired t-test's p-value "
        "over the queries both runs judged.",
    ]
    return "\n".join(lines) + "\n"
