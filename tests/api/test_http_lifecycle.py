"""Starting and stopping the HTTP face inside a process that owns its own signal handling."""

from __future__ import annotations

import asyncio
import signal

import pytest
import uvicorn

from sidecar.api.http_app import start_http_server


async def test_http_server_leaves_sigterm_to_the_process(http):
    # sidecar.server drains both faces on SIGTERM; uvicorn must not take the signal for itself.
    handler = signal.getsignal(signal.SIGTERM)
    assert not isinstance(getattr(handler, "__self__", None), uvicorn.Server)
    assert (await http.get("/health")).status == 200


async def test_stop_closes_the_port(runtime):
    server, port = await start_http_server(runtime, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    await server.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_taken_port_is_a_clear_exit(runtime, http):
    with pytest.raises(SystemExit, match=f"cannot bind HTTP to 127.0.0.1:{http.port}"):
        await start_http_server(runtime, "127.0.0.1", http.port)
