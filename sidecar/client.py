"""Python clients for the sidecar: `RerankerClient` (blocking) and `AsyncRerankerClient` (asyncio).

Both take the same arguments and return the protobuf responses of `rerank.v1`. Every call has a
deadline. Calls are balanced over every address the target resolves to (gRPC `round_robin`), and
a call that fails with UNAVAILABLE (a replica down, restarting or still loading) is retried with
backoff on the next one by gRPC's retry policy (`sidecar.channel`).

    from sidecar.client import RerankerClient

    client = RerankerClient("127.0.0.1:50051")
    client.wait_until_ready(timeout=60)
    response = client.rerank("red running shoes", ["Blue sandals", {"text": "Red sneakers", "images": ["https://..."]}])
    for hit in response.results:
        print(hit.index, hit.score)

    # several replicas, TLS with a private CA, an API key:
    client = RerankerClient("dns:///rerank-sidecar-grpc.search.svc:50051", tls=True,
                            root_certificates="ca.pem", api_key="...")

Items may be given as a string (text), bytes (one encoded image), a `pathlib.Path` (an image file read
on the client), a dict with `text`, `images`, `videos` (each a list of frames) and `id`, or a
`rerank.v1.Item`. Image strings are sent as references for the server to resolve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar._proto.rerank.v1 import reranker_pb2_grpc as pb_grpc
from sidecar.channel import ChannelSpec, PemLike, channel_spec, diagnose

ItemLike = str | bytes | Path | dict | pb.Item
LongDocuments = Literal["truncate", "chunk"]
MediaLike = str | bytes | Path | pb.Media
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


LONG_DOCUMENTS = {"truncate": pb.LONG_DOCUMENTS_TRUNCATE, "chunk": pb.LONG_DOCUMENTS_CHUNK}


def rerank_request(
    query: ItemLike,
    documents: Iterable[ItemLike],
    instruction: str | None,
    top_n: int,
    return_documents: bool,
    long_documents: str = "truncate",
    max_tokens_per_doc: int = 0,
    chunk_overlap: int = 0,
) -> pb.RerankRequest:
    if long_documents not in LONG_DOCUMENTS:
        raise ValueError(f"long_documents must be 'truncate' or 'chunk', not {long_documents!r}")
    return pb.RerankRequest(
        query=to_item(query),
        documents=[to_item(d) for d in documents],
        instruction=instruction or "",
        top_n=top_n,
        return_documents=return_documents,
        long_documents=LONG_DOCUMENTS[long_documents],
        max_tokens_per_doc=max_tokens_per_doc,
        chunk_overlap=chunk_overlap,
    )


class _ClientBase:
    """What both clients share: the channel's spec and the requests they build."""

    def __init__(
        self,
        target: str | Sequence[str] = "127.0.0.1:50051",
        *,
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: PemLike | None = None,
        client_cert: PemLike | None = None,
        client_key: PemLike | None = None,
        server_name: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        """Connect lazily to `target`.

        Args:
            target: `host:port`, `dns:///name:port` (every address of the name: a Kubernetes headless
                Service), any gRPC target string, or a list of `ip:port` replicas. Calls are balanced
                over the addresses (round_robin).
            api_key: sent as `authorization: Bearer <key>`; None reads RERANK_SIDECAR_API_KEY, "" sends none.
            tls: use TLS with the system's root certificates (implied by the next three arguments).
            root_certificates: PEM CA bundle (bytes, PEM text, or a path) that signed the server's certificate.
            client_cert, client_key: PEM certificate chain and key for mutual TLS (bytes, PEM text or paths).
            server_name: the name the server's certificate must carry, when it is not the target's host.
            timeout: default deadline per call, seconds (retries included).
            retries: times a call that fails with UNAVAILABLE is retried, with exponential backoff from
                `backoff` seconds (gRPC allows at most 4).
            max_message_bytes: largest message sent or received.
        """
        self.spec: ChannelSpec = channel_spec(
            target, api_key=api_key, tls=tls, root_certificates=root_certificates, client_cert=client_cert,
            client_key=client_key, server_name=server_name, retries=retries, backoff=backoff,
            max_message_bytes=max_message_bytes,
        )  # fmt: skip
        self.target, self.timeout, self.retries = self.spec.target, timeout, retries

        self._channel = self._connect()
        self._stub = pb_grpc.RerankerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _connect(self) -> Any:
        """The channel (blocking or asyncio) built from `self.spec`."""
        raise NotImplementedError

    @staticmethod
    def _embed_request(inputs: Sequence[ItemLike], instruction: str | None, dimensions: int) -> pb.EmbedRequest:
        return pb.EmbedRequest(
            inputs=[to_item(i) for i in inputs], instruction=instruction or "", dimensions=dimensions
        )

    def _not_ready(self, timeout: float, last: grpc.RpcError | None) -> TimeoutError:
        """The TimeoutError of wait_until_ready, with the last failure's code and details."""
        reason = f" (last health check: {last.code().name}: {last.details()})" if last is not None else ""
        return TimeoutError(f"sidecar at {self.target} not ready after {timeout:.0f}s{reason}")


class RerankerClient(_ClientBase):
    """Blocking client. Thread-safe; reuse one per process."""

    def _connect(self) -> grpc.Channel:
        return self.spec.channel()

    def rerank(
        self,
        query: ItemLike,
        documents: Sequence[ItemLike],
        *,
        instruction: str | None = None,
        top_n: int = 0,
        return_documents: bool = False,
        long_documents: LongDocuments = "truncate",
        max_tokens_per_doc: int = 0,
        chunk_overlap: int = 0,
        timeout: float | None = None,
    ) -> pb.RerankResponse:
        """Score `documents` against `query`; results come back best first.

        Args:
            query, documents: text, an image (bytes or Path), a dict {id?, text?, images?, videos?},
                or a `pb.Item`.
            instruction: the reranker's task instruction (default: the model's).
            top_n: results returned (0: all).
            return_documents: copy each document into its result.
            long_documents: "truncate" (the reference rule: text past the model's length is cut) or
                "chunk": each document's text is scored in overlapping windows and keeps its best
                window's score; `result.chunk` says which window (its span of the text).
            max_tokens_per_doc: text tokens per document ("truncate") or per window ("chunk");
                0 = what fits beside the query.
            chunk_overlap: tokens consecutive windows share ("chunk" only; 0 = an eighth of the window).
            timeout: deadline, seconds (default: the client's).
        """
        request = rerank_request(
            query, documents, instruction, top_n, return_documents, long_documents, max_tokens_per_doc, chunk_overlap
        )
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
        return self._call(self._stub.Embed, self._embed_request(inputs, instruction, dimensions), timeout)

    def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        return self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Block until the server (one replica, behind several targets) reports SERVING, or raise TimeoutError."""
        end, last = time.monotonic() + timeout, None
        while True:
            try:
                request = health_pb2.HealthCheckRequest()
                if self._health.Check(request, timeout=2.0, metadata=self.spec.metadata).status == SERVING:
                    return
            except grpc.RpcError as exc:
                last = exc
            if time.monotonic() > end:
                raise self._not_ready(timeout, last and diagnose(last, self.spec))
            time.sleep(0.2)

    def _call(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self.spec.call_metadata())
        except grpc.RpcError as exc:
            raise diagnose(exc, self.spec) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RerankerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRerankerClient(_ClientBase):
    """asyncio client with the same arguments and methods as `RerankerClient`, as coroutines."""

    def _connect(self) -> grpc.aio.Channel:
        return self.spec.aio_channel()

    async def rerank(
        self,
        query: ItemLike,
        documents: Sequence[ItemLike],
        *,
        instruction: str | None = None,
        top_n: int = 0,
        return_documents: bool = False,
        long_documents: LongDocuments = "truncate",
        max_tokens_per_doc: int = 0,
        chunk_overlap: int = 0,
        timeout: float | None = None,
    ) -> pb.RerankResponse:
        request = rerank_request(
            query, documents, instruction, top_n, return_documents, long_documents, max_tokens_per_doc, chunk_overlap
        )
        return await self._call(self._stub.Rerank, request, timeout)

    async def embed(
        self,
        inputs: Sequence[ItemLike],
        *,
        instruction: str | None = None,
        dimensions: int = 0,
        timeout: float | None = None,
    ) -> pb.EmbedResponse:
        return await self._call(self._stub.Embed, self._embed_request(inputs, instruction, dimensions), timeout)

    async def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        return await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    async def wait_until_ready(self, timeout: float = 60.0) -> None:
        end, last = time.monotonic() + timeout, None
        while True:
            try:
                request = health_pb2.HealthCheckRequest()
                response = await self._health.Check(request, timeout=2.0, metadata=self.spec.metadata)
                if response.status == SERVING:
                    return
            except grpc.RpcError as exc:
                last = exc
            if time.monotonic() > end:
                raise self._not_ready(timeout, last and await asyncio.to_thread(diagnose, last, self.spec))
            await asyncio.sleep(0.2)

    async def _call(self, method, request, timeout: float | None):
        try:
            return await method(request, timeout=timeout or self.timeout, metadata=self.spec.call_metadata())
        except grpc.RpcError as exc:
            raise await asyncio.to_thread(diagnose, exc, self.spec) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRerankerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


SERVING = health_pb2.HealthCheckResponse.SERVING
