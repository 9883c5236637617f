"""--grpc-max-connection-age-s: the server closes each connection after that long, letting its calls finish,
and the client reconnects by itself (re-resolving its target: how replicas added since get calls). Calls
made across several such closings all succeed, with retries off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import grpc

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar._proto.rerank.v1 import reranker_pb2_grpc as pb_grpc
from sidecar.api.grpc_server import start_grpc_server
from sidecar.channel import channel_spec
from sidecar.server import Runtime


async def connections_over(settings, reranker, seconds: float) -> tuple[int, int]:
    """(calls answered, times the channel became READY) for back-to-back Rerank calls during `seconds`."""
    from sidecar.scheduler import Engine

    runtime = Runtime(settings)
    runtime.engine = Engine(settings, reranker)
    server, _, port = await start_grpc_server(runtime, "127.0.0.1", 0)
    spec = channel_spec(
        f"127.0.0.1:{port}", api_key="", tls=False, root_certificates=None, client_cert=None, client_key=None,
        server_name=None, retries=0, backoff=0.1, max_message_bytes=1 << 20,
    )  # fmt: skip
    channel = spec.aio_channel()
    ready = 0

    async def watch() -> None:
        nonlocal ready
        state = channel.get_state(try_to_connect=True)
        while True:
            await channel.wait_for_state_change(state)
            state = channel.get_state()
            ready += state == grpc.ChannelConnectivity.READY

    watcher = asyncio.ensure_future(watch())
    stub, answered = pb_grpc.RerankerStub(channel), 0
    request = pb.RerankRequest(query=pb.Item(text="red"), documents=[pb.Item(text="a red bicycle")])
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            assert len((await stub.Rerank(request, timeout=30)).results) == 1
            answered += 1
    finally:
        watcher.cancel()
        await channel.close()
        await server.stop(None)
        runtime.engine.close()
    return answered, ready


async def test_connections_are_recycled_without_failing_calls(api_settings, reranker):
    aged = dataclasses.replace(api_settings, grpc_max_connection_age_s=0.5, drain_seconds=5)
    answered, connections = await connections_over(aged, reranker, 4.0)
    assert answered >= 10 and connections >= 3, (answered, connections)
    answered, connections = await connections_over(api_settings, reranker, 2.0)  # the default: one connection
    assert answered >= 5 and connections == 1, (answered, connections)
