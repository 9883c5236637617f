"""The gRPC face: rerank.v1.Reranker plus grpc.health.v1 and server reflection.

The Reranker methods are registered with no request deserializer: each receives the raw bytes and
parses them itself, so a message that does not parse (corrupt bytes, a string that is not UTF-8,
groups nested past protobuf's limit) is answered INVALID_ARGUMENT saying so, instead of gRPC's
UNKNOWN and a traceback. Every call is recorded once (`sidecar.api.observe`): one log line, its
metrics and, with `--otel`, its span, including calls that end cancelled or past their deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from sidecar import metrics
from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar.api.convert import embed_from_pb, rerank_from_pb, rerank_response, usage_to_pb
from sidecar.api.grpc_guard import DecodeGuard
from sidecar.api.observe import RequestRecord, close
from sidecar.api.status import GRPC_CODES
from sidecar.errors import Kind, SidecarError, invalid
from sidecar.models.embedder import truncate_dimensions

log = logging.getLogger("sidecar.requests")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Reranker"].full_name
DEADLINE_SLACK_S = 0.05  # a call cancelled this close to its deadline is logged as past it


def parse(message_type: type[Message], raw: bytes) -> Message:
    """`raw` as `message_type`, or a VALIDATION error that says why it does not parse."""
    try:
        return message_type.FromString(raw)
    except (DecodeError, RecursionError) as exc:
        reason = str(exc).rsplit(": ", 1)[-1] if isinstance(exc, DecodeError) else "nested too deeply"
        raise invalid(
            f"the request is not a valid {message_type.DESCRIPTOR.full_name} message ({reason}); "
            "send protobuf bytes with UTF-8 strings"
        ) from None


class RerankerService:
    """Validates requests, hands them to the engine, and turns engine errors into statuses."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime  # sidecar.server.Runtime: settings, engine (None until loaded), tracing

    async def rerank(self, raw: bytes, context: grpc.aio.ServicerContext) -> pb.RerankResponse:
        return await self._call("Rerank", "reranker", pb.RerankRequest, raw, context, self._rerank)

    async def embed(self, raw: bytes, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        return await self._call("Embed", "embedding", pb.EmbedRequest, raw, context, self._embed)

    async def get_model_info(self, raw: bytes, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        async def info(request, context, record) -> pb.ModelInfo:
            return self.runtime.model_info()

        return await self._call("GetModelInfo", "", pb.GetModelInfoRequest, raw, context, info)

    async def _rerank(self, request: pb.RerankRequest, context, record: RequestRecord) -> pb.RerankResponse:
        record.documents, record.top_n = len(request.documents), request.top_n
        engine = self.runtime.ready_engine()
        reranker = engine.require("reranker")
        parsed = rerank_from_pb(request, self.runtime.settings.max_documents)
        with metrics.in_engine():
            outcome = await self.runtime.run(engine.rerank(parsed, _deadline(context)))
        record.timings = outcome.timings
        return rerank_response(request, outcome.logits, outcome.timings, reranker.name, outcome.chunks)

    async def _embed(self, request: pb.EmbedRequest, context, record: RequestRecord) -> pb.EmbedResponse:
        record.documents = len(request.inputs)
        engine = self.runtime.ready_engine()
        embedder = engine.require("embedding")
        inputs = embed_from_pb(request, self.runtime.settings.max_documents, embedder.hidden_size)
        with metrics.in_engine():
            outcome = await self.runtime.run(engine.embed(inputs, request.instruction.strip(), _deadline(context)))
        record.timings = outcome.timings
        vectors = truncate_dimensions(outcome.vectors, request.dimensions)
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=v) for v in vectors.tolist()],
            model=embedder.name,
            usage=usage_to_pb(outcome.timings),
        )

    async def _call(
        self,
        method: str,
        model: str,
        message_type: type[Message],
        raw: bytes,
        context: grpc.aio.ServicerContext,
        handler: Callable[[Message, grpc.aio.ServicerContext, RequestRecord], Awaitable[Message]],
    ) -> Message:
        """Parse, run `handler`, and record the outcome; every failure becomes a status, never UNKNOWN."""
        record = RequestRecord(face="grpc", route=method, dialect="grpc", model=model)
        tracing = self.runtime.tracing
        if tracing is not None:
            record.trace_parent = tracing.parent(_trace_metadata(context))
        quiet = method == "GetModelInfo"
        deadline = _deadline(context)
        try:
            response = await handler(parse(message_type, raw), context, record)
        except SidecarError as exc:
            close(record, exc.kind.value, tracing)
            await context.abort(GRPC_CODES[exc.kind], exc.message)
        except asyncio.CancelledError:  # the caller cancelled, or its deadline passed
            # gRPC cancels the call when the deadline fires; its clock and ours differ by a few milliseconds.
            expired = deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK_S
            close(record, "deadline" if expired else "cancelled", tracing)
            raise
        except Exception:  # a bug: a generic INTERNAL for the caller, the traceback for the log
            log.exception("%s failed unexpectedly", method)
            close(record, "internal", tracing)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
        close(record, "ok", tracing, quiet=quiet)
        return response


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline as a time.monotonic() instant, if it set one."""
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None


def _trace_metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    wanted = ("traceparent", "tracestate", "baggage")
    return {key: value for key, value in (context.invocation_metadata() or ()) if key in wanted}


def _register(server: grpc.aio.Server, service: RerankerService) -> None:
    """The Reranker methods, taking raw bytes (no deserializer: `parse` runs inside the call)."""
    methods = {
        "Rerank": (service.rerank, pb.RerankResponse),
        "Embed": (service.embed, pb.EmbedResponse),
        "GetModelInfo": (service.get_model_info, pb.ModelInfo),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(call, response_serializer=response.SerializeToString)
        for name, (call, response) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


async def start_grpc_server(runtime, host: str, port: int) -> tuple[grpc.aio.Server, HealthServicer, int]:
    """Bind and start the gRPC server; health starts NOT_SERVING until the runtime marks itself ready."""
    settings = runtime.settings
    server = grpc.aio.server(
        interceptors=[DecodeGuard()],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # gRPC sets SO_REUSEPORT by default, so a second server on a taken port would start and share
            # it silently; only --reuse-port asks for that.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        ],
    )
    _register(server, RerankerService(runtime))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise SystemExit(f"cannot bind gRPC to {host}:{port} (in use? --reuse-port shares a port on purpose)")
    await server.start()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, health, bound


def not_ready() -> SidecarError:
    return SidecarError(Kind.UNAVAILABLE, "the model is still loading; retry shortly")
