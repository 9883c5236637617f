"""The engine: batching invariance, prefix reuse on/off, cross-request batches, admission, deadlines."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from sidecar.errors import Kind, SidecarError
from sidecar.scheduler import Engine
from sidecar.settings import Settings
from sidecar.types import ItemInput, MediaRef, RerankInput
from tests.conftest import ImageServer, png_bytes
from tests.sidecar.test_parity import IMG_A, IMG_B

WORDS = "red blue bicycle shoe lamp garden river coffee table window phone camera jacket".split()


def documents(n: int, seed: int = 0) -> tuple[ItemInput, ...]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
        images = (MediaRef(data=IMG_A if i % 2 else IMG_B),) if i % 7 == 3 else ()
        docs.append(ItemInput(text=text, images=images, id=f"d{i}"))
    return tuple(docs)


def assert_spread(logits: list[float]) -> None:
    """The comparisons below mean something only if the scores differ well beyond their tolerance."""
    assert max(logits) - min(logits) > 100 * 1e-4


def run(engine: Engine, *requests: RerankInput, deadline: float | None = None):
    async def main():
        return await asyncio.gather(*(engine.rerank(r, deadline) for r in requests))

    return asyncio.run(main())


@pytest.fixture
def make_engine(reranker):
    engines = []

    def make(**settings) -> Engine:
        engine = Engine(Settings(**settings), reranker)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


QUERY = ItemInput(text="a red bicycle in the garden")
IMAGE_QUERY = ItemInput(text="this thing", images=(MediaRef(data=IMG_B),))


@pytest.mark.parametrize("query", [QUERY, IMAGE_QUERY], ids=["text-query", "image-query"])
def test_one_request_of_50_equals_50_single_requests(make_engine, query):
    engine = make_engine(max_batch_tokens=2048)
    docs = documents(50)
    (together,) = run(engine, RerankInput(query, docs))
    singles = run(engine, *(RerankInput(query, (d,)) for d in docs))
    assert_spread(together.logits)
    for i, single in enumerate(singles):
        assert abs(together.logits[i] - single.logits[0]) < 1e-4


def test_shuffling_documents_permutes_scores(make_engine):
    engine = make_engine()
    docs = documents(30, seed=3)
    order = list(range(30))
    random.Random(5).shuffle(order)
    (plain,) = run(engine, RerankInput(QUERY, docs))
    (shuffled,) = run(engine, RerankInput(QUERY, tuple(docs[i] for i in order)))
    assert_spread(plain.logits)
    for position, original in enumerate(order):
        assert abs(shuffled.logits[position] - plain.logits[original]) < 1e-4


@pytest.mark.parametrize("query", [QUERY, IMAGE_QUERY], ids=["text-query", "image-query"])
def test_prefix_reuse_on_and_off_give_equal_scores(make_engine, query):
    docs = documents(20, seed=7)
    (on,) = run(make_engine(prefix_reuse=True, max_batch_tokens=1024), RerankInput(query, docs))
    (off,) = run(make_engine(prefix_reuse=False), RerankInput(query, docs))
    assert on.timings.computed_tokens < off.timings.computed_tokens == on.timings.input_tokens
    assert_spread(on.logits)
    for a, b in zip(on.logits, off.logits, strict=True):
        assert abs(a - b) < 1e-4


def test_concurrent_requests_share_batches_and_keep_their_scores(make_engine):
    engine = make_engine(max_batch_tokens=8192)
    requests = [
        RerankInput(ItemInput(text=q), documents(12, seed=s))
        for s, q in enumerate(["red shoe", "coffee table by the window", "camera", "a long query " * 6])
    ] + [
        RerankInput(IMAGE_QUERY, documents(5, seed=9)),
        RerankInput(ItemInput(text="red shoe"), documents(7, seed=11)),  # a second prefix of the same length
    ]
    sequential = [run(engine, r)[0].logits for r in requests]
    concurrent = [o.logits for o in run(engine, *requests)]
    assert engine.mixed_batches >= 1  # rows of several requests went through one forward
    assert_spread([logit for logits in sequential for logit in logits])
    for seq, conc in zip(sequential, concurrent, strict=True):
        for a, b in zip(seq, conc, strict=True):
            assert abs(a - b) < 1e-4


def test_full_queue_answers_overloaded_and_recovers(make_engine):
    engine = make_engine(max_queued_pairs=40)

    async def main():
        first = asyncio.ensure_future(engine.rerank(RerankInput(QUERY, documents(30))))
        await asyncio.sleep(0)
        with pytest.raises(SidecarError) as info:
            await engine.rerank(RerankInput(QUERY, documents(20)))
        assert info.value.kind is Kind.OVERLOADED
        await first
        return await engine.rerank(RerankInput(QUERY, documents(20)))

    assert len(asyncio.run(main()).logits) == 20


def test_expired_deadline_stops_the_work(make_engine):
    engine = make_engine(max_batch_tokens=64, max_batch_rows=1)  # one pair per forward
    docs = documents(60, seed=11)
    with pytest.raises(SidecarError) as info:
        run(engine, RerankInput(QUERY, docs), deadline=time.monotonic() + 0.05)
    assert info.value.kind is Kind.DEADLINE
    assert engine.batches_run < 60
    (after,) = run(engine, RerankInput(QUERY, docs[:3]))  # the engine keeps serving
    assert len(after.logits) == 3


def test_cancelled_request_frees_the_model(make_engine):
    engine = make_engine(max_batch_tokens=64, max_batch_rows=1)

    async def main():
        task = asyncio.ensure_future(engine.rerank(RerankInput(QUERY, documents(60, seed=12))))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        ran = engine.batches_run
        await asyncio.sleep(0.3)
        return ran, engine.batches_run

    ran, later = asyncio.run(main())
    assert later - ran <= 1  # at most the forward already in flight
    assert engine.batches_run < 60


def test_empty_documents_give_empty_results_without_model_work(make_engine):
    engine = make_engine()
    (outcome,) = run(engine, RerankInput(QUERY, ()))
    assert outcome.logits == [] and engine.batches_run == 0


def image_documents(n: int, seed: int, size: int = 320) -> tuple[ItemInput, ...]:
    return tuple(ItemInput(images=(MediaRef(data=png_bytes(size, size, seed=seed * 1000 + i)),)) for i in range(n))


def test_a_small_request_is_not_stuck_behind_large_ones(make_engine):
    """Preparation serves requests in turn: one image behind 2 x 30 finishes first."""
    engine = make_engine(media_workers=2, preprocess_workers=1)
    large = [RerankInput(QUERY, image_documents(30, seed)) for seed in (1, 2)]
    small = RerankInput(QUERY, image_documents(1, 3))

    async def main():
        finished: list[str] = []

        async def timed(name: str, request: RerankInput):
            await engine.rerank(request)
            finished.append(name)

        tasks = [asyncio.ensure_future(timed(f"large{i}", r)) for i, r in enumerate(large)]
        while engine._media.queued() < 40:  # both large requests have queued their images
            await asyncio.sleep(0.01)
        tasks.append(asyncio.ensure_future(timed("small", small)))
        await asyncio.gather(*tasks)
        return finished

    assert asyncio.run(main())[0] == "small"


def test_a_cancelled_request_stops_fetching_and_decoding(make_engine):
    """Its queued media tasks are dropped and running ones stop: the image server sees no more requests."""
    engine = make_engine(media_workers=2, allow_private_urls=True)
    with ImageServer(png_bytes(64, 64, seed=4), delay=0.1) as media:
        docs = tuple(ItemInput(images=(MediaRef(uri=f"{media.url}/{i}.png"),)) for i in range(60))

        async def main():
            task = asyncio.ensure_future(engine.rerank(RerankInput(QUERY, docs)))
            while len(media.hits) < 4:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            at_cancel = len(media.hits)
            await asyncio.sleep(0.6)
            return at_cancel, len(media.hits)

        at_cancel, later = asyncio.run(main())
    assert engine._media.queued() == 0
    assert later <= at_cancel + 2  # at most the fetches already running on the two workers
    (after,) = run(engine, RerankInput(QUERY, documents(3)))  # and the engine keeps serving
    assert len(after.logits) == 3
