"""Every failure is a JSON error with the right status and a message naming the field, and the
server answers a good request right after each one."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from sidecar.server import Runtime
from tests.api.conftest import MAX_BODY, MAX_DOCUMENTS, http_server_for

GOOD = {"query": "a red bicycle", "documents": ["a bike", "a cat"]}


async def assert_still_serving(http) -> None:
    reply = await http.post("/v2/rerank", GOOD)
    assert reply.status == 200 and len(reply.json["results"]) == 2


MALFORMED = [
    (b'{"query": "q", "documents": ["a",]}', "malformed JSON at line 1 column 34: Expecting value"),
    (b'{"query": "q"', "malformed JSON at line 1 column 14"),
    (b"", "the request body is empty"),
    (b'{"query": "q", "documents": ["a"], "top_n": NaN}', "NaN is not valid JSON"),
    (b'{"query": "\xff"}', "not valid UTF-8"),
]


@pytest.mark.parametrize("raw, message", MALFORMED, ids=["comma", "truncated", "empty", "nan", "utf8"])
async def test_malformed_json_is_400(http, raw, message):
    reply = await http.post("/v2/rerank", raw=raw)
    assert reply.status == 400
    error = reply.error()
    assert error["code"] == "invalid_json" and message in error["message"]
    await assert_still_serving(http)


INVALID = [
    ("/v2/rerank", ["q"], "the request body must be a JSON object, not an array"),
    ("/v2/rerank", {"documents": ["a"]}, "query is missing"),
    ("/v2/rerank", {"query": "", "documents": ["a"]}, "query has no text or image"),
    ("/v2/rerank", {"query": 3, "documents": ["a"]}, "query must be a string or an object, not a number"),
    ("/v2/rerank", {"query": "q"}, "documents is missing"),
    ("/v2/rerank", {"query": "q", "documents": "a"}, "documents must be an array, not a string"),
    ("/v2/rerank", {"query": "q", "documents": ["a", 7]}, "documents[1] must be a string or an object, not a number"),
    ("/v2/rerank", {"query": "q", "documents": ["a", {"title": "x"}]}, "documents[1] has no text, image or images"),
    ("/v1/rerank", {"query": "q", "documents": ["a", "b", "c", {"image": 4}]}, "documents[3].image must be a string"),
    ("/v1/rerank", {"query": "q", "documents": [{"text": None}]}, "documents[0].text must be a string, not null"),
    ("/v1/rerank", {"query": {"image": ""}, "documents": ["a"]}, "query.image is empty"),
    ("/v2/rerank", {**GOOD, "top_n": 0}, "top_n must be at least 1, got 0"),
    ("/v2/rerank", {**GOOD, "top_n": "3"}, "top_n must be an integer, not a string"),
    ("/v2/rerank", {**GOOD, "top_n": True}, "top_n must be an integer, not a boolean"),
    ("/v2/rerank", {**GOOD, "top_n": 2.5}, "top_n must be an integer, not a number"),
    ("/v2/rerank", {**GOOD, "return_documents": "yes"}, "return_documents must be a boolean, not a string"),
    ("/v2/rerank", {**GOOD, "model": 5}, "model must be a string, not a number"),
    ("/v2/rerank", {**GOOD, "max_tokens_per_doc": -1}, "max_tokens_per_doc must be at least 1"),
    (
        "/v2/rerank",
        {"query": "q", "documents": ["d"] * (MAX_DOCUMENTS + 1)},
        f"documents has {MAX_DOCUMENTS + 1} entries; this server accepts at most {MAX_DOCUMENTS}",
    ),
    ("/rerank", {"query": "q", "texts": ["a", {"text": "b"}]}, "texts[1] must be a string, not an object"),
    ("/rerank", {"query": {"text": "q"}, "texts": ["a"]}, "query must be a string, not an object"),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": 1}, "raw_scores must be a boolean, not a number"),
    ("/rerank", {"query": "q", "texts": ["x"] * (MAX_DOCUMENTS + 1)}, "texts has 9 entries"),
    ("/rerank", {"query": "q", "texts": ['{"image": 1}']}, "texts[0] (media string).image must be a string"),
]


@pytest.mark.parametrize("route, payload, message", INVALID, ids=[m for _, _, m in INVALID])
async def test_invalid_fields_are_422_naming_the_field(http, route, payload, message):
    reply = await http.post(route, payload)
    assert reply.status == 422, reply.raw
    error = reply.error()
    assert error["code"] == "validation" and error["message"].startswith(message), error
    await assert_still_serving(http)


@pytest.mark.parametrize(
    "image, message",
    [
        ("data:image/png;base64,AAAA", "documents[1].images[0]: "),
        ("missing.png", "documents[1].images[0]: "),
        ("../secret.png", "documents[1].images[0]: path '../secret.png' is outside the media root"),
        ("http://127.0.0.1:9/x.png", "documents[1].images[0]: "),
    ],
    ids=["undecodable", "missing", "outside-root", "private-url"],
)
async def test_unusable_images_are_422_naming_the_document(http, image, message):
    reply = await http.post("/v1/rerank", {"query": "q", "documents": ["a", {"image": image}]})
    assert reply.status == 422, reply.raw
    assert reply.error()["message"].startswith(message)
    await assert_still_serving(http)


async def test_declared_oversized_body_is_413_before_it_is_sent(http):
    # curl-style "Expect: 100-continue": the server answers from the headers; no body is ever sent.
    head = (
        f"POST /v2/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {MAX_BODY + 1}\r\nExpect: 100-continue\r\n\r\n"
    )
    response = await http.send_raw(head.encode())
    status_line, _, body = response.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413")
    error = json.loads(body.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "too_large"
    assert error["message"] == (
        f"the request body of {MAX_BODY + 1} bytes exceeds the limit of {MAX_BODY} bytes (--max-message-bytes)"
    )
    await assert_still_serving(http)


async def test_streamed_oversized_body_is_413(http):
    # Chunked: no declared length, so the limit is enforced while reading.
    chunk = b"x" * (MAX_BODY // 4)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    head = b"POST /v2/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    response = await http.send_raw(head + chunks)
    assert response.startswith(b"HTTP/1.1 413")
    assert b'"code":"too_large"' in response
    await assert_still_serving(http)


async def test_a_body_just_under_the_limit_is_accepted(http):
    payload = {**GOOD, "padding": "x" * (MAX_BODY - 200)}
    assert len(json.dumps(payload)) <= MAX_BODY
    reply = await http.post("/v2/rerank", payload)
    assert reply.status == 200, reply.raw


async def test_unknown_route_and_wrong_method(http):
    missing = await http.post("/v3/rerank", GOOD)
    assert missing.status == 404 and missing.error()["code"] == "not_found"
    wrong = await http.get("/v2/rerank")
    assert wrong.status == 405 and wrong.error()["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "POST"
    await assert_still_serving(http)


async def test_not_ready_is_503_while_health_stays_200(api_settings):
    server, http = await http_server_for(Runtime(api_settings))  # no engine: the model is "loading"
    try:
        assert (await http.get("/health")).status == 200
        ready = await http.get("/ready")
        assert ready.status == 503 and ready.error()["code"] == "unavailable"
        reply = await http.post("/v2/rerank", GOOD)
        assert reply.status == 503 and "still loading" in reply.error()["message"]
        assert (await http.get("/info")).json["ready"] is False
    finally:
        await server.stop()


async def test_full_queue_is_429_and_a_request_that_can_never_fit_is_413(api_settings, reranker):
    """A real full queue: the first request holds both admitted pairs while its image is being fetched."""
    from dataclasses import replace

    from sidecar.scheduler import Engine
    from tests.conftest import ImageServer, png_bytes

    settings = replace(api_settings, max_queued_pairs=2, allow_private_urls=True)
    runtime = Runtime(settings)
    runtime.engine = Engine(settings, reranker)
    server, http = await http_server_for(runtime)
    try:
        with ImageServer(png_bytes(40, 30, seed=9), held=True) as media:
            slow = {"query": "q", "documents": ["a", {"text": "b", "image": f"{media.url}/x.png"}]}
            holding = asyncio.ensure_future(http.post("/v2/rerank", slow))
            while runtime.engine._queued_pairs < 2:  # admitted, now waiting for its image
                await asyncio.sleep(0.02)
            full = await http.post("/v2/rerank", {"query": "q", "documents": ["one"]})
            assert full.status == 429 and full.error()["code"] == "overloaded"
            never = await http.post("/v2/rerank", {"query": "q", "documents": ["1", "2", "3"]})
            assert never.status == 413 and "--max-queued-pairs" in never.error()["message"]
            media.release.set()
            assert (await holding).status == 200
        assert (await http.post("/v2/rerank", {"query": "q", "documents": ["one"]})).status == 200
    finally:
        await server.stop()
        runtime.engine.close()


class BrokenRuntime(Runtime):
    """Fault injection for the HTTP layer's last-resort path: a bug outside the engine."""

    def ready_engine(self):
        raise RuntimeError("secret internal detail")


async def test_unexpected_errors_are_500_generic_and_logged(api_settings, caplog):
    server, http = await http_server_for(BrokenRuntime(api_settings))
    try:
        with caplog.at_level(logging.INFO):
            reply = await http.post("/v2/rerank", GOOD)
        assert reply.status == 500
        error = reply.error()
        assert error["code"] == "internal" and "secret" not in error["message"]
        lines = [r.getMessage() for r in caplog.records if r.name == "sidecar.requests"]
        assert any(line.startswith("HTTP /v2/rerank") and "status=internal" in line for line in lines)
        tracebacks = [r.exc_info[1] for r in caplog.records if r.exc_info]
        assert len(tracebacks) == 1 and str(tracebacks[0]) == "secret internal detail"  # logged once, in full
        assert (await http.get("/health")).status == 200
    finally:
        await server.stop()


async def test_a_client_that_disconnects_is_cancelled(http, caplog):
    documents = [{"text": f"document {i}", "image": "red.png"} for i in range(MAX_DOCUMENTS)]
    body = json.dumps({"query": "q", "documents": documents}).encode()
    head = f"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with caplog.at_level(logging.INFO, logger="sidecar.requests"):
        _, writer = await asyncio.open_connection("127.0.0.1", http.port)
        writer.write(head + body)
        await writer.drain()
        writer.close()
        for _ in range(200):
            if any("status=cancelled" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
    assert any("/v1/rerank" in r.getMessage() and "status=cancelled" in r.getMessage() for r in caplog.records)
    await assert_still_serving(http)
