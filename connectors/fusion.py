"""Client-side reciprocal rank fusion (RRF), for engines whose build cannot fuse ranked lists itself.

    score(d) = sum over lists L containing d of 1 / (k + rank_L(d))        (rank 1-based, k = 60)

This is the formula of Elasticsearch's `rrf` retriever, Qdrant's and Milvus' RRF rankers
(Cormack, Clarke and Büttcher, SIGIR 2009). Only ranks matter, so BM25 scores and cosine
similarities need no normalisation. Ties (equal fused scores) go to the document with the better
best rank, then to the earlier list, so the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
RRF_K = 60


@dataclass(frozen=True)
class Fused(Generic[T]):
    """One fused result: the item (from the first list holding it), its RRF score, its rank per list."""

    key: Hashable
    item: T
    score: float
    ranks: tuple[int | None, ...]


def rrf(ranked: Sequence[Sequence[tuple[Hashable, T]]], k: int = RRF_K, limit: int | None = None) -> list[Fused[T]]:
    """Fuse ranked lists of (key, item), best first, by reciprocal rank fusion.

    Args:
        ranked: one list per retriever, each best first; a key seen twice in one list counts at
            its first (best) position.
        k: the rank constant (60 in the paper and in Elasticsearch); larger k flattens the curve.
        limit: keep at most this many results (None keeps all).

    Returns:
        The union of the lists' keys, best fused score first.
    """
    if k < 1:
        raise ValueError(f"the RRF rank constant k must be at least 1; got {k}")
    ranks: dict[Hashable, list[int | None]] = {}
    items: dict[Hashable, T] = {}
    order: dict[Hashable, tuple[int, int]] = {}  # (list, position) where a key was first seen
    for which, results in enumerate(ranked):
        for position, (key, item) in enumerate(results, start=1):
            slots = ranks.setdefault(key, [None] * len(ranked))
            if slots[which] is not None:
                continue
            slots[which] = position
            items.setdefault(key, item)
            order.setdefault(key, (which, position))
    fused = [
        Fused(key, items[key], sum(1.0 / (k + r) for r in slots if r is not None), tuple(slots))
        for key, slots in ranks.items()
    ]
    fused.sort(key=lambda f: (-f.score, min(r for r in f.ranks if r is not None), order[f.key]))
    return fused[:limit] if limit is not None else fused
