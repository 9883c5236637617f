"""Streamed preparation: a request's first rows are scored while its later documents are still being
fetched, and the guarantees of whole-request preparation hold (errors in request order, budgets,
prefix reuse, scores); the prefixes of concurrent requests are forwarded together."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from sidecar.errors import Kind, SidecarError
from sidecar.media import MediaPolicy, MediaResolver
from sidecar.scheduler import Engine
from sidecar.settings import Settings
from sidecar.types import ItemInput, MediaRef, RerankInput
from tests.conftest import ImageServer, png_bytes
from tests.sidecar.test_parity import IMG_A, IMG_B
from tests.sidecar.test_scheduler import IMAGE_QUERY, QUERY, documents

HANG_GUARD = 60.0  # seconds: a bound that catches a hang, not a speed target


async def until(predicate, what: str) -> None:
    end = time.monotonic() + HANG_GUARD
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
def engine(reranker):
    engine = Engine(Settings(allow_private_urls=True, max_batch_tokens=512), reranker)
    yield engine
    engine.close()


def whole_request_logits(reranker, request: RerankInput) -> list[float]:
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy(allow_private_urls=True)))
    reranker.forward_prefix(prepared.prefix)
    return reranker.forward_rows(prepared.rows).tolist()


def test_the_first_rows_are_scored_while_a_later_document_is_still_being_fetched(engine, reranker):
    with ImageServer(png_bytes(90, 70, seed=60), held=True) as media:
        docs = documents(12, seed=5) + (ItemInput(text="last", images=(MediaRef(uri=f"{media.url}/late.png"),)),)
        request = RerankInput(IMAGE_QUERY, docs)

        async def main():
            task = asyncio.ensure_future(engine.rerank(request))
            await until(lambda: engine.batches_run >= 2, "the first forwards")
            assert not task.done() and media.hits == ["/late.png"]  # its picture is still being fetched
            media.release.set()
            return await task

        outcome = asyncio.run(main())
        expected = whole_request_logits(reranker, request)
    assert outcome.timings.overlap_ms > 0  # forwards ran while the request was being prepared
    assert outcome.timings.computed_tokens < outcome.timings.input_tokens  # the prefix was reused
    assert outcome.logits == pytest.approx(expected, abs=1e-5)


def test_the_error_names_the_first_failing_document_in_order_after_earlier_rows_were_scored(
    engine, reranker, monkeypatch
):
    failed: list[str] = []
    item = reranker.visual_processor.item

    def recording(item_input, where, *args):
        try:
            return item(item_input, where, *args)
        except SidecarError:
            failed.append(where)
            raise

    monkeypatch.setattr(reranker.visual_processor, "item", recording)
    with ImageServer(b"not a picture", held=True) as media:
        docs = documents(10, seed=6) + (
            ItemInput(images=(MediaRef(uri=f"{media.url}/broken.png"),)),  # documents[10]: fails late
            ItemInput(text="fine"),
            ItemInput(images=(MediaRef(data=b"garbage"),)),  # documents[12]: fails at once
        )

        async def main():
            task = asyncio.ensure_future(engine.rerank(RerankInput(QUERY, docs)))
            await until(lambda: engine.batches_run >= 1 and failed == ["documents[12]"], "a forward and a failure")
            media.release.set()
            with pytest.raises(SidecarError) as info:
                await task
            return info.value

        error = asyncio.run(main())
    assert failed == ["documents[12]", "documents[10]"]  # documents[12] failed first, in time
    assert error.kind is Kind.VALIDATION and error.message.startswith("documents[10].images[0]:")
    assert len(asyncio.run(engine.rerank(RerankInput(QUERY, documents(3)))).logits) == 3  # still serving


def test_a_request_passing_its_token_budget_midway_is_refused(reranker):
    engine = Engine(Settings(max_request_tokens=900, max_batch_tokens=256), reranker)
    try:
        with pytest.raises(SidecarError, match="--max-request-tokens") as info:
            asyncio.run(engine.rerank(RerankInput(QUERY, documents(60, seed=7))))
        assert info.value.kind is Kind.TOO_LARGE
        assert len(asyncio.run(engine.rerank(RerankInput(QUERY, documents(3)))).logits) == 3
    finally:
        engine.close()


def test_concurrent_requests_have_their_prefixes_forwarded_together(engine, reranker, monkeypatch):
    calls: list[int] = []
    gate = threading.Event()
    forward_prefixes, forward_rows = reranker.forward_prefixes, reranker.forward_rows

    def counting(prefixes, cache=None):
        calls.append(len(prefixes))
        return forward_prefixes(prefixes, cache)

    def gated(rows, cache=None):  # holds the model thread while the requests below arrive
        gate.wait(HANG_GUARD)
        return forward_rows(rows, cache)

    requests = [RerankInput(ItemInput(text=q), documents(6, seed=i)) for i, q in enumerate(["red", "a blue lamp", "x"])]
    requests.append(RerankInput(IMAGE_QUERY, documents(4, seed=9)))
    sequential = [asyncio.run(engine.rerank(r)).logits for r in requests]
    monkeypatch.setattr(reranker, "forward_prefixes", counting)
    monkeypatch.setattr(reranker, "forward_rows", gated)

    async def together():
        blocker = asyncio.ensure_future(engine.rerank(RerankInput(QUERY, documents(2))))
        await until(lambda: calls, "the first request's prefix")
        tasks = [asyncio.ensure_future(engine.rerank(r)) for r in requests]
        await until(lambda: engine._model._inbox.qsize() >= 3 * len(requests), "the requests' jobs, rows and ends")
        gate.set()
        await blocker
        return await asyncio.gather(*tasks)

    concurrent = [o.logits for o in asyncio.run(together())]
    assert calls == [1, len(requests)]  # the four waiting prefixes went through one forward
    for seq, conc in zip(sequential, concurrent, strict=True):
        assert conc == pytest.approx(seq, abs=1e-5)


def test_batched_prefixes_equal_prefixes_forwarded_alone(reranker):
    """Right-padded prefixes of different lengths (one with a picture) in one forward."""
    queries = [ItemInput(text="short"), ItemInput(text="a much longer query " * 5), IMAGE_QUERY]
    plans = [
        reranker.prepare(RerankInput(q, (ItemInput(text="d", images=(MediaRef(data=IMG_A),)), ItemInput(text="e"))),
                         MediaResolver(MediaPolicy()))
        for q in queries
    ]  # fmt: skip
    reranker.forward_prefixes([p.prefix for p in plans])
    together = [p.prefix.kv for p in plans]
    for plan, kv in zip(plans, together):
        plan.prefix.kv = None
        reranker.forward_prefix(plan.prefix)
        assert len(plan.prefix.kv) == len(kv)
        for (k1, v1), (k2, v2) in zip(plan.prefix.kv, kv):
            assert k1.shape == k2.shape and k2.is_contiguous()
            assert torch.allclose(k1, k2, atol=1e-5) and torch.allclose(v1, v2, atol=1e-5)
    assert IMG_B  # the image query's picture is part of its prefix


def test_closing_the_engine_mid_preparation_stops_the_model_thread(reranker):
    """A request still being prepared when the engine closes is dropped, and the model thread ends
    without waiting out the drain."""
    engine = Engine(Settings(allow_private_urls=True, max_batch_tokens=512, drain_seconds=HANG_GUARD), reranker)
    with ImageServer(png_bytes(90, 70, seed=61), held=True) as media:
        docs = documents(10, seed=8) + (ItemInput(images=(MediaRef(uri=f"{media.url}/late.png"),)),)

        async def main():
            task = asyncio.ensure_future(engine.rerank(RerankInput(QUERY, docs)))
            await until(lambda: engine.batches_run >= 1, "the first forward")
            closing = asyncio.ensure_future(asyncio.to_thread(engine.close))
            await asyncio.sleep(0.2)
            media.release.set()  # the last picture arrives, but the engine is closing
            started = time.monotonic()
            await closing
            with pytest.raises((SidecarError, RuntimeError)):
                await task
            return time.monotonic() - started

        took = asyncio.run(main())
    assert not engine._model._thread.is_alive()
    assert took < HANG_GUARD / 2  # not the drain's full wait
