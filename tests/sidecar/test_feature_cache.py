"""The document feature cache: a hit scores exactly like a miss, skips decoding and the vision tower,
survives evictions between preparation and forward, and keeps its tiers within their sizes."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from sidecar.budgets import RequestBudget
from sidecar.errors import Kind, SidecarError
from sidecar.media import MediaPolicy, MediaResolver
from sidecar.models import visual_inputs
from sidecar.models.features import DEVICE, HOST, FeatureCache, VisionFeatures, live_caches, totals
from sidecar.scheduler import Engine
from sidecar.settings import Settings
from sidecar.types import ItemInput, MediaRef, RerankInput
from tests.conftest import ImageServer, png_bytes
from tests.reference import reference_logit
from tests.sidecar.test_parity import IMG_A, IMG_B, pil

QUERIES = {
    "text query": ItemInput(text="a red bicycle"),
    "image query": ItemInput(text="this one", images=(MediaRef(data=IMG_B),)),
}
DOCUMENTS = tuple(
    ItemInput(text=f"product {i}", images=(MediaRef(data=png_bytes(96 + 32 * i, 64, seed=40 + i)),)) for i in range(4)
) + (ItemInput(text="two pictures", images=(MediaRef(data=IMG_A), MediaRef(data=IMG_B))), ItemInput(text="text only"))


def run(engine: Engine, request: RerankInput):
    return asyncio.run(engine.rerank(request))


@pytest.fixture
def engines(reranker):
    cached = Engine(Settings(max_batch_tokens=1024), reranker)
    plain = Engine(Settings(max_batch_tokens=1024, feature_cache_mb=0, feature_cache_host_mb=0), reranker)
    yield cached, plain
    cached.close()
    plain.close()


@pytest.fixture
def tower_calls(monkeypatch):
    """Pictures through the vision tower, per call."""
    calls: list[int] = []
    original = visual_inputs.vision_tower

    def counting(base, pixels, grids):
        calls.append(len(grids))
        return original(base, pixels, grids)

    monkeypatch.setattr(visual_inputs, "vision_tower", counting)
    return calls


@pytest.mark.parametrize("prefix_reuse", [True, False], ids=["prefix-reuse", "no-prefix-reuse"])
@pytest.mark.parametrize("query", list(QUERIES))
def test_a_warm_cache_scores_like_no_cache_and_skips_decoding_and_the_tower(reranker, query, prefix_reuse, tower_calls):
    request = RerankInput(QUERIES[query], DOCUMENTS)
    settings = Settings(max_batch_tokens=1024, prefix_reuse=prefix_reuse)
    cached, plain = Engine(settings, reranker), Engine(replace_cache(settings, 0), reranker)
    try:
        expected = run(plain, request)
        cold = run(cached, request)
        towered = sum(tower_calls)
        warm = run(cached, request)
    finally:
        cached.close()
        plain.close()
    pictures = 6  # distinct pictures (the image query's is also a document's: one lookup per request)
    assert (cold.timings.feature_cache_hits, cold.timings.feature_cache_misses) == (0, pictures)
    assert (warm.timings.feature_cache_hits, warm.timings.feature_cache_misses) == (pictures, 0)
    assert warm.timings.images == 0  # nothing decoded
    assert sum(tower_calls) == towered  # the warm request never ran the vision tower
    assert max(expected.logits) - min(expected.logits) > 100 * 1e-4
    for a, b, c in zip(expected.logits, cold.logits, warm.logits, strict=True):
        assert abs(_sigmoid(a) - _sigmoid(c)) < 1e-5 and abs(a - c) < 1e-4
        assert abs(b - c) < 1e-5


def replace_cache(settings: Settings, mb: int) -> Settings:
    import dataclasses

    return dataclasses.replace(settings, feature_cache_mb=mb, feature_cache_host_mb=mb)


def test_cached_features_match_the_reference(engines, tiny_loaded):
    """Parity with the independent reference computation, from a warm cache."""
    cached, _ = engines
    model, processor = tiny_loaded
    query, document = {"text": "what is this", "images": [IMG_B]}, {"text": "two images", "images": [IMG_A, IMG_B]}
    request = RerankInput(
        ItemInput(text=query["text"], images=(MediaRef(data=IMG_B),)),
        (ItemInput(text=document["text"], images=(MediaRef(data=IMG_A), MediaRef(data=IMG_B))),) * 2,
    )
    run(cached, request)
    warm = run(cached, request)
    assert warm.timings.feature_cache_hits == 2
    expected = reference_logit(
        model, processor, {**query, "images": [pil(IMG_B)]}, {**document, "images": [pil(IMG_A), pil(IMG_B)]}
    )
    for logit in warm.logits:
        assert abs(_sigmoid(logit) - _sigmoid(expected)) < 1e-5


def test_a_repeated_picture_is_fetched_again_but_not_decoded(engines):
    cached, _ = engines
    with ImageServer(png_bytes(100, 80, seed=50)) as media:
        request = RerankInput(ItemInput(text="q"), (ItemInput(images=(MediaRef(uri=f"{media.url}/p.png"),)),) * 2)
        engine = Engine(Settings(allow_private_urls=True), cached.reranker)
        try:
            first, second = run(engine, request), run(engine, request)
        finally:
            engine.close()
    assert len(media.hits) == 2  # fetched by each request (the bytes are what is hashed), once per request
    assert (first.timings.images, second.timings.images, second.timings.feature_cache_hits) == (1, 0, 1)
    assert first.logits == pytest.approx(second.logits, abs=1e-5)


def test_an_eviction_between_preparation_and_forward_breaks_nothing(reranker):
    """A prepared request holds its entries: evicting them from the cache frees nothing it needs."""
    tiny = FeatureCache(reranker.device, 1 << 20, 0, "test")
    request = RerankInput(ItemInput(text="q"), DOCUMENTS[:3])
    warm = reranker.prepare(request, MediaResolver(MediaPolicy()), cache=tiny)
    reranker.forward_prefix(warm.prefix, tiny)
    expected = reranker.forward_rows(warm.rows, tiny).tolist()
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy()), cache=tiny)
    assert all(v.cached is not None and v.pixel_values is None for r in prepared.rows for v in r.visuals)
    for i in range(40):  # fill the cache with other pictures (64 KiB each): the request's entries are evicted
        tiny.put(f"other/{i}", torch.tensor([1, 4, 4]), _features(4, 2048))
    assert tiny.stats().entries == {HOST: 16}
    assert all(v.cached.tier is None for r in prepared.rows for v in r.visuals)
    reranker.forward_prefix(prepared.prefix, tiny)
    assert reranker.forward_rows(prepared.rows, tiny).tolist() == pytest.approx(expected, abs=1e-5)


def test_a_hit_charges_tokens_not_pixels():
    class Known:
        tokens = 30

    data = png_bytes(2000, 2000, seed=51)  # 4 M pixels: far over this request's pixel budget
    budget = RequestBudget(max_pixels=1000, max_tokens=50)
    resolver = MediaResolver(MediaPolicy(), budget)
    picture = resolver.picture(MediaRef(data=data), "documents[0].images[0]", lambda digest: Known())
    assert picture.image is None and isinstance(picture.cached, Known) and picture.digest
    assert (budget.pixels, budget.image_tokens, resolver.decoded, resolver.lookups_hit) == (0, 30, 0, 1)
    other = png_bytes(64, 64, seed=52)
    with pytest.raises(SidecarError, match="--max-request-tokens") as info:  # 30 + 30 tokens > 50
        resolver.picture(MediaRef(data=other), "documents[1].images[0]", lambda digest: Known())
    assert info.value.kind is Kind.TOO_LARGE and info.value.message.startswith("documents[1].images[0]:")


def test_tiers_hold_their_sizes_and_evictions_move_down():
    """Two tiers on one machine: the device tier's least recent entries move to the host tier, and a
    host entry used again moves back; each tier stays within its size."""
    entry_bytes = _features(10, 100).nbytes
    cache = FeatureCache(torch.device("cpu"), 2 * entry_bytes, 3 * entry_bytes, "test", separate_tiers=True)
    entries = [cache.put(cache.key(f"k{i}"), torch.tensor([1, 4, 10]), _features(10, 100)) for i in range(6)]
    stats = cache.stats()
    assert stats.entries == {DEVICE: 2, HOST: 3} and stats.bytes == {DEVICE: 2 * entry_bytes, HOST: 3 * entry_bytes}
    assert [e.tier for e in entries] == [None, HOST, HOST, HOST, DEVICE, DEVICE]
    assert cache.lookup("k2") is entries[2] and cache.lookup("k0") is None
    cache.on_device(entries[2])  # used again: back to the device tier, its least recent entry goes down
    assert [e.tier for e in entries] == [None, HOST, DEVICE, HOST, HOST, DEVICE]
    stats = cache.stats()
    assert stats.hits == {DEVICE: 0, HOST: 1} and stats.misses == 1
    assert cache in live_caches()
    summed = totals()  # every cache of the process: at least this one's
    assert summed.hits[HOST] >= 1 and summed.bytes[DEVICE] >= stats.bytes[DEVICE] and summed.misses >= 1


def test_a_server_without_a_cache_still_reuses_a_documents_features_across_its_windows(reranker, tower_calls):
    """Chunked documents: the windows of one document share its picture, encoded once."""
    engine = Engine(Settings(feature_cache_mb=0, feature_cache_host_mb=0, max_batch_tokens=512), reranker)
    text = " ".join(f"word{i}" for i in range(300))
    document = ItemInput(text=text, images=(MediaRef(data=IMG_A),))
    request = RerankInput(ItemInput(text="q"), (document,), long_documents="chunk", max_tokens_per_doc=64)
    try:
        outcome = run(engine, request)
    finally:
        engine.close()
    assert outcome.chunks[0].count > 2
    assert sum(tower_calls) == 1


def _features(tokens: int, width: int) -> VisionFeatures:
    return VisionFeatures(torch.zeros(tokens, width), (torch.zeros(tokens, width),))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_hits_misses_and_bytes_are_exported_as_metrics(engines):
    from prometheus_client.parser import text_string_to_metric_families

    from sidecar import metrics

    def scraped() -> dict[tuple[str, str], float]:
        samples = {}
        for family in text_string_to_metric_families(metrics.exposition().decode()):
            for sample in family.samples:
                if sample.name.startswith("rerank_sidecar_feature_cache"):
                    samples[sample.name, sample.labels.get("tier", "")] = sample.value
        return samples

    cached, _ = engines
    request = RerankInput(ItemInput(text="q"), DOCUMENTS[:2])
    before = scraped()
    run(cached, request)
    run(cached, request)
    after = scraped()
    assert (
        after["rerank_sidecar_feature_cache_hits_total", HOST]
        - before.get(("rerank_sidecar_feature_cache_hits_total", HOST), 0)
        == 2
    )
    assert (
        after["rerank_sidecar_feature_cache_misses_total", ""] - before["rerank_sidecar_feature_cache_misses_total", ""]
        == 2
    )
    assert (
        after["rerank_sidecar_feature_cache_bytes", HOST] >= cached.feature_caches["reranker"].stats().bytes[HOST] > 0
    )
