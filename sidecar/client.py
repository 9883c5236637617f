"""Python clients for the sidecar: `RerankerClient` (blocking) and `AsyncRerankerClient` (asyncio).

Both take the same arguments and return the protobuf responses of `rerank.v1`. They retry calls
that fail with UNAVAILABLE (server starting, restarting or briefly overloaded at the transport)
with exponential backoff, and give every call a deadline.

    from sidecar.client import RerankerClient

    client = RerankerClient("127.0.0.1:50051")
    client.wait_until_ready(timeout=60)
    response = client.rerank("red running shoes", ["Blue sandals", {"text": "Red sneakers", "images": ["https://..."]}])
    for hit in response.results:
        print(hit.index, hit.score)

Items may be given as a string (text), bytes (one encoded image), a `pathlib.Path` (an image file read
on the client), a dict with `text`, `images`, `videos` (each a list of frames) and `id`, or a
`rerank.v1.Item`. Image strings are sent as references for the server to resolve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar._proto.rerank.v1 import reranker_pb2_grpc as pb_grpc

ItemLike = str | bytes | Path | dict | pb.Item
MediaLike = str | bytes | Path | pb.Media
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024


def to_media(value: MediaLike) -> pb.Media:
    """bytes -> inline data; Path -> file read here; str -> a reference (URL, data: URI or media-root path)."""
    if isinstance(value, pb.Media):
        return value
    if isinstance(value, bytes):
        return pb.Media(data=value)
    if isinstance(value, Path):
        return pb.Media(data=value.read_bytes())
    if isinstance(value, str):
        return pb.Media(uri=value)
    raise TypeError(f"cannot send {type(value).__name__} as an image; use bytes, a Path or a URI string")


def to_item(value: ItemLike) -> pb.Item:
    """Build a `rerank.v1.Item` from the accepted shorthand forms (see the module docstring)."""
    if isinstance(value, pb.Item):
        return value
    if isinstance(value, str):
        return pb.Item(text=value)
    if isinstance(value, (bytes, Path)):
        return pb.Item(images=[to_media(value)])
    if isinstance(value, dict):
        unknown = set(value) - {"id", "text", "images", "videos"}
        if unknown:
            raise ValueError(f"unknown item keys {sorted(unknown)}; use id, text, images, videos")
        return pb.Item(
            id=str(value.get("id", "")),
            text=value.get("text") or "",
            images=[to_media(m) for m in value.get("images") or []],
            videos=[_to_video(v) for v in value.get("videos") or []],
        )
    raise TypeError(f"cannot send {type(value).__name__} as an item")


def _to_video(value: Any) -> pb.Video:
    if isinstance(value, pb.Video):
        return value
    if isinstance(value, str):
        return pb.Video(uri=value)
    return pb.Video(frames=[to_media(f) for f in value])


def rerank_request(
    query: ItemLike, documents: Iterable[ItemLike], instruction: str | None, top_n: int, return_documents: bool
) -> pb.RerankRequest:
    return pb.RerankRequest(
        query=to_item(query),
        documents=[to_item(d) for d in documents],
        instruction=instruction or "",
        top_n=top_n,
        return_documents=return_documents,
    )


def _channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", max_message_bytes), ("grpc.max_receive_message_length", max_message_bytes)]


class RerankerClient:
    """Blocking client. Thread-safe; reuse one per process."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.target, self.timeout, self.retries, self.backoff = target, timeout, retries, backoff
        self._channel = grpc.insecure_channel(target, options=_channel_options(max_message_bytes))
        self._stub = pb_grpc.RerankerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def rerank(
        self,
        query: ItemLike,
        documents: Sequence[ItemLike],
        *,
        instruction: str | None = None,
        top_n: int = 0,
        return_documents: bool = False,
        timeout: float | None = None,
    ) -> pb.RerankResponse:
        """Score `documents` against `query`; results come back best first."""
        request = rerank_request(query, documents, instruction, top_n, return_documents)
        return self._call(self._stub.Rerank, request, timeout)

    def embed(
        self,
        inputs: Sequence[ItemLike],
        *,
        instruction: str | None = None,
        dimensions: int = 0,
        timeout: float | None = None,
    ) -> pb.EmbedResponse:
        """One vector per input, in input order (needs a server with --embedding-model)."""
        request = pb.EmbedRequest(
            inputs=[to_item(i) for i in inputs], instruction=instruction or "", dimensions=dimensions
        )
        return self._call(self._stub.Embed, request, timeout)

    def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        return self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Block until the server reports SERVING, or raise TimeoutError."""
        end = time.monotonic() + timeout
        while True:
            try:
                status = self._health.Check(health_pb2.HealthCheckRequest(), timeout=2.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"sidecar at {self.target} not ready after {timeout:.0f}s")
            time.sleep(0.2)

    def _call(self, method, request, timeout: float | None):
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=timeout or self.timeout)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.retries:
                    raise
                time.sleep(self.backoff * 2**attempt)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RerankerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRerankerClient:
    """asyncio client with the same methods as `RerankerClient`, as coroutines."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.target, self.timeout, self.retries, self.backoff = target, timeout, retries, backoff
        self._channel = grpc.aio.insecure_channel(target, options=_channel_options(max_message_bytes))
        self._stub = pb_grpc.RerankerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def rerank(
        self,
        query: ItemLike,
        documents: Sequence[ItemLike],
        *,
        instruction: str | None = None,
        top_n: int = 0,
        return_documents: bool = False,
        timeout: float | None = None,
    ) -> pb.RerankResponse:
        request = rerank_request(query, documents, instruction, top_n, return_documents)
        return await self._call(self._stub.Rerank, request, timeout)

    async def embed(
        self,
        inputs: Sequence[ItemLike],
        *,
        instruction: str | None = None,
        dimensions: int = 0,
        timeout: float | None = None,
    ) -> pb.EmbedResponse:
        request = pb.EmbedRequest(
            inputs=[to_item(i) for i in inputs], instruction=instruction or "", dimensions=dimensions
        )
        return await self._call(self._stub.Embed, request, timeout)

    async def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        return await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    async def wait_until_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while True:
            try:
                response = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"sidecar at {self.target} not ready after {timeout:.0f}s")
            await asyncio.sleep(0.2)

    async def _call(self, method, request, timeout: float | None):
        for attempt in range(self.retries + 1):
            try:
                return await method(request, timeout=timeout or self.timeout)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.retries:
                    raise
                await asyncio.sleep(self.backoff * 2**attempt)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRerankerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
