"""Compiled decoder layers: same scores as transformers' eager layers, on every path the engine uses."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

from sidecar.models import fused
from sidecar.scheduler import Engine
from sidecar.server import load_engine
from sidecar.settings import Settings
from sidecar.types import ItemInput, MediaRef, RerankInput, VideoRef
from tests.conftest import png_bytes
from tests.sidecar.test_parity import FRAMES, IMG_A, IMG_B
from tests.sidecar.test_scheduler import IMAGE_QUERY, QUERY, documents

REQUESTS = [
    RerankInput(QUERY, documents(14, seed=1)),  # text query; every 7th document has an image
    RerankInput(IMAGE_QUERY, documents(9, seed=2)),  # image query: deepstack features in the prefix
    RerankInput(ItemInput(text="red shoe"), documents(6, seed=3)),
    RerankInput(ItemInput(text="red shoe"), documents(5, seed=4)),  # same prefix length, another request
    RerankInput(
        ItemInput(text="which photo?", images=(MediaRef(data=IMG_A),)),
        (ItemInput(images=(MediaRef(data=IMG_B),)), ItemInput(text="")),  # image-only and empty documents
    ),
]


def all_logits(reranker, **settings) -> list[list[float]]:
    """Every request alone, then all of them at once (cross-request batches, mixed prefixes)."""
    engine = Engine(Settings(**settings), reranker)

    async def main():
        alone = [(await engine.rerank(r)).logits for r in REQUESTS]
        together = [o.logits for o in await asyncio.gather(*(engine.rerank(r) for r in REQUESTS))]
        return alone + together

    try:
        return asyncio.run(main())
    finally:
        engine.close()


@pytest.fixture
def fused_reranker(reranker):
    reason = reranker.compile_layers()
    assert reason is None, reason
    yield reranker
    reranker.uncompile_layers()


@pytest.mark.parametrize("prefix_reuse", [True, False], ids=["prefix-reuse", "no-prefix-reuse"])
def test_compiled_layers_score_like_eager_layers(fused_reranker, prefix_reuse):
    from torch._dynamo.utils import counters

    settings = dict(prefix_reuse=prefix_reuse, max_batch_tokens=2048)
    graphs = counters["stats"]["unique_graphs"]
    compiled = all_logits(fused_reranker, **settings)
    # Every batch shape above (prefixes, rows, images, mixed requests) reused the start-up compilation.
    assert counters["stats"]["unique_graphs"] == graphs
    fused.set_enabled(False)
    try:
        eager = all_logits(fused_reranker, **settings)
    finally:
        fused.set_enabled(True)
    assert len(compiled) == 2 * len(REQUESTS)
    for got, want in zip(compiled, eager, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_the_compiled_path_is_really_taken(fused_reranker, monkeypatch):
    """Guards against a fusion that silently falls back to eager everywhere, and checks that rows
    after a shared prefix take the graph that lays out the prefix's keys and values itself."""
    compiled = fused._compiled()
    calls: dict[str, list] = {"before": [], "before_prefixed": []}
    for name, seen in calls.items():
        original = getattr(compiled, name)
        monkeypatch.setattr(compiled, name, lambda *a, seen=seen, original=original: seen.append(1) or original(*a))
    all_logits(fused_reranker)
    layers = len(fused_reranker.base.language_model.layers)
    for name, seen in calls.items():
        assert len(seen) >= layers and len(seen) % layers == 0, name


def test_unfuse_restores_transformers_layers(reranker):
    layers, blocks = reranker.base.language_model.layers, reranker.base.visual.blocks
    assert reranker.compile_layers() is None
    assert all("forward" in vars(layer) for layer in [*layers, *blocks])
    reranker.uncompile_layers()
    assert not any("forward" in vars(layer) for layer in [*layers, *blocks])


def test_unsupported_layers_stay_eager_with_a_reason(reranker):
    config = reranker.base.language_model.config
    original = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        reason = reranker.compile_layers()
    finally:
        config._attn_implementation = original
    assert reason is not None and "eager" in reason and "sdpa" in reason
    assert not any("forward" in vars(layer) for layer in reranker.base.language_model.layers)


def test_auto_compiles_on_cuda_only_and_rejects_unknown_values():
    assert fused.wanted("auto", torch.device("cuda")) is True
    assert fused.wanted("auto", torch.device("cpu")) is False
    assert fused.wanted("on", torch.device("cpu")) is True
    assert fused.wanted("off", torch.device("cuda")) is False
    with pytest.raises(SystemExit, match="--compile-layers maybe: choose auto, on or off"):
        fused.wanted("maybe", torch.device("cpu"))


def test_server_refuses_to_start_when_compiling_was_asked_for_and_cannot_be_done(tiny_model_dir):
    settings = Settings(model=str(tiny_model_dir), compile_layers="on", attn_implementation="eager")
    with pytest.raises(SystemExit, match="--compile-layers on: reranker .*attention implementation 'eager'"):
        load_engine(settings)


def test_server_with_compiled_layers_serves_the_same_scores(tiny_model_dir, reranker):
    engine = load_engine(dataclasses.replace(Settings(model=str(tiny_model_dir)), compile_layers="on"))
    try:
        assert all("forward" in vars(layer) for layer in engine.reranker.base.language_model.layers)
        request = REQUESTS[1]
        got = asyncio.run(engine.rerank(request)).logits
    finally:
        engine.close()
        engine.reranker.uncompile_layers()
    want = all_logits(reranker)[1]
    assert got == pytest.approx(want, abs=1e-5)


def _broken(*args):
    raise RuntimeError("no C compiler found")


def test_a_compiler_failure_at_start_up_leaves_the_model_eager_with_the_reason(reranker, monkeypatch):
    compiled = fused._compiled()
    monkeypatch.setattr(compiled, "before", _broken)
    reason = reranker.compile_layers()
    assert reason == "compiling failed: RuntimeError: no C compiler found"
    assert not any("forward" in vars(layer) for layer in reranker.base.language_model.layers)
    assert compiled.enabled


def test_a_compiled_graph_failing_later_falls_back_to_eager_and_keeps_serving(fused_reranker, monkeypatch, caplog):
    compiled = fused._compiled()
    monkeypatch.setattr(compiled, "after", _broken)
    with caplog.at_level("ERROR", logger="sidecar.models.fused"):
        served = all_logits(fused_reranker)
    assert not compiled.enabled
    assert caplog.text.count("continuing with eager layers: RuntimeError: no C compiler found") == 1
    eager = all_logits(fused_reranker)  # the switch is now off: transformers' layers
    fused.set_enabled(True)
    for got, want in zip(served, eager, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_a_batch_mixing_prefixes_keeps_the_compiled_layout_per_prefix_group(fused_reranker, monkeypatch):
    """Rows of two requests (several rows each), of a third (one row) and of a request without a
    prefix in one forward: each group attends to its own prefix, with no new compilation."""
    from torch._dynamo.utils import counters

    from sidecar.media import MediaPolicy, MediaResolver

    def prepared(request: RerankInput, reuse: bool = True):
        out = fused_reranker.prepare(request, MediaResolver(MediaPolicy()), reuse_prefix=reuse)
        fused_reranker.forward_prefix(out.prefix)
        return out.rows

    a = prepared(REQUESTS[2])[:3]
    b = prepared(REQUESTS[4])  # an image query; an image-only and an empty document
    c = prepared(REQUESTS[3])[:1]
    d = prepared(RerankInput(ItemInput(text="no prefix"), documents(2, seed=8)), reuse=False)
    rows = [a[0], b[0], d[0], a[1], c[0], b[1], a[2], d[1]]  # interleaved: the forward groups them
    compiled = fused._compiled()
    calls: list[int] = []
    original = compiled.before_prefixed
    monkeypatch.setattr(compiled, "before_prefixed", lambda *args: calls.append(1) or original(*args))
    graphs = counters["stats"]["unique_graphs"]
    mixed = fused_reranker.forward_rows(rows).tolist()
    assert counters["stats"]["unique_graphs"] == graphs
    assert len(calls) == 2 * len(fused_reranker.base.language_model.layers)  # groups a and b, every layer
    fused.set_enabled(False)
    try:
        eager = fused_reranker.forward_rows(rows).tolist()
    finally:
        fused.set_enabled(True)
    alone = [fused_reranker.forward_rows(group).tolist() for group in (a, b, c, d)]
    expected = [alone[0][0], alone[1][0], alone[3][0], alone[0][1], alone[2][0], alone[1][1], alone[0][2], alone[3][1]]
    assert mixed == pytest.approx(eager, abs=1e-5)
    assert mixed == pytest.approx(expected, abs=1e-5)


def test_compiled_vision_blocks_encode_pictures_like_eager_ones(fused_reranker, monkeypatch):
    """Pictures of one size and of several sizes, video frames and a cache of none: the compiled vision
    blocks (attention once per run of equal pictures) give eager's scores, with no new compilation."""
    from torch._dynamo.utils import counters

    from sidecar.models import fused_vision

    sizes = [(64, 64), (64, 64), (64, 64), (96, 64), (64, 64), (32, 160)]
    documents_ = tuple(
        ItemInput(text=f"p{i}", images=(MediaRef(data=png_bytes(w, h, seed=70 + i)),)) for i, (w, h) in enumerate(sizes)
    ) + (ItemInput(videos=(VideoRef(frames=tuple(MediaRef(data=f) for f in FRAMES[:4])),)),)
    request = RerankInput(ItemInput(text="which", images=(MediaRef(data=IMG_B),)), documents_)
    settings = dict(max_batch_tokens=4096, feature_cache_mb=0, feature_cache_host_mb=0)
    runs: list[int] = []
    original = fused_vision.equal_runs
    monkeypatch.setattr(fused_vision, "equal_runs", lambda cu: runs.append(len(original(cu))) or original(cu))
    graphs = counters["stats"]["unique_graphs"]
    engine = Engine(Settings(**settings), fused_reranker)
    try:
        compiled = asyncio.run(engine.rerank(request)).logits
        assert counters["stats"]["unique_graphs"] == graphs
        assert runs and max(runs) >= 2 and min(runs) < len(sizes)  # equal pictures attended together
        fused.set_enabled(False)
        eager = asyncio.run(engine.rerank(request)).logits
    finally:
        fused.set_enabled(True)
        engine.close()
    assert max(eager) - min(eager) > 100 * 1e-5
    assert compiled == pytest.approx(eager, abs=1e-5)
