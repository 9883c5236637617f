"""The gRPC face: rerank.v1.Reranker plus grpc.health.v1 and server reflection."""

from __future__ import annotations

import logging
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar._proto.rerank.v1 import reranker_pb2_grpc as pb_grpc
from sidecar.api.auth import ApiKeyInterceptor
from sidecar.api.convert import embed_from_pb, rerank_from_pb, rerank_response, usage_to_pb
from sidecar.api.status import GRPC_CODES
from sidecar.errors import Kind, SidecarError
from sidecar.models.embedder import truncate_dimensions

log = logging.getLogger("sidecar.requests")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Reranker"].full_name


class RerankerService(pb_grpc.RerankerServicer):
    """Validates requests, hands them to the engine, and turns engine errors into statuses."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime  # sidecar.server.Runtime: settings, engine (None until loaded)

    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext) -> pb.RerankResponse:
        start = time.perf_counter()
        try:
            engine = self.runtime.ready_engine()
            reranker = engine.require("reranker")
            parsed = rerank_from_pb(request, self.runtime.settings.max_documents)
            outcome = await engine.rerank(parsed, _deadline(context))
            response = rerank_response(request, outcome.logits, outcome.timings, reranker.name, outcome.chunks)
        except SidecarError as exc:
            _log("Rerank", f"docs={len(request.documents)}", start, exc.kind.value)
            await context.abort(GRPC_CODES[exc.kind], exc.message)
        _log("Rerank", f"docs={len(request.documents)} top_n={request.top_n}", start, "OK", response.usage)
        return response

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        start = time.perf_counter()
        try:
            engine = self.runtime.ready_engine()
            embedder = engine.require("embedding")
            inputs = embed_from_pb(request, self.runtime.settings.max_documents, embedder.hidden_size)
            outcome = await engine.embed(inputs, request.instruction.strip(), _deadline(context))
        except SidecarError as exc:
            _log("Embed", f"inputs={len(request.inputs)}", start, exc.kind.value)
            await context.abort(GRPC_CODES[exc.kind], exc.message)
        vectors = truncate_dimensions(outcome.vectors, request.dimensions)
        response = pb.EmbedResponse(
            embeddings=[pb.Embedding(values=v) for v in vectors.tolist()],
            model=embedder.name,
            usage=usage_to_pb(outcome.timings),
        )
        _log("Embed", f"inputs={len(request.inputs)}", start, "OK", response.usage)
        return response

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return self.runtime.model_info()


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline as a time.monotonic() instant, if it set one."""
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None


def _log(method: str, size: str, start: float, status: str, usage: pb.Usage | None = None) -> None:
    """The one log line per request: what was asked, what it cost, how it ended."""
    cost = ""
    if usage is not None:
        cost = (
            f" tokens={usage.input_tokens} computed={usage.computed_tokens} images={usage.images}"
            f" queue_ms={usage.queue_ms:.1f} pre_ms={usage.preprocessing_ms:.1f} infer_ms={usage.inference_ms:.1f}"
        )
    log.info("%s %s%s total_ms=%.1f status=%s", method, size, cost, (time.perf_counter() - start) * 1000, status)


async def start_grpc_server(runtime, host: str, port: int) -> tuple[grpc.aio.Server, HealthServicer, int]:
    """Bind and start the gRPC server; health starts NOT_SERVING until the runtime marks itself ready."""
    limit = runtime.settings.max_message_bytes
    options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    if (age := runtime.settings.grpc_max_connection_age_s) is not None:
        grace = runtime.settings.drain_seconds
        options += [
            ("grpc.max_connection_age_ms", int(age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(grace * 1000)),
        ]
    server = grpc.aio.server(
        options=options,
        interceptors=[ApiKeyInterceptor(runtime.api_keys)] if runtime.api_keys.enabled else None,
    )
    pb_grpc.add_RerankerServicer_to_server(RerankerService(runtime), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    address, tls = f"{host}:{port}", runtime.tls
    bound = server.add_secure_port(address, tls.grpc_credentials()) if tls else server.add_insecure_port(address)
    if not bound:
        raise SystemExit(f"cannot bind gRPC to {host}:{port}")
    await server.start()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, health, bound


def not_ready() -> SidecarError:
    return SidecarError(Kind.UNAVAILABLE, "the model is still loading; retry shortly")
