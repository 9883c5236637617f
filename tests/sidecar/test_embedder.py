"""Embeddings equal an independent reference computation; batching, truncation and order behave."""

from __future__ import annotations

import asyncio

import pytest
import torch

from sidecar.media import MediaPolicy, MediaResolver
from sidecar.models.embedder import EmbedderModel, truncate_dimensions
from sidecar.scheduler import Engine
from sidecar.settings import Settings
from sidecar.types import ItemInput
from tests.reference import reference_embedding
from tests.sidecar.test_parity import FRAMES, IMG_A, IMG_B, engine_item, reference_item

CASES = {
    "text": dict(text="a red bicycle with a basket"),
    "image": dict(images=[IMG_A]),
    "text+image": dict(text="what is this", images=[IMG_B]),
    "frames": dict(frames=FRAMES),
    "empty": dict(),  # the reference embeds an input with nothing in it as the text "NULL"
}


@pytest.fixture(scope="session")
def embedding_dir(tmp_path_factory):
    from sidecar.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-embedding"), kind="embedding", seed=1)


@pytest.fixture(scope="session")
def embedder_loaded(embedding_dir):
    from sidecar.models.loading import load_pretrained

    return load_pretrained(str(embedding_dir), torch.device("cpu"), torch.float32, with_lm_head=False)


@pytest.fixture(scope="session")
def embedder(embedder_loaded, embedding_dir):
    base, processor = embedder_loaded
    return EmbedderModel(str(embedding_dir), base, processor)


def engine_vectors(embedder, items: list[dict], instruction: str = "") -> torch.Tensor:
    prepared = embedder.prepare(tuple(engine_item(**i) for i in items), instruction, MediaResolver(MediaPolicy()))
    return embedder.forward_rows(prepared.rows)


@pytest.mark.parametrize("case", list(CASES))
def test_embedding_matches_reference(embedder, embedder_loaded, case):
    base, processor = embedder_loaded
    expected = reference_embedding(base, processor, reference_item(**CASES[case]))
    got = engine_vectors(embedder, [CASES[case]])[0]
    assert torch.allclose(got, expected, atol=1e-5)
    assert abs(float(got.norm()) - 1) < 1e-5


def test_instruction_gets_final_punctuation(embedder, embedder_loaded):
    base, processor = embedder_loaded
    expected = reference_embedding(base, processor, reference_item(text="shoes"), "Find products")
    got = engine_vectors(embedder, [dict(text="shoes")], "Find products")[0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_batched_equals_single_and_keeps_order(embedder):
    items = [CASES["text"], CASES["image"], dict(text="short"), CASES["text+image"], dict(text="a much longer " * 20)]
    batched = engine_vectors(embedder, items)
    for i, item in enumerate(items):
        assert torch.allclose(batched[i], engine_vectors(embedder, [item])[0], atol=1e-5)


def test_dimensions_truncation_renormalises_prefix():
    full = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    cut = truncate_dimensions(full, 8)
    assert cut.shape == (3, 8)
    assert torch.allclose(cut.norm(dim=-1), torch.ones(3), atol=1e-6)
    direction = torch.nn.functional.normalize(full[:, :8], dim=-1)
    assert torch.allclose(cut, direction)
    assert truncate_dimensions(full, 0) is full


def test_engine_embeds_through_the_scheduler_in_order(embedder):
    engine = Engine(Settings(max_batch_tokens=64), embedder=embedder)
    try:
        items = tuple(ItemInput(text=t) for t in ["one", "two words", "three words here", "x " * 30])
        outcome = asyncio.run(engine.embed(items))
        direct = engine_vectors(embedder, [dict(text=i.text) for i in items])
        assert torch.allclose(outcome.vectors, direct, atol=1e-5)
        assert engine.batches_run >= 2  # the small budget forced several micro-batches
    finally:
        engine.close()


def test_embedding_a_picture_again_uses_the_feature_cache(embedder):
    """The embedding model keeps its own document feature cache: same vectors, nothing decoded."""
    inputs = (engine_item(text="a", images=[IMG_A]), engine_item(images=[IMG_B]), engine_item(text="text only"))
    engine = Engine(Settings(), embedder=embedder)
    try:
        cold = asyncio.run(engine.embed(inputs))
        warm = asyncio.run(engine.embed(inputs))
    finally:
        engine.close()
    assert (cold.timings.feature_cache_misses, warm.timings.feature_cache_hits, warm.timings.images) == (2, 2, 0)
    assert torch.allclose(cold.vectors, warm.vectors, atol=1e-5)
