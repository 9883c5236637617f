"""Embed end to end over a real server that loads both a reranker and an embedding model."""

from __future__ import annotations

import math

import grpc
import pytest

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar.client import RerankerClient
from tests.conftest import ServerProcess, png_bytes

IMAGE = png_bytes(64, 48, seed=9)


@pytest.fixture(scope="module")
def both(tiny_model_dir, tmp_path_factory):
    from sidecar.models.tiny import make_tiny_model

    embedding = make_tiny_model(tmp_path_factory.mktemp("embedding-model"), kind="embedding", seed=1)
    args = ["--model", str(tiny_model_dir), "--embedding-model", str(embedding)]
    with ServerProcess(args, tmp_path_factory.mktemp("logs") / "both.log") as proc:
        with RerankerClient(proc.target, timeout=60, retries=0) as client:
            yield client


def norm(values) -> float:
    return math.sqrt(sum(v * v for v in values))


def test_embed_then_rerank_over_grpc(both):
    inputs = ["red running shoes", {"images": [IMAGE]}, {"text": "a lamp", "images": [IMAGE]}]
    response = both.embed(inputs)
    assert len(response.embeddings) == 3 and response.model
    full = [list(e.values) for e in response.embeddings]
    assert all(abs(norm(v) - 1) < 1e-5 for v in full)
    assert response.usage.images == 1  # the same image bytes are decoded once per request
    cut = both.embed(inputs, dimensions=8)
    for short, long in zip(cut.embeddings, full, strict=True):
        prefix = [x / norm(long[:8]) for x in long[:8]]
        assert len(short.values) == 8 and all(abs(a - b) < 1e-5 for a, b in zip(short.values, prefix, strict=True))
    single = both.embed([inputs[2]]).embeddings[0].values
    assert all(abs(a - b) < 1e-5 for a, b in zip(single, full[2], strict=True))
    ranked = both.rerank("red running shoes", ["shoes", "lamp"])
    assert len(ranked.results) == 2
    kinds = {m.kind: m for m in both.model_info().models}
    assert set(kinds) == {"reranker", "embedding"} and kinds["embedding"].max_length == 8192


@pytest.mark.parametrize(
    "request_, message",
    [
        (pb.EmbedRequest(inputs=[pb.Item(text="ok")], dimensions=4096), "dimensions 4096 exceeds"),
        (
            pb.EmbedRequest(inputs=[pb.Item(text="ok"), pb.Item(images=[pb.Media(data=b"junk")])]),
            "inputs[1].images[0]: not a decodable image",
        ),
        (pb.EmbedRequest(inputs=[pb.Item(text="x")] * 1001), "at most 1000"),
    ],
)
def test_bad_embed_input_is_invalid_argument_and_the_server_keeps_serving(both, request_, message):
    with pytest.raises(grpc.RpcError) as info:
        both._stub.Embed(request_, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert len(both.embed(["still serving"]).embeddings) == 1
