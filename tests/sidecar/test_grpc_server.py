"""End to end over a real `rerank-sidecar serve` subprocess on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar.client import AsyncRerankerClient, RerankerClient
from sidecar.media import MediaPolicy, MediaResolver
from sidecar.types import ItemInput, MediaRef, RerankInput
from tests.conftest import ServerProcess, free_port, png_bytes

IMAGE = png_bytes(80, 60, seed=7)
DOCS = ["a red bicycle", {"id": "b", "text": "a blue car"}, {"text": "a lamp", "images": [IMAGE]}, "", "tea"]


def test_health_and_reflection(server):
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rerank.v1.Reranker"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
        assert {"rerank.v1.Reranker", "grpc.health.v1.Health"} <= names


def test_rerank_results_are_ranked_and_complete(client):
    response = client.rerank("red bicycle", DOCS, top_n=3, return_documents=True)
    assert len(response.results) == 3
    logits = [r.logit for r in response.results]
    assert logits == sorted(logits, reverse=True)
    full = client.rerank("red bicycle", DOCS)
    assert [r.index for r in full.results][:3] == [r.index for r in response.results]
    assert sorted(r.index for r in full.results) == list(range(len(DOCS)))
    for result in response.results:
        assert 0.0 <= result.score <= 1.0
        assert result.document.text == (
            DOCS[result.index] if isinstance(DOCS[result.index], str) else DOCS[result.index]["text"]
        )
    by_index = {r.index: r for r in full.results}
    assert by_index[1].id == "b"
    assert response.model and response.usage.input_tokens > 0
    assert response.usage.images + response.usage.feature_cache_hits == 1  # decoded, or known from an earlier call
    assert response.usage.computed_tokens < response.usage.input_tokens  # prefix computed once
    assert (full.usage.images, full.usage.feature_cache_hits, full.usage.feature_cache_misses) == (0, 1, 0)


def test_server_scores_equal_in_process_model(client, reranker):
    docs = ["a red bicycle", "a blue car", ""]
    response = client.rerank("red bicycle", docs + [{"images": [IMAGE], "text": "lamp"}])
    request = RerankInput(
        ItemInput(text="red bicycle"),
        tuple(ItemInput(text=d) for d in docs) + (ItemInput(text="lamp", images=(MediaRef(data=IMAGE),)),),
    )
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy()))
    reranker.forward_prefix(prepared.prefix)
    expected = reranker.forward_rows(prepared.rows).tolist()
    for result in response.results:
        assert abs(result.logit - expected[result.index]) < 1e-5


def test_image_sources_agree(client, media_root):
    """Four ways to send one picture score alike, and unlike another picture or none (the pixels count)."""
    data_uri = "data:image/png;base64," + base64.b64encode((media_root / "red.png").read_bytes()).decode()
    sources = [(media_root / "red.png").read_bytes(), data_uri, "red.png", "file://red.png"]
    documents = [{"images": [s]} for s in sources] + [{"images": ["nested/blue.png"]}, {"text": ""}]
    by_index = {r.index: r.logit for r in client.rerank("what colour", documents).results}
    same = [by_index[i] for i in range(4)]
    assert max(same) - min(same) < 1e-5
    assert abs(by_index[4] - same[0]) > 1e-2 and abs(by_index[5] - same[0]) > 1e-2


def test_async_client_gives_the_same_results(server, client):
    sync = client.rerank("red bicycle", DOCS)

    async def main():
        async with AsyncRerankerClient(server.target) as aclient:
            return await aclient.rerank("red bicycle", DOCS), await aclient.model_info()

    response, info = asyncio.run(main())
    # Equal up to float rounding: which rows share a forward depends on when each document was ready.
    assert {r.index: r.logit for r in response.results} == pytest.approx(
        {r.index: r.logit for r in sync.results}, abs=1e-5
    )
    assert info.models[0].kind == "reranker" and info.max_documents == 60


def test_empty_documents_give_empty_results(client):
    assert len(client.rerank("anything", []).results) == 0


BAD = [
    (pb.RerankRequest(documents=[pb.Item(text="x")]), "query is missing"),
    (pb.RerankRequest(query=pb.Item(), documents=[pb.Item(text="x")]), "query has no text, image or video"),
    (pb.RerankRequest(query=pb.Item(text="q"), documents=[pb.Item(text="x")] * 61), "at most 60"),
    (
        pb.RerankRequest(query=pb.Item(text="q"), documents=[pb.Item(text="x"), pb.Item(images=[pb.Media()])]),
        "documents[1].images[0] has neither data nor uri",
    ),
    (
        pb.RerankRequest(
            query=pb.Item(text="q"), documents=[pb.Item(text="x"), pb.Item(images=[pb.Media(data=b"junk")])]
        ),
        "documents[1].images[0]: not a decodable image",
    ),
    (
        pb.RerankRequest(
            query=pb.Item(text="q"),
            documents=[pb.Item(text="x")] * 3 + [pb.Item(images=[pb.Media(uri="http://nonexistent.invalid/a.png")])],
        ),
        "documents[3].images[0]: cannot resolve host",
    ),
    (
        pb.RerankRequest(
            query=pb.Item(text="q"), documents=[pb.Item(images=[pb.Media(uri="http://127.0.0.1:1/a.png")])]
        ),
        "documents[0].images[0]: host '127.0.0.1' resolves to non-public address",
    ),
    (
        pb.RerankRequest(query=pb.Item(text="q"), documents=[pb.Item(images=[pb.Media(uri="../secret.png")])]),
        "documents[0].images[0]: path '../secret.png' is outside the media root",
    ),
    (
        pb.RerankRequest(query=pb.Item(text="q"), documents=[pb.Item(text="x", videos=[pb.Video()])]),
        "documents[0].videos[0] has neither frames nor uri",
    ),
    (pb.RerankRequest(query=pb.Item(text=" \n\t"), documents=[pb.Item(text="x")]), "query has no text, image or video"),
]


@pytest.mark.parametrize("request_, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_invalid_argument_and_the_server_keeps_serving(client, request_, message):
    with pytest.raises(grpc.RpcError) as info:
        client._stub.Rerank(request_, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert len(client.rerank("still there?", ["yes"]).results) == 1


def test_oversized_message_is_resource_exhausted(client):
    huge = pb.Item(images=[pb.Media(data=b"\0" * (5 * 1024 * 1024))])
    with pytest.raises(grpc.RpcError) as info:
        client.rerank("q", [huge])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(client.rerank("still there?", ["yes"]).results) == 1


def test_embed_without_embedding_model_is_unimplemented(client):
    with pytest.raises(grpc.RpcError) as info:
        client.embed(["text"])
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "--embedding-model" in info.value.details()


def test_closed_port_fails_fast_after_retries():
    with RerankerClient(f"127.0.0.1:{free_port()}", timeout=2, retries=2, backoff=0.05) as dead:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            dead.rerank("q", ["d"])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 10
        with pytest.raises(TimeoutError):
            dead.wait_until_ready(timeout=0.5)


def test_sigterm_drains_in_flight_requests(tiny_model_dir, tmp_path):
    proc = ServerProcess(
        [
            "--model",
            str(tiny_model_dir),
            "--max-batch-tokens",
            "256",
            "--max-batch-rows",
            "2",
            "--drain-seconds",
            "300",
        ],
        tmp_path / "drain.log",
    )
    try:
        proc.wait_ready()
        result: dict = {}

        def call():
            with RerankerClient(proc.target, timeout=120, retries=0) as c:
                result["response"] = c.rerank("query", [f"document number {i} " * 20 for i in range(200)])

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(1.0)  # the request is in flight
        assert proc.stop() == 0
        thread.join(timeout=120)
        assert len(result["response"].results) == 200
        assert "draining" in proc.log() and "Rerank docs=200" in proc.log()
    finally:
        proc.stop()
