"""Interleaving: several arms' rankings merged into one served list, each hit credited to the arm it came from.

- team draft (Radlinski, Kurup and Joachims, CIKM 2008): in each round the arms pick in a random order, each
  taking its best hit not yet shown; with more than two arms this is team-draft multileaving (Schuth et al.).
- balanced (Joachims 2003, two arms): both rankings are walked with two pointers, the first pick chosen by a
  coin; clicks are credited by the depth at which each ranking covers the lowest click.

A click counts for the arm that contributed the clicked hit; a query goes to the arm with more credited
clicks, and equal credit is a tie. Identical arms therefore win equally often (tests/experiments prove it).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sidecar.experiments.errors import ExperimentError

METHODS = ("team_draft", "balanced")


@dataclass(frozen=True)
class Interleaved:
    """The served list: hit ids in order, and per position the arm that contributed it."""

    hit_ids: tuple[str, ...]
    teams: tuple[str, ...]
    method: str = "team_draft"
    # balanced interleaving credits by rank in each input ranking, so it keeps them
    rankings: Mapping[str, tuple[str, ...]] | None = None


def team_draft(rankings: Mapping[str, Sequence[str]], length: int, rng: random.Random) -> Interleaved:
    """Team-draft interleaving (two arms) or multileaving (more): arms take turns in a fresh random order each round."""
    arms = list(rankings)
    cursor = dict.fromkeys(arms, 0)
    shown: set[str] = set()
    hits: list[str] = []
    teams: list[str] = []
    total = len({h for r in rankings.values() for h in r})
    while len(hits) < min(length, total):
        order = arms[:]
        rng.shuffle(order)
        for arm in order:
            ranking = rankings[arm]
            while cursor[arm] < len(ranking) and ranking[cursor[arm]] in shown:
                cursor[arm] += 1
            if cursor[arm] < len(ranking) and len(hits) < length:
                hit = ranking[cursor[arm]]
                shown.add(hit)
                hits.append(hit)
                teams.append(arm)
    return Interleaved(tuple(hits), tuple(teams), "team_draft")


def balanced(rankings: Mapping[str, Sequence[str]], length: int, rng: random.Random) -> Interleaved:
    """Balanced interleaving of two rankings; `teams` names the ranking that placed each hit first."""
    if len(rankings) != 2:
        raise ExperimentError(f"balanced interleaving takes exactly two arms; got {len(rankings)}")
    (a, ra), (b, rb) = rankings.items()
    a_first = rng.random() < 0.5
    i = j = 0
    hits: list[str] = []
    teams: list[str] = []
    total = len(set(ra) | set(rb))
    while len(hits) < min(length, total) and (i < len(ra) or j < len(rb)):
        take_a = j >= len(rb) or (i < len(ra) and (i < j or (i == j and a_first)))
        hit, arm = (ra[i], a) if take_a else (rb[j], b)
        if take_a:
            i += 1
        else:
            j += 1
        if hit not in hits:
            hits.append(hit)
            teams.append(arm)
    kept = {a: tuple(ra), b: tuple(rb)}
    return Interleaved(tuple(hits), tuple(teams), "balanced", kept)


def interleave(rankings: Mapping[str, Sequence[str]], method: str, length: int, rng: random.Random) -> Interleaved:
    """Merge the arms' rankings (hit ids, best first) into at most `length` hits with `method`."""
    if method not in METHODS:
        raise ExperimentError(f"unknown interleaving method {method!r}; use one of {', '.join(METHODS)}")
    if len(rankings) < 2:
        raise ExperimentError("interleaving needs at least two arms")
    if method == "balanced":
        return balanced(rankings, length, rng)
    return team_draft(rankings, length, rng)


def credit(served: Interleaved, clicked_positions: Iterable[int]) -> dict[str, int]:
    """Clicks credited to each arm; positions are 1-based served positions (others are ignored)."""
    clicks = sorted({p for p in clicked_positions if 1 <= p <= len(served.hit_ids)})
    arms = list(dict.fromkeys(served.teams)) if served.rankings is None else list(served.rankings)
    result = dict.fromkeys(arms, 0)
    if served.method == "balanced" and served.rankings is not None and clicks:
        # each ranking's top k, k = the deepest rank at which either ranking holds the lowest click
        lowest = served.hit_ids[clicks[-1] - 1]
        k = min(r.index(lowest) + 1 for r in served.rankings.values() if lowest in r)
        for arm, ranking in served.rankings.items():
            top = set(ranking[:k])
            result[arm] = sum(1 for p in clicks if served.hit_ids[p - 1] in top)
        return result
    for p in clicks:
        result[served.teams[p - 1]] = result.get(served.teams[p - 1], 0) + 1
    return result


def winner(credits: Mapping[str, int]) -> str | None:
    """The arm with the most credited clicks; None for a tie (including no clicks)."""
    if not credits:
        return None
    best = max(credits.values())
    leaders = [arm for arm, c in credits.items() if c == best]
    return leaders[0] if len(leaders) == 1 else None
