"""`/rerank` with `documents` (Milvus's vLLM provider, Weaviate's reranker-transformers) and Weaviate's probes."""

from __future__ import annotations

from sidecar.server import Runtime
from tests.api.conftest import http_server_for
from tests.api.test_http_rerank import DOCS, QUERY, f32
from tests.conftest import same_scores


async def test_documents_body_carries_vllms_results_and_weaviates_scores(http, grpc_client):
    reply = await http.post("/rerank", {"query": QUERY, "documents": DOCS})
    assert reply.status == 200, reply.raw
    expected = {r.index: r.score for r in (await grpc_client.rerank(QUERY, DOCS)).results}
    results = reply.json["results"]  # vLLM: best first, every document, each with its text
    assert [r["index"] for r in results] == sorted(expected, key=lambda i: (-expected[i], i))
    assert {r["index"]: f32(r["relevance_score"]) for r in results} == same_scores(expected)
    assert {r["index"]: r["document"] for r in results} == {i: {"text": d} for i, d in enumerate(DOCS)}
    scores = reply.json["scores"]  # Weaviate: request order
    assert [s["document"] for s in scores] == DOCS
    assert [f32(s["score"]) for s in scores] == [expected[i] for i in range(len(DOCS))]
    assert reply.json["usage"]["total_tokens"] > 0 and reply.json["model"]


async def test_top_n_cuts_results_but_not_scores(http):
    reply = await http.post("/rerank", {"query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": False})
    assert len(reply.json["results"]) == 2 and all(
        set(r) == {"index", "relevance_score"} for r in reply.json["results"]
    )
    assert len(reply.json["scores"]) == len(DOCS)


async def test_a_texts_body_stays_tei(http):
    both = await http.post("/rerank", {"query": QUERY, "texts": DOCS[:2], "documents": ["ignored"]})
    assert isinstance(both.json, list) and len(both.json) == 2
    neither = await http.post("/rerank", {"query": QUERY})
    assert neither.status == 422 and neither.json["error"] == "texts is missing"


async def test_errors_carry_the_string_weaviate_reads(http):
    reply = await http.post("/rerank", {"query": QUERY, "documents": ["a", {"text": "b"}], "property": ""})
    assert reply.status == 422
    assert reply.json == {
        "error": "documents[1] must be a string, not an object",
        "error_type": "Validation",
        "code": "validation",
    }


async def test_weaviate_probes(http, api_settings):
    assert (await http.get("/.well-known/ready")).status == 200
    assert (await http.get("/.well-known/live")).status == 200
    meta = await http.get("/meta")
    assert meta.status == 200 and meta.json["model"] and meta.json["models"][0]["kind"] == "reranker"
    server, loading = await http_server_for(Runtime(api_settings))  # no engine yet
    try:
        assert (await loading.get("/.well-known/ready")).status == 503
        assert (await loading.get("/.well-known/live")).status == 200
    finally:
        await server.stop()
