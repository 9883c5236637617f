"""The UBI store for the two query-DSL engines, OpenSearch and Elasticsearch: one flow, their client calls as data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from connectors.errors import EngineError
from connectors.ubi.base import EngineUbiStore
from sidecar.experiments.records import UbiEvent, UbiQuery

QUERIES, EVENTS = "ubi_queries", "ubi_events"
_KEYWORD = {"type": "keyword"}
_TIME = {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
# The UBI 1.x mappings (o19s/ubi schema; the OpenSearch UBI plugin's index mappings).
MAPPINGS = {
    QUERIES: {
        "dynamic": True,
        "properties": {
            "application": _KEYWORD, "query_id": _KEYWORD, "client_id": _KEYWORD, "user_query": _KEYWORD,
            "query_attributes": {"type": "object", "dynamic": True, "properties": {
                "experiment": _KEYWORD, "design": _KEYWORD, "method": _KEYWORD, "arm": _KEYWORD, "arms": _KEYWORD,
                "teams": _KEYWORD}},
            "object_id_field": _KEYWORD,
            "query_response_id": _KEYWORD, "query_response_hit_ids": _KEYWORD, "timestamp": _TIME,
        },
    },
    EVENTS: {
        "dynamic": True,
        "properties": {
            "application": _KEYWORD, "action_name": _KEYWORD, "client_id": _KEYWORD, "query_id": _KEYWORD,
            "session_id": _KEYWORD, "user_id": _KEYWORD, "timestamp": _TIME, "message_type": _KEYWORD,
            "message": {"type": "text"}, "event_id": _KEYWORD,
            "event_attributes": {"type": "object", "dynamic": True, "properties": {
                "object": {"type": "object", "properties": {"object_id": _KEYWORD, "object_id_field": _KEYWORD}},
                "position": {"type": "object", "properties": {"ordinal": {"type": "integer"}}},
            }},
        },
    },
}  # fmt: skip


class DslUbiStore(EngineUbiStore):
    """A `sidecar.experiments.EventStore` in `ubi_queries` / `ubi_events` of a query-DSL engine."""

    def __init__(self, client: Any, *, queries_index: str = QUERIES, events_index: str = EVENTS) -> None:
        self.client, self.queries_index, self.events_index = client, queries_index, events_index
        self.name = f"{self.product}:{queries_index},{events_index}"
        for index in (queries_index, events_index):
            self._guard(self._ensure, index, MAPPINGS[QUERIES if index == queries_index else EVENTS])

    # --- the client calls that differ between the engines ---
    def _ensure(self, index: str, mapping: dict) -> None:
        raise NotImplementedError

    def _mget(self, index: str, ids: list[str]) -> list[dict]:
        raise NotImplementedError

    def _helpers(self) -> Any:
        raise NotImplementedError

    # --- the shared flow ---
    def write(self, queries: Sequence[UbiQuery], events: Sequence[UbiEvent]) -> None:
        """Create every record (checked first: a stored query id writes nothing) and wait for the refresh."""
        self._refuse_logged(queries)
        actions = [{"_op_type": "create", "_index": self.queries_index, "_id": q.query_id, "_source": q.to_document()}
                   for q in queries]  # fmt: skip
        actions += [{"_op_type": "create", "_index": self.events_index, "_id": e.event_id, "_source": e.to_document()}
                    for e in events]  # fmt: skip
        if not actions:
            return
        _, errors = self._guard(
            self._helpers().bulk, self.client, actions, refresh="wait_for", raise_on_error=False, stats_only=False
        )
        failed = [e for e in errors if _status(e) != 409 or _index_of(e) != self.events_index]
        if failed:  # a 409 on an event is a retry already stored; anything else is a failure
            raise EngineError(
                self.product,
                "experiment log write",
                f"{len(failed)} records not written: {json.dumps(failed[0])[:500]}",
            )

    def known_queries(self, query_ids: Iterable[str]) -> dict[str, UbiQuery]:
        ids = list(dict.fromkeys(query_ids))
        found: dict[str, UbiQuery] = {}
        for start in range(0, len(ids), 500):
            for doc in self._guard(self._mget, self.queries_index, ids[start : start + 500]):
                if doc.get("found"):
                    found[doc["_id"]] = UbiQuery.from_document(doc["_source"])
        return found

    def _scan(self, index: str, query: dict) -> Iterator[dict]:
        tiebreak = "query_id" if index == self.queries_index else "event_id"  # sorting on _id is refused by ES
        body = {"query": query, "sort": [{"timestamp": "asc"}, {tiebreak: "asc"}]}
        hits = self._guard(
            lambda: list(self._helpers().scan(self.client, query=body, index=index, preserve_order=True))
        )
        return (hit["_source"] for hit in hits)

    def read_queries(self, experiment: str | None = None) -> Iterator[UbiQuery]:
        # an index the UBI plugin or a dynamic mapping made may hold the name as text with a keyword subfield
        named = [{"term": {f"query_attributes.experiment{sub}": experiment}} for sub in ("", ".keyword")]
        query = {"match_all": {}} if experiment is None else {"bool": {"should": named, "minimum_should_match": 1}}
        return (UbiQuery.from_document(doc) for doc in self._scan(self.queries_index, query))

    def read_events(self, query_ids: Iterable[str] | None = None) -> Iterator[UbiEvent]:
        if query_ids is None:
            return (UbiEvent.from_document(doc) for doc in self._scan(self.events_index, {"match_all": {}}))
        ids = list(query_ids)
        return (
            UbiEvent.from_document(doc)
            for start in range(0, len(ids), 1000)
            for doc in self._scan(self.events_index, {"terms": {"query_id": ids[start : start + 1000]}})
        )

    def counts(self) -> tuple[int, int]:
        return tuple(
            int(self._guard(self.client.count, index=i)["count"]) for i in (self.queries_index, self.events_index)
        )  # type: ignore[return-value]

    def close(self) -> None:
        self.client.close()


def _status(error: dict) -> int:
    return int(next(iter(error.values())).get("status", 0))


def _index_of(error: dict) -> str:
    return str(next(iter(error.values())).get("_index", ""))


class OpenSearchUbiStore(DslUbiStore):
    """The log in OpenSearch's UBI indexes (opensearch-py)."""

    product = "opensearch"

    def _ensure(self, index: str, mapping: dict) -> None:
        if not self.client.indices.exists(index=index):
            self.client.indices.create(index=index, body={"mappings": mapping})

    def _mget(self, index: str, ids: list[str]) -> list[dict]:
        return self.client.mget(index=index, body={"ids": ids})["docs"] if ids else []

    def _helpers(self) -> Any:
        from opensearchpy import helpers

        return helpers


class ElasticsearchUbiStore(DslUbiStore):
    """The log in Elasticsearch indexes of the UBI shape (elasticsearch-py)."""

    product = "elasticsearch"

    def _ensure(self, index: str, mapping: dict) -> None:
        if not self.client.indices.exists(index=index):
            self.client.indices.create(index=index, mappings=mapping)

    def _mget(self, index: str, ids: list[str]) -> list[dict]:
        return self.client.mget(index=index, ids=ids)["docs"] if ids else []

    def _helpers(self) -> Any:
        from elasticsearch import helpers

        return helpers
