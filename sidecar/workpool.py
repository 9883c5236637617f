"""A thread pool that is fair between requests and drops the work of requests that went away.

Each request submits its tasks under its own key; workers take the next task of the next request
in turn (round robin), so a small request behind two large ones waits for a few of their tasks,
not for all of them. `cancel(key)` drops a request's queued tasks; its running tasks stop at their
next budget check (`RequestBudget.check`). Workers are daemon threads: a stopping process never
waits for preparation work.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any


class FairPool:
    """`workers` daemon threads serving per-request task queues round robin."""

    def __init__(self, workers: int, name: str) -> None:
        self._queues: OrderedDict[Hashable, deque[tuple[Future, Callable[..., Any], tuple]]] = OrderedDict()
        self._ready = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue `fn(*args)` for the request `key`; its result arrives in the returned future."""
        future: Future = Future()
        with self._ready:
            if self._stopping:
                future.set_exception(RuntimeError("the pool is shut down"))
                return future
            self._queues.setdefault(key, deque()).append((future, fn, args))
            self._ready.notify()
        return future

    def for_request(self, key: Hashable) -> RequestExecutor:
        """An executor-like view (`submit(fn, *args)`) that queues under `key`."""
        return RequestExecutor(self, key)

    def cancel(self, key: Hashable) -> None:
        """Drop the request's queued tasks (their futures are cancelled)."""
        with self._ready:
            tasks = self._queues.pop(key, ())
        for future, _, _ in tasks:
            future.cancel()

    def queued(self) -> int:
        with self._ready:
            return sum(len(q) for q in self._queues.values())

    def shutdown(self) -> None:
        """Cancel every queued task and let the workers end (running tasks finish on their own)."""
        with self._ready:
            self._stopping = True
            keys = list(self._queues)
            self._ready.notify_all()
        for key in keys:
            self.cancel(key)

    def _next(self) -> tuple[Future, Callable[..., Any], tuple] | None:
        with self._ready:
            while not self._queues and not self._stopping:
                self._ready.wait()
            if self._stopping:
                return None
            key, tasks = next(iter(self._queues.items()))
            task = tasks.popleft()
            if tasks:
                self._queues.move_to_end(key)  # the next task comes from the next request
            else:
                del self._queues[key]
            return task

    def _work(self) -> None:
        while (task := self._next()) is not None:
            future, fn, args = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # delivered to the waiting request, never kills the worker
                future.set_exception(exc)
            else:
                future.set_result(result)


class RequestExecutor:
    """The part of the `concurrent.futures.Executor` interface `VisualProcessor.items` uses."""

    def __init__(self, pool: FairPool, key: Hashable) -> None:
        self._pool, self._key = pool, key

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._pool.submit(self._key, fn, *args)
