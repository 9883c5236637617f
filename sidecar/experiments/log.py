"""`ExperimentLog`: records go to the store in batches on a background thread, off the request path.

    log = ExperimentLog(SqliteStore("experiments.db"))
    receipt = log.log_query(query)          # returns at once
    receipt.wait()                          # returns once the record is durable (raises if the write failed)
    record_event(log, "click", query_id, object_id="d3", position=2).wait()

Contract (implemented here; the HTTP face and the apps rely on it):
- `log_query(q)` / `log_events(events)` validate first (unknown query id, a hit or position the query did not
  serve, a duplicate query id, malformed fields: `ExperimentError`, nothing queued), then queue and return a
  `Receipt`. Queries still queued count as known, so an event may follow its query at once.
- the writer thread takes everything queued (up to `batch_size` records) and writes it with one
  `store.write` call; every receipt of that batch completes together (group commit). A failed write fails
  those receipts with the store's error; nothing acknowledged is ever dropped.
- `max_pending` bounds the queue: past it `log_*` raises `ExperimentLogFull` instead of growing memory.
- `flush(timeout)` waits for everything queued so far; `close()` flushes and stops the thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from sidecar.experiments.errors import ExperimentError
from sidecar.experiments.records import UbiEvent, UbiQuery, check_event_against
from sidecar.experiments.store import EventStore


class ExperimentLogFull(ExperimentError):
    """More records are waiting for the store than `max_pending`: the store is down or too slow."""


class Receipt:
    """Completes when its records are durable in the store (or their write failed)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._done = threading.Event()
        self._error: BaseException | None = None

    def _finish(self, error: BaseException | None) -> None:
        self._error = error
        self._done.set()

    def done(self) -> bool:
        """Whether the write has finished (successfully or not)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the records are durable; raise the store's error if the write failed.

        Raises:
            TimeoutError: not written within `timeout` seconds (the records stay queued).
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.count} records not yet written after {timeout}s")
        if self._error is not None:
            raise self._error


class ExperimentLog:
    """Batched, durable writes of UBI records to an `EventStore` (see the module's contract)."""

    def __init__(self, store: EventStore, *, batch_size: int = 512, max_pending: int = 100_000) -> None:
        if batch_size < 1 or max_pending < 1:
            raise ValueError("batch_size and max_pending must be at least 1")
        self.store = store
        self.batch_size, self.max_pending = batch_size, max_pending
        self._queue: deque[tuple[UbiQuery | UbiEvent, Receipt]] = deque()
        self._pending_queries: dict[str, UbiQuery] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._writing = 0
        self._thread = threading.Thread(target=self._run, name="experiment-log", daemon=True)
        self._thread.start()

    def log_query(self, query: UbiQuery) -> Receipt:
        """Queue one served list; ExperimentError if its query id is already logged or queued."""
        with self._cond:
            self._check_open(1)
            if query.query_id in self._pending_queries or self.store.known_queries([query.query_id]):
                raise ExperimentError(f"query_id {query.query_id!r} is already logged")
            receipt = Receipt(1)
            self._pending_queries[query.query_id] = query
            self._queue.append((query, receipt))
            self._cond.notify()
        return receipt

    def log_events(self, events: Sequence[UbiEvent]) -> Receipt:
        """Queue events after checking every one against its query; one bad event queues none of them."""
        events = list(events)
        if not events:
            raise ExperimentError("no events given")
        for i, event in enumerate(events):
            if not isinstance(event, UbiEvent):
                raise ExperimentError(f"events[{i}] is not a UbiEvent")
        with self._cond:
            self._check_open(len(events))
            wanted = {e.query_id for e in events} - set(self._pending_queries)
            known = {**self.store.known_queries(wanted), **self._pending_queries} if wanted else self._pending_queries
            for i, event in enumerate(events):
                query = known.get(event.query_id)
                if query is None:
                    raise ExperimentError(f"events[{i}]: query_id {event.query_id!r} is not a logged query")
                check_event_against(event, query, index=i)
            receipt = Receipt(len(events))
            self._queue.extend((event, receipt) for event in events)
            self._cond.notify()
        return receipt

    def _check_open(self, adding: int) -> None:
        if self._closed:
            raise ExperimentError("the experiment log is closed")
        if len(self._queue) + adding > self.max_pending:
            raise ExperimentLogFull(
                f"{len(self._queue)} records are waiting for {self.store.name}; at most {self.max_pending}"
            )

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                self._writing += 1
            queries = [r for r, _ in batch if isinstance(r, UbiQuery)]
            events = [r for r, _ in batch if isinstance(r, UbiEvent)]
            error: BaseException | None = None
            try:
                self.store.write(queries, events)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter of the batch
                error = exc
            with self._cond:
                for query in queries:
                    self._pending_queries.pop(query.query_id, None)
                self._writing -= 1
                self._cond.notify_all()
            for receipt in {id(r): r for _, r in batch}.values():
                receipt._finish(error)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is written (or failed)."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._queue and not self._writing, timeout):
                raise TimeoutError(f"{len(self._queue)} records still queued after {timeout}s")

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, stop the writer and close the store."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self.store.close()

    def __enter__(self) -> ExperimentLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def record_event(
    log: ExperimentLog,
    action_name: str,
    query_id: str,
    *,
    object_id: str | None = None,
    position: int | None = None,
    session_id: str | None = None,
    client_id: str | None = None,
    user_id: str | None = None,
    **fields: Any,
) -> Receipt:
    """Log one user action (impression, click, add_to_cart, purchase, ...) on a served list.

    `position` is the hit's 1-based served position (`RerankedHit.rank`). Returns at once; `.wait()` on the
    receipt returns when the event is durable. ExperimentError names a malformed field or an unknown query.
    """
    event = UbiEvent(
        action_name=action_name,
        query_id=query_id,
        object_id=None if object_id is None else str(object_id),
        position=position,
        session_id=session_id,
        client_id=client_id,
        user_id=user_id,
        **fields,
    )
    return log.log_events([event])
