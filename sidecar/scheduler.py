"""The engine: admission, streamed preparation, and one model thread shared by every API face.

A request is admitted (bounded: past `max_queued_pairs` it fails fast as OVERLOADED, and one that
could never fit is TOO_LARGE), then prepared off the event loop on pools that are fair between
requests (`workpool.FairPool`): its media, item by item (fetch, decode, resize, patchify; a picture
the feature cache knows is not decoded), and its token ids (prompt, truncation, budgets, rows).
Preparation is streamed: as soon as the query is ready, the request becomes a job on the model
thread (`batching.ModelThread`), which computes its query prefix; then the documents are taken in
request order as their media complete, a slice at a time, and their rows join the job, so the first
micro-batches run while later documents are still being fetched and decoded. Taking documents in
order keeps errors deterministic (the first failing document in request order is the one named).
Every stage checks the request's `RequestBudget` first, so a request whose caller went away or whose
deadline passed stops consuming work.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from sidecar import metrics
from sidecar.batching import Job, ModelThread
from sidecar.budgets import PixelGate, RequestBudget
from sidecar.errors import Kind, SidecarError
from sidecar.media import MediaPolicy, MediaResolver
from sidecar.models.embedder import EmbedderModel
from sidecar.models.features import FeatureCache
from sidecar.models.pairs import Chunk, PairLimits
from sidecar.models.reranker import RerankerModel, RerankPlan
from sidecar.models.visuals import ProcessedItem, VisualProcessor
from sidecar.settings import Settings
from sidecar.types import ItemInput, RerankInput, Timings
from sidecar.workpool import FairPool

log = logging.getLogger(__name__)

# Documents per assembly slice: the first ones small, so the model starts early; later ones larger.
FIRST_SLICE, LARGEST_SLICE = 8, 128


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


def feature_cache(settings: Settings, model) -> FeatureCache | None:
    """The model's document feature cache, or None when both tiers are sized 0."""
    if model is None or settings.feature_cache_mb + settings.feature_cache_host_mb <= 0:
        return None
    return FeatureCache(
        model.device, settings.feature_cache_mb << 20, settings.feature_cache_host_mb << 20, model.feature_fingerprint()
    )


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


class Engine:
    """Owns the models, their feature caches, the preparation pools and the model thread."""

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
        self.feature_caches = {kind: feature_cache(settings, model) for kind, model in self.models.items()}
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
        self._model = ModelThread(self.models, self.feature_caches, self.max_batch_tokens, settings.max_batch_rows)
        self._queued_pairs = 0
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._stopping = False

    @property
    def batches_run(self) -> int:
        return self._model.batches_run

    @property
    def mixed_batches(self) -> int:
        """Forwards that held rows of more than one request."""
        return self._model.mixed_batches

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
        plans: list[RerankPlan] = []
        limits = PairLimits(
            max_length=reranker.max_length,
            max_pair_tokens=self.settings.max_pair_tokens,
            max_chunks=self.settings.max_chunks_per_document,
        )

        async def pieces(budget: RequestBudget, key: object, timings: Timings) -> AsyncIterator[tuple]:
            items = reranker.labelled(request)
            processed_items = self._processed(
                reranker.visual_processor, items, budget, key, timings, self.feature_caches["reranker"]
            )
            async for first, processed in processed_items:
                if not plans:  # the query: what every pair shares
                    plan = await self._assemble(
                        key,
                        budget,
                        timings,
                        reranker.begin,
                        request,
                        processed[0],
                        self.settings.prefix_reuse,
                        self.min_saved_tokens,
                        limits,
                        self.settings.max_request_tokens,
                    )
                    plans.append(plan)
                    yield plan.prepared.prefix, [], plan.prepared
                    first, processed = 1, processed[1:]
                if processed:
                    rows = await self._assemble(key, budget, timings, reranker.extend, plans[0], first - 1, processed)
                    yield None, rows, plans[0].prepared

        job = await self._submit("reranker", len(request.documents), deadline, pieces)
        logits, chunks = plans[0].prepared.per_document(job.outputs, len(request.documents))
        return RerankOutcome(logits, job.timings, chunks if request.long_documents == "chunk" else [])

    async def embed(self, inputs: tuple[ItemInput, ...], instruction: str = "", deadline: float | None = None):
        """Embed each input; returns an EmbedOutcome with vectors in input order."""
        embedder = self.require("embedding")
        if not inputs:
            return EmbedOutcome(torch.zeros(0, embedder.hidden_size), Timings())

        async def pieces(budget: RequestBudget, key: object, timings: Timings) -> AsyncIterator[tuple]:
            items = [(item, f"inputs[{i}]") for i, item in enumerate(inputs)]
            processed_items = self._processed(
                embedder.visual_processor, items, budget, key, timings, self.feature_caches["embedding"]
            )
            async for first, processed in processed_items:
                prepared = await self._assemble(key, budget, timings, embedder.assemble, processed, instruction, first)
                yield None, prepared.rows, prepared

        job = await self._submit("embedding", len(inputs), deadline, pieces)
        return EmbedOutcome(torch.stack(job.outputs), job.timings)

    async def _processed(
        self,
        processor: VisualProcessor,
        items: list[tuple[ItemInput, str]],
        budget: RequestBudget,
        key: object,
        timings: Timings,
        cache: FeatureCache | None,
    ) -> AsyncIterator[tuple[int, list[ProcessedItem]]]:
        """The items processed, in order, as slices (first position, items): the first item alone,
        then whatever run of the next items is ready, up to a slice size that grows.

        Items with media are processed on the fair media pool, concurrently; text-only items inline.
        Awaiting them in order makes the first failing item in order the one whose error is raised.
        """
        resolver = MediaResolver(self.policy, budget, self.gate)
        start = time.time_ns()
        futures: list[Future | None] = [
            self._media.submit(key, _checked, budget, processor.item, item, where, resolver, cache)
            if item.images or item.videos
            else None
            for item, where in items
        ]

        async def result(i: int) -> ProcessedItem:
            future = futures[i]
            item, where = items[i]
            return await asyncio.wrap_future(future) if future else processor.item(item, where, resolver, cache)

        position, size = 0, 1
        while position < len(items):
            first, piece = position, [await result(position)]
            position += 1
            while (
                position < len(items) and len(piece) < size and (futures[position] is None or futures[position].done())
            ):
                piece.append(await result(position))
                position += 1
            timings.images, timings.feature_cache_hits = resolver.decoded, resolver.lookups_hit
            timings.feature_cache_misses = resolver.lookups_missed
            timings.stages["media"] = (start, time.time_ns())
            yield first, piece
            size = FIRST_SLICE if size == 1 else min(2 * size, LARGEST_SLICE)

    async def _assemble(self, key: object, budget: RequestBudget, timings: Timings, fn: Callable, *args):
        """`fn(*args)` (token ids and rows) on the fair preparation pool."""
        start = time.time_ns()
        result = await asyncio.wrap_future(self._assembly.submit(key, _checked, budget, fn, *args))
        first = timings.stages.get("tokenization", (start, 0))[0]
        timings.stages["tokenization"] = (first, time.time_ns())
        return result

    async def _submit(
        self,
        kind: str,
        rows: int,
        deadline: float | None,
        pieces: Callable[[RequestBudget, object, Timings], AsyncIterator[tuple]],
    ) -> Job:
        """Admit, prepare off the event loop while the model thread scores what is ready, and wait for the result.

        `pieces` yields (prefix, rows, prepared): the job's prefix with its first piece (None
        otherwise), the next rows, and the request's preparation so far.
        """
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
        try:
            loop = asyncio.get_running_loop()
            timings = Timings()
            start = time.perf_counter()
            delivered = 0
            async for prefix, new_rows, prepared in pieces(budget, key, timings):
                if job is None:
                    job = Job(kind, prefix, loop, loop.create_future(), deadline, timings, next(self._order))
                    self._model.submit(job)
                if delivered + len(new_rows) > admitted:  # long documents became several windows each
                    self._admit(delivered + len(new_rows) - admitted)
                    admitted = delivered + len(new_rows)
                for row in new_rows:
                    row.owner = job
                delivered += len(new_rows)
                self._model.add_rows(job, new_rows)
                timings.input_tokens += sum(getattr(r, "total_tokens", len(r.ids)) for r in new_rows)
                timings.computed_tokens = getattr(prepared, "computed_tokens", 0) or timings.input_tokens
                timings.video_frames = prepared.video_frames
                if job.future.done():  # the model thread failed it: stop preparing
                    break
            timings.preprocessing_ms = (time.perf_counter() - start) * 1000
            self._model.close_job(job, time.perf_counter())
            await job.future
            return job
        except BaseException:  # a failed preparation, or the caller went away (or the drain ended): drop the job
            if job is not None:
                self._model.cancel(job)
            raise
        finally:
            budget.cancelled.set()  # whatever of this request still runs stops at its next check
            self._media.cancel(key)
            self._assembly.cancel(key)
            with self._lock:
                self._queued_pairs -= admitted
            metrics.queue_released(admitted)

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
        metrics.queue_admitted(pairs)

    def close(self) -> None:
        """Refuse new requests, stop preparation work, and stop the model thread after the jobs it holds."""
        self._stopping = True
        self._media.shutdown()
        self._assembly.shutdown()
        self._model.stop(self.settings.drain_seconds)


def _checked(budget: RequestBudget, fn: Callable, *args):
    """Run a preparation step only while its request is still wanted."""
    budget.check()
    return fn(*args)
