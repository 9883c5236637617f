"""Long documents on the HTTP face: every dialect chunks as the gRPC face does, and says which window won."""

from __future__ import annotations

import pytest

from tests.api.test_http_rerank import f32, same
from tests.sidecar.test_chunking import LONG, QUERY

WINDOWS = {"long_documents": "chunk", "max_tokens_per_doc": 200, "chunk_overlap": 25}
DOCS = [LONG, "a red bicycle", "a cat"]

# route, body maker, results of the reply (index, probability, chunk or None)
ROUTES = {
    "cohere-v2": ("/v2/rerank", lambda extra: {"query": QUERY, "documents": DOCS, **extra}),
    "cohere-v1-jina": ("/v1/rerank", lambda extra: {"query": QUERY, "documents": DOCS, **extra}),
    "tei": ("/rerank", lambda extra: {"query": QUERY, "texts": DOCS, **extra}),
    "vllm-weaviate": ("/rerank", lambda extra: {"query": QUERY, "documents": DOCS, **extra}),
}


def results_of(reply) -> dict[int, tuple[float, dict | None]]:
    rows = reply.json if isinstance(reply.json, list) else reply.json["results"]
    key = "score" if isinstance(reply.json, list) else "relevance_score"
    return {r["index"]: (f32(r[key]), r.get("chunk")) for r in rows}


def chunk_dict(chunk) -> dict:
    return {"index": chunk.index, "count": chunk.count, "start": chunk.start, "end": chunk.end}


@pytest.mark.parametrize("dialect", ROUTES)
async def test_chunked_scores_and_windows_equal_grpc(http, grpc_client, dialect):
    route, body = ROUTES[dialect]
    expected = await grpc_client.rerank(QUERY, DOCS, **WINDOWS)
    reply = await http.post(route, body(WINDOWS))
    assert reply.status == 200, reply.raw
    got = results_of(reply)
    assert {i: score for i, (score, _) in got.items()} == same({r.index: r.score for r in expected.results})
    assert {i: chunk for i, (_, chunk) in got.items()} == {r.index: chunk_dict(r.chunk) for r in expected.results}
    assert got[0][1]["count"] > 1  # the long document really was split


@pytest.mark.parametrize("dialect", ROUTES)
async def test_without_chunking_results_carry_no_window_and_score_the_truncated_text(http, dialect):
    route, body = ROUTES[dialect]
    cut = results_of(await http.post(route, body({"max_tokens_per_doc": 200})))
    chunked = results_of(await http.post(route, body(WINDOWS)))
    assert all(chunk is None for _, chunk in cut.values())
    # The answer sits past the first 200 tokens: cutting misses it, the best window finds it.
    assert abs(cut[0][0] - chunked[0][0]) > 1e-3


async def test_cohere_v1_max_chunks_per_doc_chunks_with_at_most_that_many_windows(http, grpc_client):
    """Cohere v1 chunks long documents and scores each by its best chunk, at most max_chunks_per_doc of them."""
    two = results_of(await http.post("/v1/rerank", {"query": QUERY, "documents": DOCS, "max_tokens_per_doc": 200,
                                                   "max_chunks_per_doc": 2}))  # fmt: skip
    assert two[0][1]["count"] == 2 and two[0][1]["index"] in (0, 1)
    assert two[1][1] == {"index": 0, "count": 1, "start": 0, "end": len(DOCS[1])}
    # More than the server allows is capped at the server's limit: the same as plain chunking.
    many = results_of(await http.post("/v1/rerank", {"query": QUERY, "documents": DOCS, "max_tokens_per_doc": 200,
                                                    "max_chunks_per_doc": 10_000}))  # fmt: skip
    expected = await grpc_client.rerank(QUERY, DOCS, long_documents="chunk", max_tokens_per_doc=200)
    assert {i: chunk for i, (_, chunk) in many.items()} == {r.index: chunk_dict(r.chunk) for r in expected.results}
    assert many[0][1]["count"] > 2
    # An explicit long_documents wins over the implied chunking.
    cut = results_of(await http.post("/v1/rerank", {"query": QUERY, "documents": DOCS, "max_chunks_per_doc": 2,
                                                   "long_documents": "truncate"}))  # fmt: skip
    assert all(chunk is None for _, chunk in cut.values())


@pytest.mark.parametrize("dialect", ROUTES)
@pytest.mark.parametrize(
    "extra, message",
    [
        ({"long_documents": "paragraphs"}, 'long_documents must be "truncate" or "chunk", not \'paragraphs\''),
        ({"long_documents": 1}, 'long_documents must be "truncate" or "chunk", not a number'),
        ({"chunk_overlap": 10}, "chunk_overlap applies only when long_documents is chunk"),
        (
            {"long_documents": "chunk", "max_tokens_per_doc": 50, "chunk_overlap": 50},
            "chunk_overlap (50) must be smaller than max_tokens_per_doc (50)",
        ),
        ({"long_documents": "chunk", "chunk_overlap": -1}, "chunk_overlap must be at least 0, got -1"),
    ],
)
async def test_bad_long_document_options_are_named_in_each_dialects_error_body(http, dialect, extra, message):
    route, body = ROUTES[dialect]
    reply = await http.post(route, body(extra))
    assert reply.status == 422, reply.raw
    error = reply.error()
    assert error["code"] == "validation" and message in error["message"], error
