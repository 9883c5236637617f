"""OpenTelemetry tracing (`serve --otel`, the optional `[otel]` extra).

Each Rerank/Embed request becomes a server span named as OpenTelemetry's conventions ask
(`rerank.v1.Reranker/Rerank`, `POST /v2/rerank`), the child of the caller's span when the request
carries a W3C `traceparent` (gRPC metadata or HTTP header), so a search can be followed from the
connector into the sidecar. Its children are the engine's stages (`media`, `tokenization`,
`queue`, `inference`) with the wall-clock times the engine recorded in
`Timings.stages`: the spans are built after the request ends, so no trace context has to cross
the engine's threads.

Exporting is configured by the standard environment variables: `OTEL_EXPORTER_OTLP_ENDPOINT`
(or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, default `http://localhost:4317`), `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_SERVICE_NAME` (default `rerank-sidecar`), `OTEL_TRACES_SAMPLER` (+ `_ARG`), `OTEL_PROPAGATORS`
(default `tracecontext,baggage`); spans go out over OTLP/gRPC in batches.
"""

from __future__ import annotations

from collections.abc import Mapping

INSTALL_HINT = "--otel needs OpenTelemetry: pip install 'rerank-sidecar[otel]'"
# Statuses that mean the server failed (a caller's mistake is not a server span error).
_SERVER_FAULTS = frozenset({"backend", "internal", "unavailable", "deadline"})


class Tracing:
    """Builds request spans from finished `RequestRecord`s on one tracer provider."""

    def __init__(self, provider) -> None:
        from opentelemetry import propagate, trace

        self._provider = provider
        self._tracer = provider.get_tracer("rerank-sidecar")
        self._propagate = propagate
        self._trace = trace

    def parent(self, carrier: Mapping[str, str]):
        """The caller's context from `traceparent`/`tracestate` (lower-case keys), or None."""
        if "traceparent" not in carrier:
            return None
        return self._propagate.extract(carrier)

    def export(self, record) -> str:
        """Emit the span of a finished `sidecar.api.observe.RequestRecord`; returns its trace id (hex)."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        end = record.started_ns + int(record.seconds() * 1e9)
        if record.face == "grpc":
            name = f"rerank.v1.Reranker/{record.route}"
            attributes = {"rpc.system": "grpc", "rpc.service": "rerank.v1.Reranker", "rpc.method": record.route}
        else:
            name = f"{record.method} {record.route}"
            attributes = {"http.request.method": record.method, "http.route": record.route}
        for key, value in record.fields().items():
            if key not in ("face", "route", "total_ms", "trace_id"):
                attributes[f"rerank.{key}"] = value
        span = self._tracer.start_span(
            name, context=record.trace_parent, kind=SpanKind.SERVER, attributes=attributes, start_time=record.started_ns
        )
        if record.status in _SERVER_FAULTS:
            span.set_status(Status(StatusCode.ERROR, record.status))
        stages = record.timings.stages if record.timings is not None else {}
        child_context = self._trace.set_span_in_context(span)
        for stage, (start_ns, end_ns) in sorted(stages.items(), key=lambda item: item[1]):
            self._tracer.start_span(stage, context=child_context, start_time=start_ns).end(end_time=end_ns)
        span.end(end_time=end)
        return format(span.get_span_context().trace_id, "032x")

    def shutdown(self) -> None:
        """Flush the spans still batched, then stop exporting."""
        self._provider.shutdown()


def start_tracing(enabled: bool, processor=None) -> Tracing | None:
    """A `Tracing` when enabled; `processor` replaces the OTLP batch exporter (tests use an in-memory one)."""
    if not enabled:
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "rerank-sidecar"}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    if processor is None:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise SystemExit(INSTALL_HINT) from None
        processor = BatchSpanProcessor(OTLPSpanExporter())
    provider.add_span_processor(processor)
    return Tracing(provider)
