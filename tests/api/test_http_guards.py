"""What the HTTP face refuses before scoring: text that is not Unicode, JSON nested too deep, bodies a
web page could send, Host names a DNS-rebinding page would use; and 429s that say when to retry."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from sidecar.api.http_guard import host_name, is_json_media_type, trusted_host_names
from sidecar.server import Runtime
from tests.api.conftest import http_server_for
from tests.api.test_http_errors import GOOD, assert_still_serving

SURROGATES = [
    ("/v2/rerank", '{"query": "a\\ud800b", "documents": ["x"]}', "query contains a lone surrogate (\\ud800)"),
    ("/v2/rerank", '{"query": "q", "documents": ["x", {"text": "\\udfff"}]}', "documents[1].text contains"),
    ("/v1/rerank", '{"query": "q", "documents": ["x"], "instruction": "\\ud83d"}', "instruction contains"),
    ("/v2/rerank", '{"query": "q", "documents": ["x"], "\\udc00": 1}', "\\udc00 (a key) contains"),
    ("/rerank", '{"query": "q", "texts": ["ok", "bad \\ud800"]}', "texts[1] contains a lone surrogate"),
]


@pytest.mark.parametrize("route, body, message", SURROGATES, ids=[m for _, _, m in SURROGATES])
async def test_a_lone_surrogate_is_422_naming_the_field(http, route, body, message):
    reply = await http.post(route, raw=body.encode())
    assert reply.status == 422, reply.raw
    error = reply.error()
    assert error["code"] == "validation" and error["message"].startswith(message), error
    await assert_still_serving(http)


@pytest.mark.parametrize("depth", [33, 990, 5000, 100_000])
async def test_json_nested_too_deep_is_400(http, depth):
    nested = "[" * depth + "]" * depth
    reply = await http.post("/v2/rerank", raw=f'{{"query": "q", "documents": ["x"], "extra": {nested}}}'.encode())
    assert reply.status == 400, reply.raw
    error = reply.error()
    assert error["code"] == "invalid_json" and "nested more than 32 levels deep" in error["message"]
    await assert_still_serving(http)


async def test_json_nested_within_the_limit_is_accepted(http):
    nested = "[" * 30 + "]" * 30
    reply = await http.post("/v2/rerank", raw=f'{{"query": "q", "documents": ["x"], "extra": {nested}}}'.encode())
    assert reply.status == 200, reply.raw


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "json"]
)
async def test_a_post_that_is_not_declared_json_is_415(http, content_type):
    reply = await http.post("/v2/rerank", GOOD, headers={"content-type": content_type})
    assert reply.status == 415, reply.raw
    error = reply.error()
    assert error["code"] == "unsupported_media_type" and repr(content_type) in error["message"]
    await assert_still_serving(http)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/vnd.x+json"]
)
async def test_json_content_types_are_accepted(http, content_type):
    reply = await http.post("/v2/rerank", GOOD, headers={"content-type": content_type})
    assert reply.status == 200, reply.raw


def _raw_post(body: bytes, *extra: str) -> bytes:
    headers = "".join(f"{line}\r\n" for line in extra)
    return f"POST /rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


async def test_no_content_type_is_accepted_from_a_server_but_not_from_a_web_page(http):
    # Weaviate's reranker module posts JSON with no Content-Type; a browser adds Origin to a cross-origin POST.
    body = json.dumps({"query": "q", "texts": ["a", "b"]}).encode()
    assert (await http.send_raw(_raw_post(body))).startswith(b"HTTP/1.1 200")
    answer = await http.send_raw(_raw_post(body, "Origin: https://evil.example"))
    assert answer.startswith(b"HTTP/1.1 415") and b'"code":"unsupported_media_type"' in answer


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io", "[::2]:80"])
async def test_an_untrusted_host_is_421_on_every_route(http, host):
    for reply in (await http.post("/v2/rerank", GOOD, headers={"host": host}), await http.get("/info", {"host": host})):
        assert reply.status == 421, reply.raw
        error = reply.error()
        assert error["code"] == "untrusted_host" and "--trusted-hosts" in error["message"]
    await assert_still_serving(http)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8080", "127.0.0.1:1", "[::1]:8080", "[::1]"])
async def test_loopback_hosts_are_trusted_by_default(http, host):
    assert (await http.post("/v2/rerank", GOOD, headers={"host": host})).status == 200


async def test_trusted_hosts_can_be_named_or_opened(api_settings, runtime):
    for setting, host, status in [("rerank.internal", "rerank.internal:80", 200), ("rerank.internal", "x", 421)]:
        named = Runtime(replace(api_settings, trusted_hosts=setting))
        named.engine = runtime.engine
        server, http = await http_server_for(named)
        try:
            assert (await http.post("/v2/rerank", GOOD, headers={"host": host})).status == status
        finally:
            await server.stop()
    opened = Runtime(replace(api_settings, trusted_hosts="*"))
    opened.engine = runtime.engine
    server, http = await http_server_for(opened)
    try:
        assert (await http.post("/v2/rerank", GOOD, headers={"host": "anything.example"})).status == 200
    finally:
        await server.stop()


def test_trusted_hosts_default_follows_the_bind_address():
    assert trusted_host_names(None, "127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert trusted_host_names(None, "::1") == {"localhost", "127.0.0.1", "::1"}
    assert trusted_host_names(None, "0.0.0.0") is None  # a network bind: the network policy decides
    assert trusted_host_names(None, "10.1.2.3") is None
    assert trusted_host_names("A.example, [fd00::1]", "127.0.0.1") == {"a.example", "fd00::1"}
    assert host_name("[fd00::1]:8080") == "fd00::1" and host_name("Example.COM:80") == "example.com"
    assert is_json_media_type("application/problem+json") and not is_json_media_type("text/json-ish")


async def test_a_full_queue_is_429_with_retry_after(api_settings, reranker, stalled_url):
    from sidecar.scheduler import Engine

    settings = replace(api_settings, max_queued_pairs=2, allow_private_urls=True, fetch_read_timeout_s=30)
    runtime = Runtime(settings)
    runtime.engine = Engine(settings, reranker)
    server, http = await http_server_for(runtime)
    slow = asyncio.ensure_future(
        http.post("/v1/rerank", {"query": "q", "documents": [{"image": stalled_url}, "b"]})  # holds 2 pairs
    )
    try:
        await asyncio.sleep(1.0)  # the slow request is admitted, then waits on its image
        reply = await http.post("/v2/rerank", {"query": "q", "documents": ["one"]})
        assert reply.status == 429, reply.raw
        assert reply.error()["code"] == "overloaded" and reply.headers["retry-after"] == "1"
    finally:
        slow.cancel()
        await server.stop()
        runtime.engine.close()
