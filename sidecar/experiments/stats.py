"""The statistics of the experiment report (scipy, imported when a function runs).

- sign test: over interleaved queries with a winner, wins of arm A ~ Binomial(n, 1/2) when the arms are equal;
  the two-sided exact binomial p-value (`scipy.stats.binomtest`) and a Wilson interval of A's win rate.
- bootstrap: a percentile interval of the difference of two arms' per-query means (A/B metrics).
- power: decided queries needed so a two-sided sign test at `alpha` detects a true win rate of 1/2 + effect
  with probability `power` (normal approximation: n = ((z_a/2 * 0.5 + z_b * sqrt(p(1-p))) / effect)^2);
  the report divides by the share of queries that had a winner so far to count served queries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SignTest:
    wins: int
    losses: int
    p_value: float
    win_rate: float
    low: float
    high: float


def sign_test(wins: int, losses: int, confidence: float = 0.95) -> SignTest:
    """Two-sided exact sign test of `wins` against `losses` (ties left out), with a Wilson interval."""
    from scipy.stats import binomtest

    n = wins + losses
    if n == 0:
        return SignTest(wins, losses, 1.0, 0.5, 0.0, 1.0)
    result = binomtest(wins, n, 0.5, alternative="two-sided")
    interval = result.proportion_ci(confidence_level=confidence, method="wilson")
    return SignTest(wins, losses, float(result.pvalue), wins / n, float(interval.low), float(interval.high))


def decided_queries_needed(effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Queries with a winner needed to detect a win rate of 0.5 + `effect` (0 < effect < 0.5)."""
    from scipy.stats import norm

    if not 0 < effect < 0.5:
        raise ValueError(f"effect must be between 0 and 0.5 (a win rate above one half); got {effect}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("alpha and power must be between 0 and 1")
    p = 0.5 + effect
    z_alpha, z_power = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return math.ceil(((z_alpha * 0.5 + z_power * math.sqrt(p * (1 - p))) / effect) ** 2)


def bootstrap_difference(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean(a) - mean(b) and its percentile bootstrap interval (`scipy.stats.bootstrap`, each arm resampled)."""
    import numpy as np
    from scipy.stats import bootstrap

    if len(a) < 2 or len(b) < 2:
        return (float(np.mean(a)) - float(np.mean(b)) if len(a) and len(b) else 0.0), -math.inf, math.inf
    result = bootstrap(
        (np.asarray(a, float), np.asarray(b, float)),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        n_resamples=resamples, confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    low, high = result.confidence_interval
    return float(np.mean(a) - np.mean(b)), float(low), float(high)
