"""gRPC calls that end without an answer still leave their one log line: cancelled, or past the deadline."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import grpc
import pytest

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar._proto.rerank.v1 import reranker_pb2_grpc as pb_grpc
from sidecar.api.grpc_server import start_grpc_server
from sidecar.server import Runtime


@pytest.fixture
async def slow_stub(api_settings, reranker):
    """A gRPC face whose media fetches may reach loopback, so a stalled URL keeps a request busy."""
    from sidecar.scheduler import Engine

    settings = replace(api_settings, allow_private_urls=True, fetch_read_timeout_s=30)
    slow = Runtime(settings)
    slow.engine = Engine(settings, reranker)
    server, _, port = await start_grpc_server(slow, "127.0.0.1", 0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.RerankerStub(channel)
    await server.stop(None)
    slow.engine.close()


def _request(url: str) -> pb.RerankRequest:
    return pb.RerankRequest(query=pb.Item(text="q"), documents=[pb.Item(images=[pb.Media(uri=url)])])


async def _line(caplog, status: str) -> str:
    for _ in range(100):
        lines = [r.getMessage() for r in caplog.records if r.name == "sidecar.requests"]
        found = [line for line in lines if line.startswith("Rerank ") and f"status={status}" in line]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no Rerank line with status={status}: {lines}")


async def test_a_call_past_its_deadline_is_logged_as_deadline(slow_stub, stalled_url, caplog):
    with caplog.at_level(logging.INFO, logger="sidecar.requests"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await slow_stub.Rerank(_request(stalled_url), timeout=1.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        line = await _line(caplog, "deadline")
    assert "docs=1" in line and "total_ms=" in line


async def test_a_cancelled_call_is_logged_as_cancelled(slow_stub, stalled_url, caplog):
    with caplog.at_level(logging.INFO, logger="sidecar.requests"):
        call = slow_stub.Rerank(_request(stalled_url), timeout=60)
        await asyncio.sleep(0.5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        line = await _line(caplog, "cancelled")
    assert "docs=1" in line
