"""The engine: one model thread fed by one queue, shared by every API face.

Requests are prepared (media, tokenisation) on a small thread pool, off the event loop and in
parallel with model compute, then admitted as jobs. The model thread computes each job's query
prefix once and forms micro-batches of pairs across all waiting jobs: rows sorted by length (less
padding), the oldest job first, under a token budget. Admission is bounded: past
`max_queued_pairs` a request fails fast as OVERLOADED. A job whose deadline passed or whose caller
went away is dropped before its next micro-batch, so it stops consuming compute.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from sidecar.errors import Kind, SidecarError
from sidecar.media import MediaPolicy, MediaResolver
from sidecar.models.reranker import PairRow, PreparedRerank, RerankerModel
from sidecar.settings import Settings
from sidecar.types import RerankInput, Timings

log = logging.getLogger(__name__)


@dataclass
class RerankOutcome:
    """Per-document logits in request order, and what the request cost."""

    logits: list[float]
    timings: Timings


@dataclass
class _Job:
    prepared: PreparedRerank
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    deadline: float | None
    timings: Timings
    order: int
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    logits: list[float | None] = field(default_factory=list)
    pending: set[int] = field(default_factory=set)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def finish(self, result: RerankOutcome | None = None, error: SidecarError | None = None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(settle)


class Engine:
    """Owns the models, the preprocessing pool and the model thread."""

    def __init__(self, settings: Settings, reranker: RerankerModel | None = None) -> None:
        self.settings = settings
        self.reranker = reranker
        self.policy = MediaPolicy(
            media_root=settings.media_root,
            allow_private_urls=settings.allow_private_urls,
            connect_timeout_s=settings.fetch_connect_timeout_s,
            read_timeout_s=settings.fetch_read_timeout_s,
            max_bytes=settings.max_media_bytes,
            max_redirects=settings.max_media_redirects,
            max_pixels=settings.max_image_pixels,
        )
        self._pool = ThreadPoolExecutor(settings.preprocess_workers, thread_name_prefix="preprocess")
        self._inbox: queue.Queue[_Job | None] = queue.Queue()
        self._queued_pairs = 0
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)
        self._stopping = False
        self.batches_run = 0
        self._thread.start()

    # ---- API side (event loop) ---------------------------------------------------------------

    async def rerank(self, request: RerankInput, deadline: float | None = None) -> RerankOutcome:
        """Score every document of `request`; `deadline` is a time.monotonic() instant."""
        if self.reranker is None:
            raise SidecarError(Kind.NOT_SERVED, "this server has no reranker model loaded (start it with --model)")
        if self._stopping:
            raise SidecarError(Kind.UNAVAILABLE, "the server is shutting down")
        timings = Timings()
        if not request.documents:
            return RerankOutcome([], timings)
        self._admit(len(request.documents))
        try:
            loop = asyncio.get_running_loop()
            start = time.perf_counter()
            prepared = await loop.run_in_executor(self._pool, self._prepare, request)
            timings.preprocessing_ms = (time.perf_counter() - start) * 1000
            timings.images, timings.video_frames = prepared.images, prepared.video_frames
            timings.input_tokens = sum(r.total_tokens for r in prepared.rows)
            timings.computed_tokens = len(prepared.prefix) + sum(len(r.ids) for r in prepared.rows)
            job = _Job(prepared, loop, loop.create_future(), deadline, timings, next(self._order))
            job.logits = [None] * len(prepared.rows)
            job.pending = set(range(len(prepared.rows)))
            for row in prepared.rows:
                row.owner = job
            self._inbox.put(job)
            try:
                return await job.future
            except asyncio.CancelledError:
                job.cancelled.set()
                raise
        finally:
            with self._lock:
                self._queued_pairs -= len(request.documents)

    def _admit(self, pairs: int) -> None:
        with self._lock:
            if self._queued_pairs + pairs > self.settings.max_queued_pairs:
                raise SidecarError(
                    Kind.OVERLOADED,
                    f"server queue is full ({self._queued_pairs} pairs waiting, limit "
                    f"{self.settings.max_queued_pairs}); retry later",
                )
            self._queued_pairs += pairs

    def _prepare(self, request: RerankInput) -> PreparedRerank:
        return self.reranker.prepare(request, MediaResolver(self.policy), reuse_prefix=self.settings.prefix_reuse)

    def close(self) -> None:
        """Stop the model thread after the jobs it holds; refuse new requests."""
        self._stopping = True
        self._inbox.put(None)
        self._thread.join(timeout=self.settings.drain_seconds)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- model thread ------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        active: list[_Job] = []
        while True:
            stop = self._collect(active, block=not active)
            active[:] = [job for job in active if self._still_wanted(job)]
            if active:
                self._step(active)
            elif stop:
                return

    def _collect(self, active: list[_Job], block: bool) -> bool:
        """Move newly admitted jobs into `active`; True when a stop was requested."""
        stop = False
        try:
            item = self._inbox.get(block=block)
            while True:
                if item is None:
                    stop = True
                else:
                    active.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        return stop

    def _still_wanted(self, job: _Job) -> bool:
        if job.cancelled.is_set():
            log.info("dropping a cancelled request with %d pairs unscored", len(job.pending))
            return False
        if job.deadline is not None and time.monotonic() > job.deadline:
            job.finish(error=SidecarError(Kind.DEADLINE, f"deadline passed with {len(job.pending)} pairs unscored"))
            return False
        return True

    def _step(self, active: list[_Job]) -> None:
        rows = self._pick_rows(active)
        jobs = {id(row.owner): row.owner for row in rows}.values()
        now = time.perf_counter()
        start = now
        try:
            for job in jobs:
                if job.started is None:
                    job.started = now
                    job.timings.queue_ms = (now - job.enqueued) * 1000
                self.reranker.forward_prefix(job.prepared.prefix)
            logits = self.reranker.forward_rows(rows).tolist()
        except Exception as exc:  # a model failure fails these jobs, never the thread
            log.exception("forward pass failed")
            for job in jobs:
                job.finish(error=SidecarError(Kind.BACKEND, f"model forward failed: {type(exc).__name__}: {exc}"))
                active.remove(job)
            return
        self.batches_run += 1
        elapsed = (time.perf_counter() - start) * 1000
        for row, logit in zip(rows, logits):
            job = row.owner
            job.logits[row.doc_index] = logit
            job.pending.discard(row.doc_index)
        for job in jobs:
            job.timings.inference_ms += elapsed
            if not job.pending:
                job.prepared.prefix.kv = None
                job.finish(RerankOutcome(job.logits, job.timings))
                active.remove(job)

    def _pick_rows(self, active: list[_Job]) -> list[PairRow]:
        """A micro-batch: similar-length rows around the oldest job's shortest, under the budget."""
        candidates = sorted(
            (row for job in active for row in job.prepared.rows if row.doc_index in job.pending),
            key=lambda r: (len(r.ids), r.owner.order),
        )
        oldest = min(active, key=lambda j: j.order)
        anchor = next(i for i, r in enumerate(candidates) if r.owner is oldest)
        budget, cap = self.settings.max_batch_tokens, self.settings.max_batch_rows
        lo = hi = anchor
        width = len(candidates[anchor].ids)
        # Grow towards longer rows first (they set the padded width), then towards shorter ones.
        while hi + 1 < len(candidates) and hi - lo + 2 <= cap and (hi - lo + 2) * len(candidates[hi + 1].ids) <= budget:
            hi += 1
            width = len(candidates[hi].ids)
        while lo > 0 and hi - lo + 2 <= cap and (hi - lo + 2) * width <= budget:
            lo -= 1
        return candidates[lo : hi + 1]
