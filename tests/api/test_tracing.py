"""`--otel`: each request is a span, the child of the caller's W3C traceparent, with the engine's stages as
children; read back from the real OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import logging
import sys

import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar._proto.rerank.v1 import reranker_pb2_grpc as pb_grpc
from sidecar.api.grpc_server import start_grpc_server
from sidecar.server import Runtime
from sidecar.tracing import INSTALL_HINT, start_tracing
from tests.api.conftest import http_server_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
async def traced(api_settings, runtime):
    """Both faces over a runtime that traces into memory; yields (exporter, http, grpc stub)."""
    exporter = InMemorySpanExporter()
    traced = Runtime(api_settings, start_tracing(True, SimpleSpanProcessor(exporter)))
    traced.engine = runtime.engine
    http_server, http = await http_server_for(traced)
    grpc_server, _, port = await start_grpc_server(traced, "127.0.0.1", 0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield exporter, http, pb_grpc.RerankerStub(channel)
    await grpc_server.stop(None)
    await http_server.stop()
    traced.tracing.shutdown()


def _check_request_span(spans, name: str):
    """The request span, checked as the caller's child with its stage spans inside it; returns it."""
    (request,) = [span for span in spans if span.name == name]
    assert request.kind == SpanKind.SERVER
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert format(request.parent.span_id, "016x") == CALLER_SPAN and request.parent.is_remote
    stages = {
        span.name: span for span in spans if span.parent is not None and span.parent.span_id == request.context.span_id
    }
    assert {"tokenization", "queue", "inference"} <= set(stages) <= {"media", "tokenization", "queue", "inference"}
    for stage in stages.values():
        assert request.start_time <= stage.start_time <= stage.end_time <= request.end_time
    assert stages["tokenization"].end_time <= stages["queue"].start_time
    assert stages["queue"].end_time <= stages["inference"].start_time
    return request


async def test_an_http_request_continues_the_callers_trace(traced, caplog):
    exporter, http, _ = traced
    with caplog.at_level(logging.INFO, logger="sidecar.requests"):
        reply = await http.post(
            "/v2/rerank", {"query": "q", "documents": ["a", "b"]}, headers={"traceparent": TRACEPARENT}
        )
    assert reply.status == 200
    request = _check_request_span(exporter.get_finished_spans(), "POST /v2/rerank")
    assert request.attributes["http.route"] == "/v2/rerank" and request.attributes["rerank.documents"] == 2
    assert request.attributes["rerank.dialect"] == "cohere-jina-v2" and request.attributes["rerank.status"] == "ok"
    assert any(f"trace_id={TRACE_ID}" in r.getMessage() for r in caplog.records)


async def test_a_grpc_request_continues_the_callers_trace(traced):
    exporter, _, stub = traced
    request = pb.RerankRequest(query=pb.Item(text="q"), documents=[pb.Item(text="a")] * 3)
    await stub.Rerank(request, metadata=[("traceparent", TRACEPARENT)], timeout=60)
    span = _check_request_span(exporter.get_finished_spans(), "rerank.v1.Reranker/Rerank")
    assert span.attributes["rpc.system"] == "grpc" and span.attributes["rpc.method"] == "Rerank"
    assert span.attributes["rerank.documents"] == 3 and span.attributes["rerank.input_tokens"] > 0


async def test_without_traceparent_a_request_starts_its_own_trace_and_failures_are_marked(traced):
    exporter, http, stub = traced
    assert (await http.post("/v2/rerank", {"query": "q"})).status == 422
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and span.attributes["rerank.status"] == "validation"
    assert span.status.status_code == StatusCode.UNSET  # a caller's mistake is not a server error
    assert (await http.get("/health")).status == 200
    assert len(exporter.get_finished_spans()) == 1  # probes are not traced


def test_without_the_extra_otel_fails_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if the [otel] extra were missing
    with pytest.raises(SystemExit, match=r"pip install 'rerank-sidecar\[otel\]'"):
        start_tracing(True)
    assert "rerank-sidecar[otel]" in INSTALL_HINT
    assert start_tracing(False) is None
