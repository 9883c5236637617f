"""Slow and idle HTTP connections, over real sockets: headers have a deadline, connections a cap."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from sidecar.server import Runtime
from tests.api.conftest import http_server_for
from tests.api.test_http_errors import assert_still_serving

HEADER_TIMEOUT = 1.0
MAX_CONNECTIONS = 20
PARTIAL_HEAD = b"POST /v2/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.fixture
async def guarded_http(api_settings, runtime):
    limited = Runtime(replace(api_settings, http_header_timeout_s=HEADER_TIMEOUT, http_max_connections=MAX_CONNECTIONS))
    limited.engine = runtime.engine
    server, http = await http_server_for(limited)
    yield http
    await server.stop()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before closing; fails if it keeps the connection open longer."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_a_connection_stalled_mid_header_is_closed(guarded_http):
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded_http.port)
    writer.write(PARTIAL_HEAD)
    started = time.monotonic()
    assert await _closed_within(reader, 10) == b""
    assert HEADER_TIMEOUT - 0.2 <= time.monotonic() - started < HEADER_TIMEOUT + 5
    writer.close()
    await assert_still_serving(guarded_http)


async def test_a_header_trickled_byte_by_byte_is_closed_at_the_deadline(guarded_http):
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded_http.port)
    started = time.monotonic()
    for byte in PARTIAL_HEAD:  # one byte every 0.1 s: each read alone would reset an idle timer
        if reader.at_eof():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.1)
        if time.monotonic() - started > HEADER_TIMEOUT + 5:
            break
    assert await _closed_within(reader, 10) == b""
    assert time.monotonic() - started < HEADER_TIMEOUT + 5
    writer.close()


async def test_a_keep_alive_connection_stalled_in_its_next_request_is_closed(guarded_http):
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded_http.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")
    await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
    writer.write(b"GET /health HTTP/1.1\r\nHost: 1")  # half of the next request's head, then nothing
    assert await _closed_within(reader, 10) == b""
    writer.close()


async def test_connections_past_the_cap_get_503_and_stalled_ones_are_freed(guarded_http):
    stalled = []
    for _ in range(MAX_CONNECTIONS):
        reader, writer = await asyncio.open_connection("127.0.0.1", guarded_http.port)
        writer.write(PARTIAL_HEAD)
        stalled.append((reader, writer))
    await asyncio.sleep(0.2)
    extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", guarded_http.port)
    refused = await _closed_within(extra_reader, 5)
    assert refused.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in refused
    assert b'"code": "unavailable"' in refused and b"open connections" in refused
    extra_writer.close()
    for reader, writer in stalled:  # the header deadline frees every stalled slot
        assert await _closed_within(reader, HEADER_TIMEOUT + 10) == b""
        writer.close()
    await assert_still_serving(guarded_http)
