"""The User Behavior Insights (UBI 1.x) records an experiment writes: one query record per served list, events on it.

Field names and nesting follow the UBI schema (o19s/ubi, 1.x) and OpenSearch's `ubi_queries` / `ubi_events`
indexes, so a log written here reads in OpenSearch's UBI tools and the other way round:

- query: `application`, `query_id`, `client_id`, `user_query` (required), `query_attributes` (the experiment,
  its design and, per served position, the arm that contributed the hit), `object_id_field`, `timestamp`,
  `query_response_id`, `query_response_hit_ids` (in served order).
- event: `action_name` (impression, click, add_to_cart, purchase, ...), `query_id`, `session_id`, `client_id`,
  `user_id`, `timestamp`, `message_type`, `message`, `event_attributes.object.object_id` (the hit) and
  `event_attributes.position.ordinal` (its 1-based served position).

Both records validate on construction (`ExperimentError` names the field), so a bad record never reaches a store.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sidecar.experiments.errors import ExperimentError

APPLICATION = "rerank-sidecar"
# The actions the report understands; others are stored and read back but count as nothing.
CLICK_ACTIONS = frozenset({"click", "add_to_cart", "purchase"})
CONVERSION_ACTIONS = frozenset({"add_to_cart", "purchase"})
MAX_ID_CHARS = 256


def now_timestamp() -> str:
    """The current time as UBI writes it: ISO 8601 in UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_query_id() -> str:
    """A fresh, globally unique query id."""
    return str(uuid.uuid4())


def _text(value: Any, name: str, *, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise ExperimentError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ExperimentError(f"{name} must be a string; got {type(value).__name__}")
    if len(value) > MAX_ID_CHARS and name != "user_query" and name != "message":
        raise ExperimentError(f"{name} is {len(value)} characters; at most {MAX_ID_CHARS}")
    return value


def _timestamp(value: Any, name: str) -> str:
    text = _text(value, name)
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ExperimentError(f"{name} must be an ISO 8601 time; got {text!r}") from None
    return text


@dataclass(frozen=True)
class UbiQuery:
    """One served result list (UBI `ubi_queries` document).

    `query_attributes` carries the experiment: `{"experiment": name, "design": "ab" | "interleave",
    "method": ..., "arms": [...], "arm": served arm (A/B), "teams": [arm per served position] (interleaving)}`.
    """

    query_id: str
    client_id: str
    user_query: str
    query_response_hit_ids: tuple[str, ...]
    query_attributes: Mapping[str, Any] = field(default_factory=dict)
    timestamp: str = field(default_factory=now_timestamp)
    application: str = APPLICATION
    object_id_field: str = "id"
    query_response_id: str = field(default_factory=new_query_id)

    def __post_init__(self) -> None:
        _text(self.query_id, "query_id")
        _text(self.client_id, "client_id")
        if not isinstance(self.user_query, str):
            raise ExperimentError(f"user_query must be a string; got {type(self.user_query).__name__}")
        _timestamp(self.timestamp, "timestamp")
        _text(self.application, "application")
        _text(self.object_id_field, "object_id_field")
        if not isinstance(self.query_attributes, Mapping):
            raise ExperimentError("query_attributes must be an object")
        hits = tuple(self.query_response_hit_ids)
        for i, hit in enumerate(hits):
            _text(hit, f"query_response_hit_ids[{i}]")
        if len(set(hits)) != len(hits):
            raise ExperimentError("query_response_hit_ids has a hit twice")
        teams = self.query_attributes.get("teams")
        if teams is not None and len(teams) != len(hits):
            raise ExperimentError(f"query_attributes.teams has {len(teams)} arms for {len(hits)} hits")
        object.__setattr__(self, "query_response_hit_ids", hits)
        object.__setattr__(self, "query_attributes", dict(self.query_attributes))

    @property
    def experiment(self) -> str | None:
        """The experiment this list was served for (None outside experiments)."""
        return self.query_attributes.get("experiment")

    def to_document(self) -> dict[str, Any]:
        """The record as UBI stores it (JSON-ready)."""
        return {
            "application": self.application,
            "query_id": self.query_id,
            "client_id": self.client_id,
            "user_query": self.user_query,
            "query_attributes": dict(self.query_attributes),
            "object_id_field": self.object_id_field,
            "timestamp": self.timestamp,
            "query_response_id": self.query_response_id,
            "query_response_hit_ids": list(self.query_response_hit_ids),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> UbiQuery:
        """Read a stored UBI query document (unknown keys are ignored)."""
        if not isinstance(doc, Mapping):
            raise ExperimentError("a query record must be an object")
        return cls(
            query_id=doc.get("query_id"),
            client_id=doc.get("client_id"),
            user_query=doc.get("user_query", ""),
            query_response_hit_ids=tuple(doc.get("query_response_hit_ids") or ()),
            query_attributes=doc.get("query_attributes") or {},
            timestamp=doc.get("timestamp") or now_timestamp(),
            application=doc.get("application") or APPLICATION,
            object_id_field=doc.get("object_id_field") or "id",
            query_response_id=doc.get("query_response_id") or new_query_id(),
        )


@dataclass(frozen=True)
class UbiEvent:
    """One user action on a served list (UBI `ubi_events` document).

    `object_id` and `position` (1-based) say which hit; an impression of the whole list may leave both None.
    `event_id` makes a retried write idempotent: a store keeps one event per id.
    """

    action_name: str
    query_id: str
    object_id: str | None = None
    position: int | None = None
    session_id: str | None = None
    client_id: str | None = None
    user_id: str | None = None
    timestamp: str = field(default_factory=now_timestamp)
    object_id_field: str = "id"
    message_type: str | None = None
    message: str | None = None
    event_id: str = field(default_factory=new_query_id)

    def __post_init__(self) -> None:
        _text(self.action_name, "action_name")
        _text(self.query_id, "query_id")
        _text(self.object_id, "event_attributes.object.object_id", required=False)
        if self.position is not None:
            if isinstance(self.position, bool) or not isinstance(self.position, int):
                if not (
                    isinstance(self.position, float) and math.isfinite(self.position) and self.position.is_integer()
                ):
                    raise ExperimentError("event_attributes.position.ordinal must be an integer")
                object.__setattr__(self, "position", int(self.position))
            if self.position < 1:
                raise ExperimentError(f"event_attributes.position.ordinal must be at least 1; got {self.position}")
        for name in ("session_id", "client_id", "user_id", "message_type", "message"):
            _text(getattr(self, name), name, required=False)
        _timestamp(self.timestamp, "timestamp")
        _text(self.event_id, "event_id")

    def to_document(self) -> dict[str, Any]:
        """The record as UBI stores it (JSON-ready; absent optional fields are left out)."""
        attributes: dict[str, Any] = {}
        if self.object_id is not None:
            attributes["object"] = {"object_id": self.object_id, "object_id_field": self.object_id_field}
        if self.position is not None:
            attributes["position"] = {"ordinal": self.position}
        doc = {
            "application": APPLICATION,
            "action_name": self.action_name,
            "query_id": self.query_id,
            "session_id": self.session_id,
            "client_id": self.client_id,
            "user_id": self.user_id,
            "timestamp": self.timestamp,
            "message_type": self.message_type,
            "message": self.message,
            "event_attributes": attributes,
            "event_id": self.event_id,
        }
        return {k: v for k, v in doc.items() if v is not None}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], *, index: int | None = None) -> UbiEvent:
        """Read an event document (a front end's or a store's); errors name `events[index]` when given."""
        where = "" if index is None else f"events[{index}]: "
        if not isinstance(doc, Mapping):
            raise ExperimentError(f"{where}an event must be an object")
        attributes = doc.get("event_attributes")
        attributes = {} if attributes is None else attributes
        if not isinstance(attributes, Mapping):
            raise ExperimentError(f"{where}event_attributes must be an object")
        obj = {} if attributes.get("object") is None else attributes["object"]
        position = {} if attributes.get("position") is None else attributes["position"]
        if not isinstance(obj, Mapping) or not isinstance(position, Mapping):
            raise ExperimentError(f"{where}event_attributes.object and .position must be objects")
        try:
            return cls(
                action_name=doc.get("action_name"),
                query_id=doc.get("query_id"),
                object_id=None if obj.get("object_id") is None else str(obj.get("object_id")),
                position=position.get("ordinal"),
                session_id=doc.get("session_id"),
                client_id=doc.get("client_id"),
                user_id=doc.get("user_id"),
                timestamp=doc.get("timestamp") or now_timestamp(),
                object_id_field=obj.get("object_id_field") or "id",
                message_type=doc.get("message_type"),
                message=doc.get("message"),
                event_id=doc.get("event_id") or new_query_id(),
            )
        except ExperimentError as exc:
            raise ExperimentError(f"{where}{exc}") from None


def check_event_against(event: UbiEvent, query: UbiQuery, *, index: int | None = None) -> None:
    """An event must name a hit its query served, at the position it was served (when it names either)."""
    where = "" if index is None else f"events[{index}]: "
    hits = query.query_response_hit_ids
    if event.object_id is not None and event.object_id not in hits:
        raise ExperimentError(f"{where}hit {event.object_id!r} was not served for query {event.query_id!r}")
    if event.position is not None:
        if event.position > len(hits):
            raise ExperimentError(
                f"{where}position {event.position} is past the {len(hits)} hits served for query {event.query_id!r}"
            )
        if event.object_id is not None and hits[event.position - 1] != event.object_id:
            raise ExperimentError(
                f"{where}hit {event.object_id!r} was served at position {hits.index(event.object_id) + 1}, "
                f"not {event.position}"
            )


def hit_ids(values: Sequence[Any]) -> tuple[str, ...]:
    """Hit ids as UBI keeps them: strings."""
    return tuple(str(v) for v in values)
