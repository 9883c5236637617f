"""The log read back per experiment: who won each interleaved query, and each A/B arm's engagement.

Interleaving: a query's clicks (click, add_to_cart, purchase on a served hit) are credited to the arm that
contributed the clicked hit (`interleaving.credit`); the arm with more credit wins the query, equal credit is
a tie, and queries without clicks are counted apart. A/B: per arm, queries served, click-through rate
(queries with a click / queries), mean reciprocal rank of the first click (0 without one), clicks and
conversions (add_to_cart, purchase) per query.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sidecar.experiments.interleaving import Interleaved, credit, winner
from sidecar.experiments.records import CLICK_ACTIONS, CONVERSION_ACTIONS, UbiEvent, UbiQuery


@dataclass(frozen=True)
class QueryOutcome:
    """One interleaved query: credited clicks per arm and the winner (None: a tie or no clicks)."""

    query_id: str
    timestamp: str
    credits: dict[str, int]
    winner: str | None

    @property
    def clicked(self) -> bool:
        return any(self.credits.values())


@dataclass
class ArmMetrics:
    """One A/B arm's engagement."""

    queries: int = 0
    clicked_queries: int = 0
    clicks: int = 0
    conversions: int = 0
    reciprocal_ranks: list[float] = field(default_factory=list)

    @property
    def ctr(self) -> float:
        return self.clicked_queries / self.queries if self.queries else 0.0

    @property
    def mrr(self) -> float:
        return sum(self.reciprocal_ranks) / self.queries if self.queries else 0.0

    @property
    def conversions_per_query(self) -> float:
        return self.conversions / self.queries if self.queries else 0.0


def clicked_positions(query: UbiQuery, events: Iterable[UbiEvent]) -> list[int]:
    """1-based served positions clicked in `events` (by position, or by hit id when only that is given)."""
    hits = query.query_response_hit_ids
    positions = set()
    for event in events:
        if event.action_name not in CLICK_ACTIONS:
            continue
        if event.position is not None:
            positions.add(event.position)
        elif event.object_id in hits:
            positions.add(hits.index(event.object_id) + 1)
    return sorted(positions)


def events_by_query(events: Iterable[UbiEvent]) -> dict[str, list[UbiEvent]]:
    grouped: dict[str, list[UbiEvent]] = defaultdict(list)
    for event in events:
        grouped[event.query_id].append(event)
    return grouped


def interleaving_outcomes(queries: Iterable[UbiQuery], events: dict[str, list[UbiEvent]]) -> Iterator[QueryOutcome]:
    """Per interleaved query, in log order: credits per arm and the winner."""
    for query in queries:
        attributes = query.query_attributes
        if attributes.get("design") != "interleave":
            continue
        rankings = attributes.get("rankings")
        served = Interleaved(
            query.query_response_hit_ids,
            tuple(attributes.get("teams") or ()),
            attributes.get("method", "team_draft"),
            {a: tuple(r) for a, r in rankings.items()} if rankings else None,
        )
        credits = {arm: 0 for arm in attributes.get("arms") or ()}
        credits.update(credit(served, clicked_positions(query, events.get(query.query_id, ()))))
        yield QueryOutcome(query.query_id, query.timestamp, credits, winner(credits))


def ab_metrics(queries: Iterable[UbiQuery], events: dict[str, list[UbiEvent]]) -> dict[str, ArmMetrics]:
    """Per A/B arm: queries, CTR, MRR of the first click, clicks and conversions."""
    arms: dict[str, ArmMetrics] = {}
    for query in queries:
        attributes = query.query_attributes
        if attributes.get("design") != "ab":
            continue
        for name in attributes.get("arms") or ():
            arms.setdefault(name, ArmMetrics())
        metrics = arms.setdefault(attributes.get("arm", "?"), ArmMetrics())
        mine = events.get(query.query_id, [])
        positions = clicked_positions(query, mine)
        metrics.queries += 1
        metrics.clicks += len(positions)
        metrics.clicked_queries += bool(positions)
        metrics.reciprocal_ranks.append(1 / positions[0] if positions else 0.0)
        metrics.conversions += sum(1 for e in mine if e.action_name in CONVERSION_ACTIONS)
    return arms
