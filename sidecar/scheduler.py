"""The engine: one model thread fed by one queue, shared by every API face.

A request is admitted (bounded: past `max_queued_pairs` it fails fast as OVERLOADED, and one that
could never fit is TOO_LARGE), then prepared off the event loop in two stages on pools that are
fair between requests (`workpool.FairPool`): its media, item by item (fetch, decode, resize,
patchify), then its token ids (`assemble`: prompt, truncation, budgets, rows). Every stage checks
the request's `RequestBudget` first, so a request whose caller went away or whose deadline passed
stops consuming work. The prepared request becomes a job for the model thread, which computes
each rerank job's query prefix once and forms micro-batches of rows (pairs, or embedding inputs)
across all waiting jobs of the oldest job's kind: rows sorted by length (less padding), under a
token budget. A job whose deadline passed or whose caller went away is dropped before its next
micro-batch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import torch

from sidecar.budgets import PixelGate, RequestBudget
from sidecar.errors import Kind, SidecarError
from sidecar.media import MediaPolicy, MediaResolver
from sidecar.models.embedder import EmbedderModel, PreparedEmbed
from sidecar.models.pairs import Chunk, PairLimits
from sidecar.models.reranker import PreparedRerank, RerankerModel
from sidecar.models.visuals import ProcessedItem, VisualProcessor
from sidecar.settings import Settings
from sidecar.types import ItemInput, RerankInput, Timings
from sidecar.workpool import FairPool

log = logging.getLogger(__name__)


def min_saved_tokens(settings: Settings, device: torch.device | None) -> int:
    """Tokens a request's prefix reuse must save to be worth its separate forward.

    Auto: 0 on a CPU, where every token is compute; 2048 on CUDA, where a short batch-1 prefix
    forward is launch-bound (about 25 ms on an H100 for the 2B shape, whatever its length).
    """
    if settings.prefix_reuse_min_saved_tokens is not None:
        return settings.prefix_reuse_min_saved_tokens
    return 2048 if device is not None and device.type == "cuda" else 0


def batch_token_budget(settings: Settings, device: torch.device | None) -> int:
    """Padded tokens per micro-batch: the setting, or 16384 on CUDA and 1024 on a CPU.

    On a CPU, batches of a few pairs beat large ones: the activations of a handful of rows stay in
    cache (measured on 2 cores, "mini" shape: 27.5 pairs/s at 1024 tokens, 18.1 at 16384).
    """
    if settings.max_batch_tokens is not None:
        return settings.max_batch_tokens
    return 16384 if device is not None and device.type == "cuda" else 1024


@dataclass
class RerankOutcome:
    """Per-document logits in request order, and what the request cost."""

    logits: list[float]
    timings: Timings
    chunks: list[Chunk | None] = field(default_factory=list)  # per document: the window scored, when chunking


@dataclass
class EmbedOutcome:
    """L2-normalised vectors (N, hidden) in input order, and what the request cost."""

    vectors: torch.Tensor
    timings: Timings


@dataclass(eq=False)  # jobs compare by identity
class _Job:
    kind: str  # "reranker" or "embedding"
    prepared: PreparedRerank | PreparedEmbed
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    deadline: float | None
    timings: Timings
    order: int
    enqueued: float = field(default_factory=time.perf_counter)
    enqueued_ns: int = field(default_factory=time.time_ns)
    started: float | None = None
    outputs: list = field(default_factory=list)
    pending: set[int] = field(default_factory=set)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def finish(self, result: _Job | None = None, error: SidecarError | None = None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(settle)


class Engine:
    """Owns the models, the preparation pools and the model thread."""

    def __init__(
        self, settings: Settings, reranker: RerankerModel | None = None, embedder: EmbedderModel | None = None
    ) -> None:
        self.settings = settings
        self.reranker = reranker
        self.embedder = embedder
        self.models = {"reranker": reranker, "embedding": embedder}
        device = (reranker or embedder).device if (reranker or embedder) else None
        self.min_saved_tokens = min_saved_tokens(settings, device)
        self.max_batch_tokens = batch_token_budget(settings, device)
        self.policy = MediaPolicy(
            media_root=settings.media_root,
            allow_private_urls=settings.allow_private_urls,
            connect_timeout_s=settings.fetch_connect_timeout_s,
            read_timeout_s=settings.fetch_read_timeout_s,
            max_bytes=settings.max_media_bytes,
            max_redirects=settings.max_media_redirects,
            max_pixels=settings.max_image_pixels,
            max_frame_pixels=settings.max_frame_pixels,
            max_video_bytes=settings.max_video_bytes,
        )
        self.gate = PixelGate(settings.max_decoding_pixels)
        # Two pools: assembling a request waits on nothing, media tasks never wait on assembly.
        self._media = FairPool(settings.media_workers, "media")
        self._assembly = FairPool(settings.preprocess_workers, "preprocess")
        self._inbox: queue.Queue[_Job | None] = queue.Queue()
        self._queued_pairs = 0
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._active: dict[object, asyncio.Task] = {}  # admitted requests, by key
        self._failures: dict[object, SidecarError] = {}  # why `fail_pending` cancelled a request
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)
        self._stopping = False
        self.batches_run = 0
        self.mixed_batches = 0  # forwards that held rows of more than one request
        self._thread.start()

    # ---- API side (event loop) ---------------------------------------------------------------

    def require(self, kind: str):
        """The loaded model of `kind` ("reranker" or "embedding"), or NOT_SERVED naming the flag to load it."""
        model = self.models[kind]
        if model is None:
            flag = "--model" if kind == "reranker" else "--embedding-model"
            raise SidecarError(Kind.NOT_SERVED, f"this server has no {kind} model loaded (start it with {flag})")
        return model

    async def rerank(self, request: RerankInput, deadline: float | None = None) -> RerankOutcome:
        """Score every document of `request`; `deadline` is a time.monotonic() instant."""
        reranker = self.require("reranker")
        if not request.documents:
            return RerankOutcome([], Timings())

        async def prepare(budget: RequestBudget, key: object, timings: Timings) -> PreparedRerank:
            resolver = MediaResolver(self.policy, budget, self.gate)
            labelled = reranker.labelled(request)
            processed = await self._process(reranker.visual_processor, labelled, resolver, key, timings)
            limits = PairLimits(
                max_length=reranker.max_length,
                max_pair_tokens=self.settings.max_pair_tokens,
                max_chunks=self.settings.max_chunks_per_document,
            )
            prepared = await self._assemble(
                key,
                budget,
                timings,
                reranker.assemble,
                request,
                processed,
                self.settings.prefix_reuse,
                self.min_saved_tokens,
                limits,
                self.settings.max_request_tokens,
            )
            prepared.images = resolver.decoded
            return prepared

        job = await self._submit("reranker", len(request.documents), deadline, prepare)
        logits, chunks = job.prepared.per_document(job.outputs, len(request.documents))
        return RerankOutcome(logits, job.timings, chunks if request.long_documents == "chunk" else [])

    async def embed(self, inputs: tuple[ItemInput, ...], instruction: str = "", deadline: float | None = None):
        """Embed each input; returns an EmbedOutcome with vectors in input order."""
        embedder = self.require("embedding")
        if not inputs:
            return EmbedOutcome(torch.zeros(0, embedder.hidden_size), Timings())

        async def prepare(budget: RequestBudget, key: object, timings: Timings) -> PreparedEmbed:
            resolver = MediaResolver(self.policy, budget, self.gate)
            labelled = [(item, f"inputs[{i}]") for i, item in enumerate(inputs)]
            processed = await self._process(embedder.visual_processor, labelled, resolver, key, timings)
            prepared = await self._assemble(key, budget, timings, embedder.assemble, processed, instruction)
            prepared.images = resolver.decoded
            return prepared

        job = await self._submit("embedding", len(inputs), deadline, prepare)
        return EmbedOutcome(torch.stack(job.outputs), job.timings)

    def fail_pending(self, error: SidecarError) -> None:
        """Answer every admitted request now with `error` (call on the event loop; used at shutdown)."""
        for key, task in list(self._active.items()):
            self._failures[key] = error
            task.cancel()

    async def _process(
        self,
        processor: VisualProcessor,
        labelled: list[tuple[ItemInput, str]],
        resolver: MediaResolver,
        key: object,
        timings: Timings,
    ) -> list[ProcessedItem]:
        """Each item's media on the fair media pool (text-only items inline); the first error in order."""
        start = time.time_ns()
        futures = [
            self._media.submit(key, _checked, resolver.budget, processor.item, item, where, resolver)
            if item.images or item.videos
            else None
            for item, where in labelled
        ]
        processed = []
        for future, (item, where) in zip(futures, labelled):
            processed.append(await asyncio.wrap_future(future) if future else processor.item(item, where, resolver))
        timings.stages["media"] = (start, time.time_ns())
        return processed

    async def _assemble(self, key: object, budget: RequestBudget, timings: Timings, fn: Callable, *args):
        """`fn(*args)` (token ids and rows) on the fair preparation pool."""
        start = time.time_ns()
        result = await asyncio.wrap_future(self._assembly.submit(key, _checked, budget, fn, *args))
        timings.stages["tokenization"] = (start, time.time_ns())
        return result

    async def _submit(
        self,
        kind: str,
        rows: int,
        deadline: float | None,
        prepare: Callable[[RequestBudget, object, Timings], Awaitable[PreparedRerank | PreparedEmbed]],
    ) -> _Job:
        """Admit, prepare off the event loop, queue for the model thread, and wait for the result."""
        if self._stopping:
            raise SidecarError(Kind.UNAVAILABLE, "the server is shutting down")
        self._admit(rows)
        key, job, admitted = object(), None, rows
        settings = self.settings
        budget = RequestBudget(
            max_pixels=settings.max_request_pixels,
            max_tokens=settings.max_request_tokens,
            max_pair_tokens=settings.max_pair_tokens,
            deadline=deadline,
        )
        task = asyncio.current_task()
        if task is not None:
            self._active[key] = task
        try:
            loop = asyncio.get_running_loop()
            timings = Timings()
            start = time.perf_counter()
            prepared = await prepare(budget, key, timings)
            if len(prepared.rows) > admitted:  # long documents became several windows each
                self._admit(len(prepared.rows) - admitted)
                admitted = len(prepared.rows)
            timings.preprocessing_ms = (time.perf_counter() - start) * 1000
            timings.images, timings.video_frames = prepared.images, prepared.video_frames
            timings.input_tokens = sum(getattr(r, "total_tokens", len(r.ids)) for r in prepared.rows)
            prefix = getattr(prepared, "prefix", None)
            timings.computed_tokens = (len(prefix) if prefix else 0) + sum(len(r.ids) for r in prepared.rows)
            job = _Job(kind, prepared, loop, loop.create_future(), deadline, timings, next(self._order))
            job.outputs = [None] * len(prepared.rows)
            job.pending = set(range(len(prepared.rows)))
            for row in prepared.rows:
                row.owner = job
            self._inbox.put(job)
            await job.future
            return job
        except asyncio.CancelledError:
            if job is not None:
                job.cancelled.set()
            failure = self._failures.pop(key, None)
            if failure is None:
                raise
            task.uncancel()
            raise failure from None
        finally:
            budget.cancelled.set()  # whatever of this request still runs stops at its next check
            self._media.cancel(key)
            self._assembly.cancel(key)
            self._active.pop(key, None)
            self._failures.pop(key, None)
            with self._lock:
                self._queued_pairs -= admitted

    def _admit(self, pairs: int) -> None:
        limit = self.settings.max_queued_pairs
        if pairs > limit:
            raise SidecarError(
                Kind.TOO_LARGE,
                f"the request has {pairs} query-document pairs, more than this server ever admits at once ({limit}, "
                "--max-queued-pairs); split it into smaller requests",
            )
        with self._lock:
            if self._queued_pairs + pairs > limit:
                raise SidecarError(
                    Kind.OVERLOADED,
                    f"server queue is full ({self._queued_pairs} pairs waiting, limit {limit}); retry later",
                )
            self._queued_pairs += pairs

    def close(self) -> None:
        """Refuse new requests, stop preparation work, and stop the model thread after the jobs it holds."""
        self._stopping = True
        self._media.shutdown()
        self._assembly.shutdown()
        self._inbox.put(None)
        self._thread.join(timeout=self.settings.drain_seconds)

    # ---- model thread ------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        active: list[_Job] = []
        while True:
            stop = self._collect(active, block=not active)
            try:
                active[:] = [job for job in active if self._still_wanted(job)]
                if active:
                    self._step(active)
            except Exception as exc:  # a scheduler bug must fail requests, never hang them
                log.exception("model thread error")
                for job in active:
                    job.finish(error=SidecarError(Kind.BACKEND, f"internal error: {type(exc).__name__}: {exc}"))
                active.clear()
            if stop and not active:
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
        oldest = min(active, key=lambda j: j.order)
        same_kind = [job for job in active if job.kind == oldest.kind]
        model = self.models[oldest.kind]
        rows = self._pick_rows(same_kind, oldest)
        jobs = {id(row.owner): row.owner for row in rows}.values()
        start = time.perf_counter()
        try:
            for job in jobs:
                if job.started is None:
                    job.started = start
                    job.timings.queue_ms = (start - job.enqueued) * 1000
                    job.timings.stages["queue"] = (job.enqueued_ns, time.time_ns())
                if job.kind == "reranker":
                    model.forward_prefix(job.prepared.prefix)
            outputs = model.forward_rows(rows)
        except Exception as exc:  # a model failure fails these jobs, never the thread
            log.exception("forward pass failed")
            for job in jobs:
                job.finish(error=SidecarError(Kind.BACKEND, f"model forward failed: {type(exc).__name__}: {exc}"))
                active.remove(job)
            return
        self.batches_run += 1
        self.mixed_batches += len(jobs) > 1
        elapsed = (time.perf_counter() - start) * 1000
        values = outputs.tolist() if oldest.kind == "reranker" else list(outputs)
        for row, value in zip(rows, values):
            row.owner.outputs[row.index] = value
            row.owner.pending.discard(row.index)
        for job in jobs:
            job.timings.inference_ms += elapsed
            if not job.pending:
                if job.kind == "reranker":
                    job.prepared.prefix.kv = None
                job.timings.stages["inference"] = (job.timings.stages["queue"][1], time.time_ns())
                job.finish(job)
                active.remove(job)

    def _pick_rows(self, jobs: list[_Job], oldest: _Job) -> list:
        """A micro-batch: similar-length rows around the oldest job's shortest, under the budget."""
        candidates = sorted(
            (row for job in jobs for row in job.prepared.rows if row.index in job.pending),
            key=lambda r: (len(r.ids), r.owner.order),
        )
        anchor = next(i for i, r in enumerate(candidates) if r.owner is oldest)
        budget, cap = self.max_batch_tokens, self.settings.max_batch_rows
        lo = hi = anchor
        width = len(candidates[anchor].ids)
        # Grow towards longer rows first (they set the padded width), then towards shorter ones.
        while hi + 1 < len(candidates) and hi - lo + 2 <= cap and (hi - lo + 2) * len(candidates[hi + 1].ids) <= budget:
            hi += 1
            width = len(candidates[hi].ids)
        while lo > 0 and hi - lo + 2 <= cap and (hi - lo + 2) * width <= budget:
            lo -= 1
        return candidates[lo : hi + 1]


def _checked(budget: RequestBudget, fn: Callable, *args):
    """Run a preparation step only while its request is still wanted."""
    budget.check()
    return fn(*args)
