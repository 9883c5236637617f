"""One real Engine (tiny random Qwen3-VL) behind both faces, in this process, on loopback ports.

The HTTP and gRPC servers run on the test session's event loop and share one Runtime, as
`sidecar.server.serve` runs them. HTTP calls go through urllib on a worker thread (the event loop
must stay free to serve them), or through raw asyncio streams where a test needs the wire itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from sidecar.api.grpc_server import start_grpc_server
from sidecar.api.http_app import start_http_server
from sidecar.client import AsyncRerankerClient
from sidecar.server import Runtime
from sidecar.settings import Settings
from tests.conftest import ServerProcess, png_bytes

MAX_DOCUMENTS = 8
MAX_BODY = 256 * 1024
IMAGE = png_bytes(80, 60, seed=30)
IMAGE_DATA_URI = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
IMAGE_BASE64 = base64.b64encode(IMAGE).decode()


@dataclass
class Reply:
    """One HTTP exchange: status, headers (lower-case names), raw body and its JSON (None if not JSON)."""

    status: int
    headers: dict[str, str]
    raw: bytes
    json: object

    def error(self) -> dict:
        """The `{"error": {"code", "message"}}` body, checked for shape."""
        assert isinstance(self.json, dict) and set(self.json) == {"error"}, self.raw
        assert set(self.json["error"]) == {"code", "message"}, self.raw
        return self.json["error"]


class Http:
    """A tiny HTTP client for one server (urllib on a thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    async def post(
        self, path: str, payload: object = None, *, raw: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        data = raw if raw is not None else json.dumps(payload).encode()
        headers = {"content-type": "application/json", **(headers or {})}
        request = urllib.request.Request(self.base + path, data=data, method="POST", headers=headers)
        return await asyncio.to_thread(_exchange, request)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return await asyncio.to_thread(_exchange, urllib.request.Request(self.base + path, headers=headers or {}))

    async def send_raw(self, data: bytes) -> bytes:
        """Write `data` on a fresh connection and read until the server closes or answers."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            return head + await asyncio.wait_for(reader.readexactly(length), 30)
        finally:
            writer.close()


class StalledServer:
    """A TCP server on loopback that accepts connections and never answers: a media URL that hangs."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/slow.png"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def stalled_url():
    server = StalledServer()
    yield server.url
    server.close()


def _exchange(request: urllib.request.Request) -> Reply:
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return Reply(status, {k.lower(): v for k, v in headers.items()}, raw, body)


@pytest.fixture(scope="session")
def api_settings(tiny_model_dir, media_root) -> Settings:
    return Settings(
        model=str(tiny_model_dir),
        media_root=media_root,
        max_documents=MAX_DOCUMENTS,
        max_message_bytes=MAX_BODY,
        fetch_read_timeout_s=2,
        drain_seconds=5,
    )


@pytest.fixture(scope="session")
def runtime(api_settings, reranker):
    from sidecar.scheduler import Engine

    runtime = Runtime(api_settings)
    runtime.engine = Engine(api_settings, reranker)
    yield runtime
    runtime.engine.close()


@pytest.fixture(scope="session")
async def http(runtime):
    server, port = await start_http_server(runtime, "127.0.0.1", 0)
    yield Http(port)
    await server.stop()


@pytest.fixture(scope="session")
async def grpc_target(runtime):
    """host:port of a gRPC face over the shared runtime."""
    server, _, port = await start_grpc_server(runtime, "127.0.0.1", 0)
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture(scope="session")
async def grpc_client(grpc_target):
    client = AsyncRerankerClient(grpc_target, timeout=60, retries=0)
    yield client
    await client.close()


async def http_server_for(runtime) -> tuple[object, Http]:
    """A second HTTP face over another runtime (not-ready, overloaded, broken, ...)."""
    server, port = await start_http_server(runtime, "127.0.0.1", 0)
    return server, Http(port)


@pytest.fixture(scope="session")
def fuzzed_server(tiny_model_dir, media_root, tmp_path_factory):
    """`rerank-sidecar serve` as a process for the fuzzers (both faces), with its HTTP port as `http_port`."""
    args = ["--model", str(tiny_model_dir), "--media-root", str(media_root), "--max-documents", "16"]
    log_path = tmp_path_factory.mktemp("fuzz") / "server.log"
    with ServerProcess([*args, "--max-message-bytes", str(1 << 20)], log_path) as proc:
        proc.http_port = int(re.search(r"HTTP listening on 127\.0\.0\.1:(\d+)", proc.log()).group(1))
        yield proc
