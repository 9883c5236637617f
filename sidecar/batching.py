"""The model thread: jobs in, micro-batches of rows through the models, results out.

A job is one request. It reaches the thread as soon as what all its rows share is known (a rerank
request's query prefix), and its rows follow while the request is still being prepared: the first
micro-batches run while later documents are fetched and decoded. Messages on one queue carry the
job, its rows, and the end of its rows; only this thread touches a job's row state.

Each step forwards, in one batch, the query prefixes of every job that needs one, then forms a
micro-batch around the row that has waited longest (first come, first served by the time rows were
ready, so a small request is not stuck behind the streamed rows of a large one that came first):
rows of its request sorted by length (less padding) under a token budget, joined by rows of other
requests of the same kind (pairs, or embedding inputs) when all of its own fit. A job whose
deadline passed or whose caller went away is dropped before its next micro-batch; a model failure
fails the jobs of that forward, never the thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from sidecar import metrics
from sidecar.errors import Kind, SidecarError
from sidecar.models.features import FeatureCache
from sidecar.types import Timings

log = logging.getLogger(__name__)


@dataclass(eq=False)  # jobs compare by identity
class Job:
    """One request on the model thread."""

    kind: str  # "reranker" or "embedding"
    prefix: object | None  # a rerank request's query prefix (models.reranker.Prefix)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    deadline: float | None
    timings: Timings
    order: int
    ready: float | None = None  # when its first rows arrived (time.perf_counter)
    ready_ns: int = 0
    started: float | None = None
    rows: list = field(default_factory=list)  # delivered so far; row.index is the position here
    arrivals: list[int] = field(default_factory=list)  # per row: the sequence number of its delivery
    outputs: list = field(default_factory=list)
    pending: set[int] = field(default_factory=set)  # delivered rows not scored yet
    closed: bool = False  # every row delivered
    prepared: float | None = None  # when preparation ended (time.perf_counter)
    busy: list[tuple[float, float]] = field(default_factory=list)  # forwards that held its rows
    cancelled: threading.Event = field(default_factory=threading.Event)

    def finish(self, error: SidecarError | None = None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(self)

        self.loop.call_soon_threadsafe(settle)

    def overlap_ms(self) -> float:
        """Time its own forwards ran while it was still being prepared."""
        end = self.prepared if self.prepared is not None else float("inf")
        return sum(max(0.0, min(b, end) - a) for a, b in self.busy) * 1000


class ModelThread:
    """The one thread that runs the models."""

    def __init__(
        self,
        models: dict[str, object],
        caches: dict[str, FeatureCache | None],
        max_batch_tokens: int,
        max_batch_rows: int,
    ) -> None:
        self.models, self.caches = models, caches
        self.max_batch_tokens, self.max_batch_rows = max_batch_tokens, max_batch_rows
        self._inbox: queue.Queue[tuple] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)
        self._deliveries = 0
        self.batches_run = 0
        self.mixed_batches = 0  # forwards that held rows of more than one request
        self._thread.start()

    # ---- other threads ---------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        self._inbox.put(("job", job))

    def add_rows(self, job: Job, rows: list) -> None:
        """More rows of `job`; each row's `index` is its position among the job's rows."""
        if rows:
            self._inbox.put(("rows", job, rows))

    def cancel(self, job: Job) -> None:
        """Drop `job` (its caller went away, or its preparation failed); wakes the thread if it waits."""
        job.cancelled.set()
        self._inbox.put(("cancel", job))

    def close_job(self, job: Job, prepared: float) -> None:
        """`job` has all its rows; its preparation ended at `prepared` (time.perf_counter)."""
        self._inbox.put(("close", job, prepared))

    def stop(self, timeout: float) -> None:
        """Stop after the jobs the thread holds are done (or `timeout` seconds)."""
        self._inbox.put(("stop",))
        self._thread.join(timeout=timeout)

    # ---- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        active: list[Job] = []
        stop = False  # once asked, the thread ends as soon as it holds no job
        while True:
            stop |= self._collect(active, block=not any(job.pending or _needs_prefix(job) for job in active))
            try:
                active[:] = [job for job in active if self._still_wanted(job)]
                self._finish_done(active)
                if active:
                    self._step(active)
            except Exception as exc:  # a scheduler bug must fail requests, never hang them
                log.exception("model thread error")
                for job in active:
                    job.finish(SidecarError(Kind.BACKEND, f"internal error: {type(exc).__name__}: {exc}"))
                active.clear()
            if stop and not active:
                return

    def _collect(self, active: list[Job], block: bool) -> bool:
        """Apply waiting messages; True when a stop was requested."""
        stop = False
        try:
            message = self._inbox.get(block=block)
            while True:
                stop |= self._apply(message, active)
                message = self._inbox.get_nowait()
        except queue.Empty:
            pass
        return stop

    def _apply(self, message: tuple, active: list[Job]) -> bool:
        kind, *args = message
        if kind == "stop":
            return True
        job = args[0]
        if kind == "job":
            active.append(job)
        elif kind == "rows":
            rows = args[1]
            if job.ready is None:
                job.ready, job.ready_ns = time.perf_counter(), time.time_ns()
            self._deliveries += 1
            job.rows += rows
            job.arrivals += [self._deliveries] * len(rows)
            job.outputs += [None] * len(rows)
            job.pending.update(row.index for row in rows)
        elif kind == "close":
            job.closed, job.prepared = True, args[1]
        return False  # "cancel" only wakes the thread: the job's flag is already set

    def _still_wanted(self, job: Job) -> bool:
        if job.cancelled.is_set():
            log.info("dropping a cancelled request with %d pairs unscored", len(job.pending))
            return False
        if job.deadline is not None and time.monotonic() > job.deadline:
            job.finish(SidecarError(Kind.DEADLINE, f"deadline passed with {len(job.pending)} pairs unscored"))
            return False
        return True

    def _finish_done(self, active: list[Job]) -> None:
        for job in [job for job in active if job.closed and not job.pending]:
            if job.prefix is not None:
                job.prefix.kv = None
            timings = job.timings
            timings.overlap_ms = job.overlap_ms()
            if "queue" in timings.stages:
                timings.stages["inference"] = (timings.stages["queue"][1], time.time_ns())
            job.finish()
            active.remove(job)

    def _step(self, active: list[Job]) -> None:
        self._forward_prefixes([job for job in active if _needs_prefix(job)], active)
        ready = [job for job in active if job.pending]
        if not ready:
            return
        *_, index, oldest = min(
            (job.arrivals[i], job.order, len(job.rows[i].ids), i, job) for job in ready for i in job.pending
        )
        first = oldest.rows[index]
        model = self.models[oldest.kind]
        rows = self._pick_rows([job for job in ready if job.kind == oldest.kind], first)
        jobs = list({id(row.owner): row.owner for row in rows}.values())
        start = time.perf_counter()
        for job in jobs:
            if job.started is None:  # queued: from its first rows to its first forward
                job.started = start
                job.timings.queue_ms = (start - job.ready) * 1000
                job.timings.stages["queue"] = (job.ready_ns, time.time_ns())
        try:
            outputs = model.forward_rows(rows, self.caches.get(oldest.kind))
        except Exception as exc:  # a model failure fails these jobs, never the thread
            log.exception("forward pass failed")
            self._fail(jobs, active, exc)
            return
        end = time.perf_counter()
        self.batches_run += 1
        metrics.batch_forward(oldest.kind, [len(row.ids) for row in rows])
        self.mixed_batches += len(jobs) > 1
        values = outputs.tolist() if oldest.kind == "reranker" else list(outputs)
        for row, value in zip(rows, values):
            row.owner.outputs[row.index] = value
            row.owner.pending.discard(row.index)
        for job in jobs:
            job.timings.inference_ms += (end - start) * 1000
            job.busy.append((start, end))
        self._finish_done(active)

    def _forward_prefixes(self, jobs: list[Job], active: list[Job]) -> None:
        """The prefixes of every job that needs one, in one forward (they are short: batching them
        saves one launch-bound forward per request on a GPU)."""
        if not jobs:
            return
        start = time.perf_counter()
        try:
            self.models["reranker"].forward_prefixes([job.prefix for job in jobs], self.caches.get("reranker"))
        except Exception as exc:
            log.exception("prefix forward failed")
            self._fail(jobs, active, exc)
            return
        end = time.perf_counter()
        for job in jobs:
            job.timings.inference_ms += (end - start) * 1000

    @staticmethod
    def _fail(jobs: list[Job], active: list[Job], exc: Exception) -> None:
        for job in jobs:
            job.finish(SidecarError(Kind.BACKEND, f"model forward failed: {type(exc).__name__}: {exc}"))
            active.remove(job)

    def _pick_rows(self, jobs: list[Job], first) -> list:
        """A micro-batch around `first` (the row waiting longest): similar-length rows of its request,
        under the budget; rows of other requests join only when its own waiting rows all fit. Fewer
        requests per forward means fewer prefix groups (models/fused.py) for large requests, while
        small concurrent requests still share forwards."""
        own = sorted((first.owner.rows[i] for i in first.owner.pending), key=_by_length)
        batch = self._around(own, first)
        if len(batch) == len(own) and len(jobs) > 1:
            batch = self._around(sorted((job.rows[i] for job in jobs for i in job.pending), key=_by_length), first)
        return batch

    def _around(self, candidates: list, first) -> list:
        """Rows of `candidates` (sorted by length) around `first`, longer ones first, under the budget."""
        anchor = next(i for i, r in enumerate(candidates) if r is first)
        budget, cap = self.max_batch_tokens, self.max_batch_rows
        lo = hi = anchor
        width = len(candidates[anchor].ids)
        # Grow towards longer rows first (they set the padded width), then towards shorter ones.
        while hi + 1 < len(candidates) and hi - lo + 2 <= cap and (hi - lo + 2) * len(candidates[hi + 1].ids) <= budget:
            hi += 1
            width = len(candidates[hi].ids)
        while lo > 0 and hi - lo + 2 <= cap and (hi - lo + 2) * width <= budget:
            lo -= 1
        return candidates[lo : hi + 1]


def _by_length(row) -> tuple:
    return len(row.ids), row.owner.order, row.index


def _needs_prefix(job: Job) -> bool:
    prefix = job.prefix
    return prefix is not None and len(prefix) > 0 and prefix.kv is None
