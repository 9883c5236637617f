"""The experiment report: per-query outcomes or per-arm metrics, significance, power, and a plot.

Interleaving: wins, ties and losses per pair of arms (queries without clicks counted apart), a two-sided sign
test, the Wilson interval of the win rate, the queries still needed to detect `effect` at `alpha` and `power`,
and the cumulative win rate with its interval after each decided query (plot.png). A/B: per arm queries, CTR,
MRR of the first click, clicks and conversions per query, and bootstrap intervals of the differences.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sidecar.experiments.attribution import ab_metrics, events_by_query, interleaving_outcomes
from sidecar.experiments.records import UbiQuery
from sidecar.experiments.stats import bootstrap_difference, decided_queries_needed, sign_test
from sidecar.experiments.store import EventStore

RESULTS, TABLE, PLOT = "results.json", "results.md", "plot.png"


def _progress(items: Iterable[Any], total: int | None, label: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=label, unit=" queries", mininterval=0.5)


def build_report(
    store: EventStore,
    experiment: str,
    *,
    alpha: float = 0.05,
    effect: float = 0.05,
    power: float = 0.8,
    progress: bool = False,
) -> dict[str, Any]:
    """Read `experiment`'s queries and events from `store` and compute the report document."""
    queries: list[UbiQuery] = list(_progress(store.read_queries(experiment), None, "queries", progress))
    if not queries:
        raise ValueError(f"no queries of experiment {experiment!r} in {store.name}")
    events = events_by_query(store.read_events({q.query_id for q in queries}))
    designs = {q.query_attributes.get("design") for q in queries}
    if len(designs) != 1:
        raise ValueError(f"experiment {experiment!r} mixes designs {sorted(map(str, designs))}")
    design = designs.pop()
    about = {"experiment": experiment, "store": store.name, "design": design, "queries": len(queries),
             "events": sum(len(v) for v in events.values()), "alpha": alpha, "effect": effect, "power": power}  # fmt: skip
    if design == "interleave":
        return {**about, **_interleaving(queries, events, alpha, effect, power, progress)}
    return {**about, **_ab(queries, events)}


def _interleaving(queries, events, alpha, effect, power, progress) -> dict[str, Any]:
    outcomes = list(_progress(interleaving_outcomes(queries, events), len(queries), "attributing", progress))
    arms = list(dict.fromkeys(a for q in queries for a in q.query_attributes.get("arms") or ()))
    clicked = [o for o in outcomes if o.clicked]
    pairs = []
    needed_decided = decided_queries_needed(effect, alpha, power)
    for a, b in itertools.combinations(arms, 2):
        wins = sum(1 for o in clicked if o.credits.get(a, 0) > o.credits.get(b, 0))
        losses = sum(1 for o in clicked if o.credits.get(a, 0) < o.credits.get(b, 0))
        ties = len(clicked) - wins - losses
        test = sign_test(wins, losses, 1 - alpha)
        decided_share = (wins + losses) / len(outcomes)
        served_needed = math.ceil(needed_decided / decided_share) if decided_share else None
        pairs.append({
            "arms": [a, b], "wins": wins, "losses": losses, "ties": ties, "no_clicks": len(outcomes) - len(clicked),
            "win_rate": test.win_rate, "interval": [test.low, test.high], "p_value": test.p_value,
            "significant": test.p_value < alpha,
            "winner": (a if wins > losses else b) if test.p_value < alpha else None,
            "decided_queries_needed": needed_decided,
            "queries_still_needed": None if served_needed is None else max(0, served_needed - len(outcomes)),
            "significant_after": _first_significant(clicked, a, b, alpha),
            "cumulative": _cumulative(clicked, a, b, alpha),
        })  # fmt: skip
    return {"arms": arms, "pairs": pairs}


def _first_significant(outcomes, a: str, b: str, alpha: float) -> int | None:
    """Decided queries after which the sign test first fell below alpha (peeking: read with care)."""
    wins = losses = 0
    for o in outcomes:
        wins += o.credits.get(a, 0) > o.credits.get(b, 0)
        losses += o.credits.get(a, 0) < o.credits.get(b, 0)
        if wins + losses >= 5 and sign_test(wins, losses).p_value < alpha:
            return wins + losses
    return None


def _cumulative(outcomes, a: str, b: str, alpha: float, points: int = 200) -> list[list[float]]:
    """[decided queries, win rate of a, interval low, high] at up to `points` steps."""
    decided = [
        o.credits.get(a, 0) > o.credits.get(b, 0) for o in outcomes if o.credits.get(a, 0) != o.credits.get(b, 0)
    ]
    step = max(1, len(decided) // points)
    series = []
    wins = 0
    for n, won in enumerate(decided, start=1):
        wins += won
        if n % step == 0 or n == len(decided):
            test = sign_test(wins, n - wins, 1 - alpha)
            series.append([n, test.win_rate, test.low, test.high])
    return series


def _ab(queries, events) -> dict[str, Any]:
    metrics = ab_metrics(queries, events)
    arms = list(metrics)
    table = {
        arm: {"queries": m.queries, "ctr": m.ctr, "mrr": m.mrr, "clicks": m.clicks, "conversions": m.conversions,
              "conversions_per_query": m.conversions_per_query}
        for arm, m in metrics.items()
    }  # fmt: skip
    comparisons = []
    for a, b in itertools.combinations(arms, 2):
        ma, mb = metrics[a], metrics[b]
        clicks_a = [1.0 if rr > 0 else 0.0 for rr in ma.reciprocal_ranks]
        clicks_b = [1.0 if rr > 0 else 0.0 for rr in mb.reciprocal_ranks]
        ctr = bootstrap_difference(clicks_a, clicks_b)
        mrr = bootstrap_difference(ma.reciprocal_ranks, mb.reciprocal_ranks)
        comparisons.append({"arms": [a, b], "ctr_difference": list(ctr), "mrr_difference": list(mrr),
                            "significant": ctr[1] > 0 or ctr[2] < 0})  # fmt: skip
    return {"arms": arms, "per_arm": table, "comparisons": comparisons}


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown summary."""
    lines = [f"# Experiment {report['experiment']} ({report['design']})", "",
             f"{report['queries']} served lists, {report['events']} events, from {report['store']}.", ""]  # fmt: skip
    if report["design"] == "interleave":
        lines += ["| arms | wins | losses | ties | no clicks | win rate (interval) | p | verdict | queries still needed |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for p in report["pairs"]:
            a, b = p["arms"]
            verdict = f"**{p['winner']} wins**" if p["winner"] else "not different (yet)"
            still = "–" if p["queries_still_needed"] is None else str(p["queries_still_needed"])
            lines.append(
                f"| {a} vs {b} | {p['wins']} | {p['losses']} | {p['ties']} | {p['no_clicks']} | "
                f"{p['win_rate']:.3f} ({p['interval'][0]:.3f}–{p['interval'][1]:.3f}) | {p['p_value']:.4g} | "
                f"{verdict} | {still} |"
            )
        lines += ["", f"Win rate = wins / (wins + losses) of the first arm; two-sided sign test at alpha "
                  f"{report['alpha']}; queries still needed to detect a win rate of {0.5 + report['effect']:.2f} "
                  f"with power {report['power']} at the current share of decided queries."]  # fmt: skip
        for p in report["pairs"]:
            if p["significant_after"]:
                lines.append(f"{p['arms'][0]} vs {p['arms'][1]}: first below alpha after {p['significant_after']} "
                             "decided queries (looking repeatedly inflates false positives: fix the size in advance).")  # fmt: skip
    else:
        lines += ["| arm | queries | CTR | MRR | clicks | conversions / query |", "|---|---|---|---|---|---|"]
        for arm, m in report["per_arm"].items():
            lines.append(f"| {arm} | {m['queries']} | {m['ctr']:.3f} | {m['mrr']:.3f} | {m['clicks']} | "
                         f"{m['conversions_per_query']:.3f} |")  # fmt: skip
        lines.append("")
        for c in report["comparisons"]:
            d, lo, hi = c["ctr_difference"]
            lines.append(f"CTR {c['arms'][0]} − {c['arms'][1]}: {d:+.3f} (95% bootstrap {lo:+.3f} to {hi:+.3f})"
                         + (" — significant" if c["significant"] else ""))  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> bool:
    """The cumulative win rate with its interval, one line per pair (interleaving); False when nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    if report["design"] == "interleave":
        for p in report["pairs"]:
            if not p["cumulative"]:
                continue
            n, rate, low, high = zip(*p["cumulative"])
            line = axes.plot(n, rate, label=f"{p['arms'][0]} vs {p['arms'][1]}")[0]
            axes.fill_between(n, low, high, alpha=0.2, color=line.get_color())
        axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        axes.set(xlabel="decided queries", ylabel="win rate of the first arm", ylim=(0, 1))
    else:
        arms = list(report["per_arm"])
        axes.bar(arms, [report["per_arm"][a]["ctr"] for a in arms])
        axes.set(ylabel="click-through rate")
    axes.set_title(f"{report['experiment']}")
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_outputs(directory: Path, report: dict[str, Any]) -> list[Path]:
    """results.json, results.md and plot.png in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULTS).write_text(json.dumps(report, indent=2) + "\n")
    (directory / TABLE).write_text(markdown(report))
    plot(report, directory / PLOT)
    return [directory / RESULTS, directory / TABLE, directory / PLOT]
