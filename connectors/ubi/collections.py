"""UBI logs in the engines without a query DSL for them (Qdrant, Milvus, Weaviate, Solr): two collections of the
UBI shape, `ubi_queries` and `ubi_events`, one record a row.

A row holds the record's id (query id / event id), `query_id`, `experiment` (queries), `timestamp`, and `doc`,
the record's UBI document as JSON. Lookups by id and by query id or experiment run in the engine; the rows come
back in timestamp order. Each engine adapter implements five calls on one collection.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from connectors.ubi.base import EngineUbiStore
from sidecar.experiments.records import UbiEvent, UbiQuery

QUERIES, EVENTS = "ubi_queries", "ubi_events"
FIELDS = ("record_id", "query_id", "experiment", "timestamp", "doc")


def _row(record: UbiQuery | UbiEvent) -> dict[str, str]:
    rid = record.query_id if isinstance(record, UbiQuery) else record.event_id
    experiment = record.experiment if isinstance(record, UbiQuery) else ""
    return {"record_id": rid, "query_id": record.query_id, "experiment": experiment or "",
            "timestamp": record.timestamp, "doc": json.dumps(record.to_document(), separators=(",", ":"))}  # fmt: skip


class CollectionUbiStore(EngineUbiStore):
    """The shared flow; subclasses give `_ensure`, `_put`, `_get`, `_find` and `_count` for their engine."""

    def __init__(self, client: Any, *, queries: str = QUERIES, events: str = EVENTS) -> None:
        self.client, self.queries, self.events = client, queries, events
        self.name = f"{self.product}:{queries},{events}"
        for collection in (queries, events):
            self._guard(self._ensure, collection)

    def _ensure(self, collection: str) -> None:
        raise NotImplementedError

    def _put(self, collection: str, rows: list[dict[str, str]]) -> None:
        """Write rows durably (visible to reads when this returns)."""
        raise NotImplementedError

    def _get(self, collection: str, ids: list[str]) -> list[dict[str, str]]:
        raise NotImplementedError

    def _find(self, collection: str, field: str | None, values: list[str]) -> list[dict[str, str]]:
        """Rows whose `field` is one of `values` (every row when `field` is None)."""
        raise NotImplementedError

    def _count(self, collection: str) -> int:
        raise NotImplementedError

    def write(self, queries: Sequence[UbiQuery], events: Sequence[UbiEvent]) -> None:
        """Queries first (a stored query id writes nothing), then the events not stored yet."""
        self._refuse_logged(queries)
        stored = (
            {r["record_id"] for r in self._guard(self._get, self.events, [e.event_id for e in events])}
            if events
            else set()
        )
        fresh = list({e.event_id: e for e in events if e.event_id not in stored}.values())
        if queries:
            self._guard(self._put, self.queries, [_row(q) for q in queries])
        if fresh:
            self._guard(self._put, self.events, [_row(e) for e in fresh])

    def known_queries(self, query_ids: Iterable[str]) -> dict[str, UbiQuery]:
        ids = list(dict.fromkeys(query_ids))
        rows = self._guard(self._get, self.queries, ids) if ids else []
        return {r["record_id"]: UbiQuery.from_document(json.loads(r["doc"])) for r in rows}

    def read_queries(self, experiment: str | None = None) -> Iterator[UbiQuery]:
        field, values = (None, []) if experiment is None else ("experiment", [experiment])
        rows = sorted(
            self._guard(self._find, self.queries, field, values), key=lambda r: (r["timestamp"], r["record_id"])
        )
        return (UbiQuery.from_document(json.loads(r["doc"])) for r in rows)

    def read_events(self, query_ids: Iterable[str] | None = None) -> Iterator[UbiEvent]:
        if query_ids is None:
            rows = self._guard(self._find, self.events, None, [])
        else:
            ids = list(query_ids)
            rows = [
                r
                for start in range(0, len(ids), 500)
                for r in self._guard(self._find, self.events, "query_id", ids[start : start + 500])
            ]
        rows.sort(key=lambda r: (r["timestamp"], r["record_id"]))
        return (UbiEvent.from_document(json.loads(r["doc"])) for r in rows)

    def counts(self) -> tuple[int, int]:
        return self._guard(self._count, self.queries), self._guard(self._count, self.events)

    def close(self) -> None:
        """The client belongs to the caller: it stays open."""
