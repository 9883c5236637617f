"""TEI `/rerank`: truncation options reach the engine, TEI's error body and `/info` keys."""

from __future__ import annotations

import pytest

from sidecar.api.dialects.tei import parse_tei
from sidecar.server import Runtime
from tests.api.conftest import MAX_DOCUMENTS, http_server_for
from tests.api.test_http_rerank import QUERY

LONG = "bicycle " * 11000  # over the model's 10240 tokens with the prompt


@pytest.mark.parametrize(
    "body, truncate, direction",
    [
        ({}, True, "right"),  # TEI's --auto-truncate default: true
        ({"truncate": False}, False, "right"),
        ({"truncate": True, "truncation_direction": "Left"}, True, "left"),  # Haystack sends "Left"
        ({"truncation_direction": "left"}, True, "left"),
        ({"truncation_direction": "Right", "truncate": None}, True, "right"),
    ],
)
def test_truncation_options_reach_the_engine_input(body, truncate, direction):
    parsed = parse_tei({"query": "q", "texts": ["a"], **body}, 8)
    assert (parsed.input.truncate, parsed.input.truncation_direction) == (truncate, direction)
    assert parsed.input.documents_field == "texts"


async def test_a_bad_truncation_direction_is_named(http):
    reply = await http.post("/rerank", {"query": QUERY, "texts": ["a"], "truncation_direction": "middle"})
    assert reply.status == 422
    assert reply.json["error"] == 'truncation_direction must be "right" or "left", not \'middle\''


async def test_errors_are_tei_bodies(http):
    reply = await http.post("/rerank", {"query": QUERY, "texts": ["x"] * (MAX_DOCUMENTS + 1)})
    assert reply.status == 422
    assert reply.json == {
        "error": f"texts has {MAX_DOCUMENTS + 1} entries; this server accepts at most {MAX_DOCUMENTS}",
        "error_type": "Validation",
        "code": "validation",
    }


async def test_not_ready_is_unhealthy(api_settings):
    server, http = await http_server_for(Runtime(api_settings))  # no engine: still loading
    try:
        reply = await http.post("/rerank", {"query": QUERY, "texts": ["a"]})
        assert reply.status == 503 and reply.json["error_type"] == "Unhealthy" and reply.json["code"] == "unavailable"
    finally:
        await server.stop()


async def test_truncate_false_refuses_an_overlong_text_naming_it(http):
    reply = await http.post("/rerank", {"query": QUERY, "texts": ["short", LONG], "truncate": False})
    assert reply.status == 413, reply.raw
    assert reply.json["error"].startswith("texts[1]") and reply.json["error_type"] == "Validation"


async def test_truncation_direction_decides_which_end_of_a_text_is_kept(http):
    # Two overlong texts that differ only in their first words: cut on the right they keep those
    # words and score apart; cut on the left they keep the same end and score alike.
    texts = ["red bicycle for sale " + LONG + " the end", "a cat on a sofa " + LONG + " the end"]
    right = await http.post("/rerank", {"query": QUERY, "texts": texts, "raw_scores": True})
    left = await http.post(
        "/rerank", {"query": QUERY, "texts": texts, "raw_scores": True, "truncation_direction": "left"}
    )
    assert right.status == left.status == 200, (right.raw, left.raw)
    right_scores = {r["index"]: r["score"] for r in right.json}
    left_scores = {r["index"]: r["score"] for r in left.json}
    assert abs(right_scores[0] - right_scores[1]) > 1e-5  # measured: 3e-4
    assert abs(left_scores[0] - left_scores[1]) < 1e-6  # the same tokens; float32 noise across batch rows (2e-8)


async def test_info_has_teis_keys(http, runtime):
    info = (await http.get("/info")).json
    settings = runtime.settings
    assert info["model_id"] == runtime.engine.reranker.name
    assert info["model_type"] == {"reranker": {"id2label": {"0": "yes"}, "label2id": {"yes": 0}}}
    assert info["model_dtype"] == "float32"
    assert info["max_input_length"] == runtime.engine.reranker.max_length == 10240
    assert info["max_client_batch_size"] == settings.max_documents
    assert info["max_batch_requests"] == settings.max_batch_rows
    assert info["max_batch_tokens"] == runtime.engine.max_batch_tokens
    assert info["auto_truncate"] is True and isinstance(info["version"], str)
    assert info["max_documents"] == settings.max_documents  # this server's own keys stay
