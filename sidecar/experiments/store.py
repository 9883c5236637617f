"""Where an experiment's log lives: the `EventStore` interface, and `SqliteStore`, the embedded default.

Every store (this embedded one, and the engine-backed ones in `connectors.ubi`) keeps two record sets of the
UBI shape, queries and events, and promises:

- `write(queries, events)` returns only once the records are durable (a process killed after it returns loses
  none of them); a write that raises may have written nothing or everything, never a part of one record.
- a query id is stored once: writing a query id that is already stored raises `ExperimentError` naming it, and
  the call writes nothing of its batch; an event id already stored is skipped (retries are idempotent).
- reads return what was written, queries in timestamp order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from sidecar.experiments.records import UbiEvent, UbiQuery


@runtime_checkable
class EventStore(Protocol):
    """A durable log of UBI query and event records."""

    name: str  # for messages and reports: "sqlite:PATH", "opensearch:ubi_queries", ...

    def write(self, queries: Sequence[UbiQuery], events: Sequence[UbiEvent]) -> None:
        """Store the records durably (see the module's promises)."""
        ...

    def known_queries(self, query_ids: Iterable[str]) -> dict[str, UbiQuery]:
        """The stored queries among `query_ids`, by id (unknown ids are absent)."""
        ...

    def read_queries(self, experiment: str | None = None) -> Iterator[UbiQuery]:
        """Stored queries, oldest first; only one experiment's when `experiment` is given."""
        ...

    def read_events(self, query_ids: Iterable[str] | None = None) -> Iterator[UbiEvent]:
        """Stored events, oldest first; only those on `query_ids` when given."""
        ...

    def counts(self) -> tuple[int, int]:
        """(queries, events) stored."""
        ...

    def close(self) -> None:
        """Release connections; the records stay."""
        ...
