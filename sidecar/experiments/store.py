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

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from sidecar.experiments.errors import ExperimentError
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


def _doc(record: UbiQuery | UbiEvent) -> str:
    return json.dumps(record.to_document(), separators=(",", ":"), sort_keys=True)


class SqliteStore:
    """The embedded store: one SQLite file (WAL, synchronous=FULL), safe from several threads and processes.

    Each `write` is one transaction, so a killed process leaves whole batches or nothing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._db.executescript(_SCHEMA)

    def write(self, queries: Sequence[UbiQuery], events: Sequence[UbiEvent]) -> None:
        """Store the records in one transaction; a query id already stored raises and writes nothing."""
        ids = [q.query_id for q in queries]
        if len(set(ids)) != len(ids):
            raise ExperimentError(f"query_id {_first_repeat(ids)!r} appears twice in one batch")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                taken = self._existing(ids)
                if taken:
                    raise ExperimentError(f"query_id {sorted(taken)[0]!r} is already logged")
                self._db.executemany(
                    "INSERT INTO ubi_queries (query_id, experiment, timestamp, doc) VALUES (?, ?, ?, ?)",
                    [(q.query_id, q.experiment, q.timestamp, _doc(q)) for q in queries],
                )
                self._db.executemany(
                    "INSERT OR IGNORE INTO ubi_events (event_id, query_id, timestamp, doc) VALUES (?, ?, ?, ?)",
                    [(e.event_id, e.query_id, e.timestamp, _doc(e)) for e in events],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _existing(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT query_id FROM ubi_queries WHERE query_id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

    def known_queries(self, query_ids: Iterable[str]) -> dict[str, UbiQuery]:
        ids = list(dict.fromkeys(query_ids))
        found: dict[str, UbiQuery] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for (doc,) in self._db.execute(f"SELECT doc FROM ubi_queries WHERE query_id IN ({marks})", chunk):
                    query = UbiQuery.from_document(json.loads(doc))
                    found[query.query_id] = query
        return found

    def read_queries(self, experiment: str | None = None) -> Iterator[UbiQuery]:
        sql, args = "SELECT doc FROM ubi_queries", ()
        if experiment is not None:
            sql, args = sql + " WHERE experiment = ?", (experiment,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY timestamp, rowid", args).fetchall()
        return (UbiQuery.from_document(json.loads(doc)) for (doc,) in rows)

    def read_events(self, query_ids: Iterable[str] | None = None) -> Iterator[UbiEvent]:
        with self._lock:
            rows = self._db.execute("SELECT query_id, doc FROM ubi_events ORDER BY timestamp, rowid").fetchall()
        wanted = None if query_ids is None else set(query_ids)
        return (UbiEvent.from_document(json.loads(doc)) for qid, doc in rows if wanted is None or qid in wanted)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            queries = self._db.execute("SELECT COUNT(*) FROM ubi_queries").fetchone()[0]
            events = self._db.execute("SELECT COUNT(*) FROM ubi_events").fetchone()[0]
        return int(queries), int(events)

    def close(self) -> None:
        with self._lock:
            self._db.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ubi_queries (
    query_id TEXT PRIMARY KEY, experiment TEXT, timestamp TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ubi_queries_experiment ON ubi_queries (experiment, timestamp);
CREATE TABLE IF NOT EXISTS ubi_events (
    event_id TEXT PRIMARY KEY, query_id TEXT NOT NULL, timestamp TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ubi_events_query ON ubi_events (query_id);
"""


def _first_repeat(values: Sequence[str]) -> str:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return ""


def open_store(location: str | Path) -> EventStore:
    """A store from a location: "sqlite:PATH" or a plain file path (engine stores: `connectors.ubi`)."""
    text = str(location)
    if text.startswith("sqlite:"):
        text = text[len("sqlite:") :]
    elif "://" in text:
        raise ExperimentError(f"unknown store {text!r}: use sqlite:PATH here; engine stores are in connectors.ubi")
    if not text:
        raise ExperimentError("the store needs a file path: sqlite:PATH")
    return SqliteStore(text)
