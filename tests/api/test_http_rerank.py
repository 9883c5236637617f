"""Each HTTP dialect round-trips, and scores the same as the gRPC face for the same input.

Scores are compared exactly at the gRPC wire's precision (float32): both faces read the same
engine logits; HTTP sends them as JSON doubles.
"""

from __future__ import annotations

import json
import struct

from tests.api.conftest import IMAGE, IMAGE_BASE64, IMAGE_DATA_URI
from tests.conftest import same_scores

QUERY = "a red bicycle"
DOCS = [
    "A bike shop sells red bicycles.",
    "The weather is sunny today.",
    "red bicycle for sale, barely used",
    "",
    "这家自行车店出售红色自行车。",
]


def f32(value: float) -> float:
    """`value` rounded to float32, as the gRPC face sends scores."""
    return struct.unpack("f", struct.pack("f", value))[0]


def same(scores: dict) -> object:
    """Scores as another face's call got them (`same_scores`), held here to probabilities' 1e-6."""
    return same_scores(scores, tolerance=1e-6)


async def grpc_scores(grpc_client, query, documents) -> dict[int, tuple[float, float]]:
    response = await grpc_client.rerank(query, documents)
    return {r.index: (r.score, r.logit) for r in response.results}


def assert_best_first(scores: list[float]) -> None:
    assert scores == sorted(scores, reverse=True)


async def test_cohere_v2_round_trip(http):
    reply = await http.post("/v2/rerank", {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS})
    assert reply.status == 200, reply.raw
    body = reply.json
    assert set(body) == {"id", "model", "results", "meta", "usage"}
    assert isinstance(body["id"], str) and body["id"]
    assert sorted(r["index"] for r in body["results"]) == list(range(len(DOCS)))
    assert all(set(r) == {"index", "relevance_score"} for r in body["results"])  # return_documents defaults off
    assert all(isinstance(r["relevance_score"], float) and 0 < r["relevance_score"] < 1 for r in body["results"])
    assert_best_first([r["relevance_score"] for r in body["results"]])
    assert body["meta"]["billed_units"] == {"search_units": 1}
    assert body["meta"]["api_version"] == {"version": "2"}
    tokens = body["meta"]["tokens"]["input_tokens"]
    assert tokens > 0 and body["usage"] == {"total_tokens": tokens}
    assert reply.headers["content-type"] == "application/json"
    assert int(reply.headers["x-input-tokens"]) == tokens
    assert 0 < int(reply.headers["x-compute-tokens"]) < tokens  # the query prefix is computed once
    assert float(reply.headers["x-total-time"]) > 0


async def test_scores_are_json_floats_in_the_raw_body(http):
    reply = await http.post("/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True})
    assert all(isinstance(r["score"], float) for r in json.loads(reply.raw))


async def test_text_scores_equal_grpc_on_every_route(http, grpc_client):
    expected = await grpc_scores(grpc_client, QUERY, DOCS)
    for route in ("/v2/rerank", "/v1/rerank"):
        reply = await http.post(route, {"query": QUERY, "documents": DOCS})
        assert {r["index"]: f32(r["relevance_score"]) for r in reply.json["results"]} == same(
            {i: score for i, (score, _) in expected.items()}
        ), route
    tei = await http.post("/rerank", {"query": QUERY, "texts": DOCS})
    assert {r["index"]: f32(r["score"]) for r in tei.json} == same({i: score for i, (score, _) in expected.items()})
    raw = await http.post("/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True})
    assert {r["index"]: f32(r["score"]) for r in raw.json} == same({i: logit for i, (_, logit) in expected.items()})


async def test_document_objects_score_as_strings(http):
    strings = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS})
    objects = await http.post("/v2/rerank", {"query": QUERY, "documents": [{"text": d} for d in DOCS]})
    assert objects.json["results"] == strings.json["results"]


async def test_top_n_and_return_documents(http):
    full = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS})
    top = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": True})
    assert [r["index"] for r in top.json["results"]] == [r["index"] for r in full.json["results"][:2]]
    for result in top.json["results"]:
        assert result["document"] == {"text": DOCS[result["index"]]}
    beyond = await http.post("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 50})
    assert len(beyond.json["results"]) == len(DOCS)
    assert beyond.json["meta"]["api_version"] == {"version": "1"}


async def test_jina_images_score_as_grpc(http, grpc_client):
    documents = [
        {"image": IMAGE_DATA_URI},
        {"text": "a red bicycle", "image": IMAGE_BASE64},
        {"image": "red.png"},  # under the media root
        {"image": "nested/blue.png", "text": "blue"},
        "plain text",
    ]
    reply = await http.post("/v1/rerank", {"model": "jina-reranker-m0", "query": QUERY, "documents": documents})
    assert reply.status == 200, reply.raw
    body = reply.json
    assert body["usage"]["total_tokens"] == body["meta"]["tokens"]["input_tokens"] > 0
    assert {r["index"]: r["document"] for r in body["results"]} == {  # Jina-style: documents come back
        0: {"image": IMAGE_DATA_URI},
        1: {"text": "a red bicycle", "image": IMAGE_BASE64},
        2: {"image": "red.png"},
        3: {"image": "nested/blue.png", "text": "blue"},
        4: {"text": "plain text"},
    }
    expected = await grpc_scores(
        grpc_client,
        QUERY,
        [
            {"images": [IMAGE_DATA_URI]},
            {"text": "a red bicycle", "images": [IMAGE]},
            {"images": ["red.png"]},
            {"text": "blue", "images": ["nested/blue.png"]},
            "plain text",
        ],
    )
    assert {r["index"]: f32(r["relevance_score"]) for r in body["results"]} == same(
        {i: s for i, (s, _) in expected.items()}
    )


async def test_jina_image_query_scores_as_grpc(http, grpc_client):
    query = {"text": "what is this", "image": IMAGE_DATA_URI}
    reply = await http.post("/v1/rerank", {"query": query, "documents": DOCS, "return_documents": False})
    assert all("document" not in r for r in reply.json["results"])
    expected = await grpc_scores(grpc_client, {"text": "what is this", "images": [IMAGE_DATA_URI]}, DOCS)
    assert {r["index"]: f32(r["relevance_score"]) for r in reply.json["results"]} == same(
        {i: s for i, (s, _) in expected.items()}
    )


async def test_tei_round_trip(http):
    reply = await http.post("/rerank", {"query": QUERY, "texts": DOCS, "return_text": True, "truncate": True})
    assert reply.status == 200, reply.raw
    assert isinstance(reply.json, list) and sorted(r["index"] for r in reply.json) == list(range(len(DOCS)))
    assert all(set(r) == {"index", "score", "text"} and r["text"] == DOCS[r["index"]] for r in reply.json)
    assert_best_first([r["score"] for r in reply.json])
    plain = await http.post("/rerank", {"query": QUERY, "texts": DOCS})
    assert all(set(r) == {"index", "score"} for r in plain.json)


async def test_scores_are_short_json_numbers(http):
    reply = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS})
    for result in reply.json["results"]:
        assert len(repr(result["relevance_score"])) <= 18  # ML-commons' reader needs <= 18 characters


async def test_tei_raw_scores_are_logits(http):
    probabilities = await http.post("/rerank", {"query": QUERY, "texts": DOCS})
    logits = await http.post("/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True})
    assert [r["index"] for r in logits.json] == [r["index"] for r in probabilities.json]
    by_index = {r["index"]: r["score"] for r in probabilities.json}
    for result in logits.json:
        # Both are JSON numbers at float32 precision (9 significant digits).
        assert abs(1 / (1 + 2.718281828459045 ** -result["score"]) - by_index[result["index"]]) < 1e-8


async def test_instruction_extension_matches_grpc(http, grpc_client):
    instruction = "Find product descriptions matching the query."
    reply = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS, "instruction": instruction})
    default = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS})
    response = await grpc_client.rerank(QUERY, DOCS, instruction=instruction)
    assert {r["index"]: f32(r["relevance_score"]) for r in reply.json["results"]} == same(
        {r.index: r.score for r in response.results}
    )
    assert reply.json["results"] != default.json["results"]


async def test_empty_documents_give_empty_results(http):
    assert (await http.post("/v2/rerank", {"query": QUERY, "documents": []})).json["results"] == []
    assert (await http.post("/rerank", {"query": QUERY, "texts": []})).json == []


async def test_health_ready_info(http, runtime):
    health = await http.get("/health")
    assert (health.status, health.json) == (200, {"status": "ok"})
    ready = await http.get("/ready")
    assert (ready.status, ready.json) == (200, {"status": "ready"})
    info = (await http.get("/info")).json
    assert info["model"] == runtime.engine.reranker.name and info["ready"] is True
    assert info["models"][0]["kind"] == "reranker" and info["models"][0]["device"] == "cpu"
    assert info["max_documents"] == runtime.settings.max_documents
    assert info["max_body_bytes"] == runtime.settings.max_message_bytes
