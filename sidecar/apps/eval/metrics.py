"""Ranking metrics through ir-measures, and a paired significance test through SciPy.

ir-measures computes nDCG@k, RR@k (its mean is MRR@k), R@k and P@k with trec_eval's own C code
(the pytrec-eval-terrier binding), so the numbers are the ones IR papers and leaderboards report.
A ranking is evaluated in the order given: scores handed to the library are derived from positions,
so ties in the system's own scores cannot reorder it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

from sidecar.apps.eval.runfile import Ranking

FAMILIES = ("nDCG", "MRR", "R", "P")  # display names; MRR is ir-measures' RR averaged over queries
DEFAULT_KS = (1, 3, 5, 10, 20, 100)


def metric_names(ks: Sequence[int]) -> list[str]:
    """Display names, family by family: nDCG@1, nDCG@3, ..., MRR@1, ..., P@k."""
    return [f"{family}@{k}" for family in FAMILIES for k in ks]


def _measure(name: str):
    import ir_measures

    family, _, k = name.partition("@")
    return ir_measures.parse_measure(f"{'RR' if family == 'MRR' else family}@{k}")


def per_query(
    qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Ranking], names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """{metric name: {qid: value}} for every judged query; a query without a ranking scores 0."""
    import ir_measures

    measures = {str(_measure(name)): name for name in names}
    run = {
        qid: {docid: float(len(ranking) - i) for i, (docid, _) in enumerate(ranking)}
        for qid, ranking in rankings.items()
    }
    values: dict[str, dict[str, float]] = {name: dict.fromkeys(qrels, 0.0) for name in names}
    qrels_dict = {qid: dict(docs) for qid, docs in qrels.items()}
    for metric in ir_measures.iter_calc([_measure(n) for n in names], qrels_dict, run):
        if metric.query_id in qrels:
            values[measures[str(metric.measure)]][metric.query_id] = float(metric.value)
    return values


def mean(values: Mapping[str, float]) -> float:
    """The mean over queries (0 for none)."""
    return math.fsum(values.values()) / len(values) if values else 0.0


def paired_p_value(baseline: Mapping[str, float], system: Mapping[str, float]) -> float | None:
    """Two-sided paired t-test (scipy.stats.ttest_rel) over the queries both have; None under 2 queries.

    Identical per-query values give 1.0 (no evidence of a difference).
    """
    from scipy import stats

    common = sorted(set(baseline) & set(system))
    if len(common) < 2:
        return None
    a, b = [baseline[q] for q in common], [system[q] for q in common]
    if all(x == y for x, y in zip(a, b)):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant differences: the statistic is infinite
        p_value = float(stats.ttest_rel(b, a).pvalue)
    return 0.0 if math.isnan(p_value) else p_value
