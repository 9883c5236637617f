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
            if engine.reranker is None:
                raise SidecarError(Kind.NOT_SERVED, "this server has no reranker model loaded (start it with --model)")
            parsed = rerank_from_pb(request, self.runtime.settings.max_documents)
            outcome = await engine.rerank(parsed, _deadline(context))
            response = rerank_response(request, outcome.logits, outcome.timings, engine.reranker.name)
        except SidecarError as exc:
            _log(len(request.documents), start, exc.kind.value)
            await context.abort(GRPC_CODES[exc.kind], exc.message)
        u = response.usage
        log.info(
            "Rerank docs=%d top_n=%d tokens=%d computed=%d images=%d queue_ms=%.1f pre_ms=%.1f infer_ms=%.1f "
            "total_ms=%.1f status=OK",
            len(request.documents),
            request.top_n,
            u.input_tokens,
            u.computed_tokens,
            u.images,
            u.queue_ms,
            u.preprocessing_ms,
            u.inference_ms,
            (time.perf_counter() - start) * 1000,
        )
        return response

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        start = time.perf_counter()
        try:
            engine = self.runtime.ready_engine()
            if engine.embedder is None:
                raise SidecarError(
                    Kind.NOT_SERVED, "this server has no embedding model loaded (start it with --embedding-model)"
                )
            inputs = embed_from_pb(request, self.runtime.settings.max_documents, engine.embedder.hidden_size)
            outcome = await engine.embed(inputs, request.instruction.strip(), _deadline(context))
        except SidecarError as exc:
            log.info(
                "Embed inputs=%d total_ms=%.1f status=%s",
                len(request.inputs),
                (time.perf_counter() - start) * 1000,
                exc.kind.value,
            )
            await context.abort(GRPC_CODES[exc.kind], exc.message)
        vectors = truncate_dimensions(outcome.vectors, request.dimensions)
        response = pb.EmbedResponse(
            embeddings=[pb.Embedding(values=v) for v in vectors.tolist()],
            model=engine.embedder.name,
            usage=usage_to_pb(outcome.timings),
        )
        u = response.usage
        log.info(
            "Embed inputs=%d tokens=%d images=%d queue_ms=%.1f pre_ms=%.1f infer_ms=%.1f total_ms=%.1f status=OK",
            len(request.inputs),
            u.input_tokens,
            u.images,
            u.queue_ms,
            u.preprocessing_ms,
            u.inference_ms,
            (time.perf_counter() - start) * 1000,
        )
        return response

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return self.runtime.model_info()


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline as a time.monotonic() instant, if it set one."""
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None


def _log(docs: int, start: float, status: str) -> None:
    log.info("Rerank docs=%d total_ms=%.1f status=%s", docs, (time.perf_counter() - start) * 1000, status)


async def start_grpc_server(runtime, host: str, port: int) -> tuple[grpc.aio.Server, HealthServicer, int]:
    """Bind and start the gRPC server; health starts NOT_SERVING until the runtime marks itself ready."""
    limit = runtime.settings.max_message_bytes
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    )
    pb_grpc.add_RerankerServicer_to_server(RerankerService(runtime), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise SystemExit(f"cannot bind gRPC to {host}:{port}")
    await server.start()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, health, bound


def not_ready() -> SidecarError:
    return SidecarError(Kind.UNAVAILABLE, "the model is still loading; retry shortly")
