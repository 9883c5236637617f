"""Cohere (`/v2/rerank`) and Cohere v1 + Jina (`/v1/rerank`): each route's defaults, `rank_fields`, error bodies."""

from __future__ import annotations

import pytest

from tests.api.conftest import MAX_DOCUMENTS
from tests.api.test_http_rerank import DOCS, QUERY, f32
from tests.conftest import same_scores


def scores(reply) -> dict[int, float]:
    return {r["index"]: f32(r["relevance_score"]) for r in reply.json["results"]}


async def test_v1_returns_documents_unless_told_not_to_as_jina_does(http):
    jina = await http.post(
        "/v1/rerank", {"model": "jina-reranker-v2-base-multilingual", "query": QUERY, "documents": DOCS}
    )
    assert jina.status == 200, jina.raw
    assert {r["index"]: r["document"] for r in jina.json["results"]} == {i: {"text": d} for i, d in enumerate(DOCS)}
    off = await http.post("/v1/rerank", {"query": QUERY, "documents": DOCS, "return_documents": False})
    assert all("document" not in r for r in off.json["results"])
    cohere = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS})
    assert all("document" not in r for r in cohere.json["results"])  # Cohere v2's default: false


async def test_null_options_mean_their_defaults(http):
    # langchain-community's JinaRerank sends "top_n": null when asked for every result.
    reply = await http.post("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": None, "return_documents": None})
    assert len(reply.json["results"]) == len(DOCS) and all("document" in r for r in reply.json["results"])


async def test_top_n_zero_is_every_document_on_v1_and_refused_on_v2(http):
    full = await http.post("/v1/rerank", {"query": QUERY, "documents": DOCS})
    zero = await http.post("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0})
    assert zero.status == 200 and [r["index"] for r in zero.json["results"]] == [
        r["index"] for r in full.json["results"]
    ]
    refused = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0})
    assert refused.status == 422 and refused.error()["message"] == "top_n must be at least 1, got 0"
    negative = await http.post("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": -1})
    assert negative.status == 422 and negative.error()["message"] == "top_n must be at least 0, got -1"


@pytest.mark.parametrize(
    "route, keys",
    [("/v1/rerank", {"message", "detail", "code"}), ("/v2/rerank", {"message", "code"})],
    ids=["jina-detail", "cohere-message"],
)
async def test_errors_come_in_the_body_each_client_reads(http, route, keys):
    invalid = await http.post(route, {"query": QUERY, "documents": ["d"] * (MAX_DOCUMENTS + 1)})
    assert invalid.status == 422 and set(invalid.json) == keys
    message = f"documents has {MAX_DOCUMENTS + 1} entries; this server accepts at most {MAX_DOCUMENTS}"
    assert invalid.json["message"] == message and invalid.json.get("detail", message) == message
    assert invalid.json["code"] == "validation"
    malformed = await http.post(route, raw=b'{"query": ')
    assert malformed.status == 400 and set(malformed.json) == keys and malformed.json["code"] == "invalid_json"


SEMI_STRUCTURED = [
    {"title": "Red bicycle", "author": "Ann", "text": "A bike shop sells red bicycles.", "id": 7},
    {"title": "Weather", "text": "The weather is sunny today."},
    {"title": "Only a title"},
]


async def test_rank_fields_score_the_named_fields_as_key_value_lines(http, grpc_client):
    reply = await http.post(
        "/v1/rerank",
        {"query": QUERY, "documents": SEMI_STRUCTURED, "rank_fields": ["title", "text"], "return_documents": True},
    )
    assert reply.status == 200, reply.raw
    expected = await grpc_client.rerank(
        QUERY,
        [
            "title: Red bicycle\ntext: A bike shop sells red bicycles.",
            "title: Weather\ntext: The weather is sunny today.",
            "title: Only a title",
        ],
    )
    assert scores(reply) == same_scores({r.index: r.score for r in expected.results})
    # Documents come back as they were sent, every field kept (as Cohere does).
    assert {r["index"]: r["document"] for r in reply.json["results"]} == dict(enumerate(SEMI_STRUCTURED))


async def test_rank_fields_order_is_the_order_given(http, grpc_client):
    reply = await http.post(
        "/v2/rerank", {"query": QUERY, "documents": SEMI_STRUCTURED[:1], "rank_fields": ["author", "title"]}
    )
    expected = await grpc_client.rerank(QUERY, ["author: Ann\ntitle: Red bicycle"])
    assert scores(reply) == same_scores({r.index: r.score for r in expected.results})


async def test_default_rank_fields_score_the_text(http):
    documents = [{"text": d, "title": "ignored"} for d in DOCS]
    default = await http.post("/v2/rerank", {"query": QUERY, "documents": documents})
    explicit = await http.post("/v2/rerank", {"query": QUERY, "documents": documents, "rank_fields": ["text"]})
    strings = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS})
    assert scores(default) == same_scores(scores(strings)) and scores(explicit) == same_scores(scores(strings))


async def test_a_document_without_any_rank_field_is_named(http):
    reply = await http.post("/v2/rerank", {"query": QUERY, "documents": SEMI_STRUCTURED, "rank_fields": ["author"]})
    assert reply.status == 422
    assert reply.error()["message"] == "documents[1] has none of rank_fields ['author']"
    wrong = await http.post("/v2/rerank", {"query": QUERY, "documents": DOCS, "rank_fields": "title"})
    assert wrong.status == 422 and wrong.error()["message"] == "rank_fields must be an array of strings, not a string"


async def test_max_tokens_per_doc_cuts_each_documents_text(http):
    # Two documents that differ only after their first 8 tokens score alike when cut to 8, apart otherwise.
    head = "red bicycle for sale, barely used, red bicycle for sale, barely used"
    documents = [head + " and a cat on a sofa", head + " near the sunny weather station"]
    cut = await http.post("/v2/rerank", {"query": QUERY, "documents": documents, "max_tokens_per_doc": 8})
    whole = await http.post("/v2/rerank", {"query": QUERY, "documents": documents})
    assert cut.status == whole.status == 200, cut.raw
    cut_scores, whole_scores = scores(cut), scores(whole)
    assert abs(cut_scores[0] - cut_scores[1]) < 1e-5  # the same tokens: float32 noise across batch rows (2e-7)
    assert abs(whole_scores[0] - whole_scores[1]) > 1e-2  # measured: 0.11
