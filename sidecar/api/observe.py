"""One record per request, shared by both faces: the log line, the metrics and the trace come from it.

A face opens a `RequestRecord` when a request arrives, fills in what it learns (the dialect, the
number of documents, the engine's timings) and closes it once with the outcome: "ok" or an error
code (the `Kind` value, or an HTTP-only code such as `invalid_json`). Closing writes the one log
line of the request (`--log-format text|json`), counts it in the Prometheus metrics and, with
`--otel`, exports its span with child spans for the engine's stages.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sidecar import metrics
from sidecar.types import Timings

log = logging.getLogger("sidecar.requests")


@dataclass
class RequestRecord:
    """What one request asked for, what it cost and how it ended."""

    face: str  # "grpc" or "http"
    route: str  # RPC name (Rerank, Embed, ...) or HTTP route path
    dialect: str = ""  # "grpc", or the HTTP dialect that parsed the body
    method: str = ""  # HTTP method ("" for gRPC)
    model: str = ""  # "reranker" or "embedding" once the request is dispatched to a model
    documents: int | None = None  # documents of a rerank, inputs of an embed, once known
    top_n: int | None = None
    timings: Timings | None = None  # the engine's account, for answered requests
    trace_parent: object = None  # the caller's trace context (tracing on), from traceparent
    status: str = ""  # "ok" or an error code, set once by close()
    started: float = field(default_factory=time.perf_counter)
    started_ns: int = field(default_factory=time.time_ns)  # wall clock, for the trace span
    trace_id: str = ""  # hex, once the span was exported

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def fields(self) -> dict[str, object]:
        """The structured form of the log line (the JSON log object's request fields)."""
        out: dict[str, object] = {"face": self.face, "route": self.route}
        if self.dialect and self.dialect != "grpc":
            out["dialect"] = self.dialect
        if self.documents is not None:
            out["inputs" if self.model == "embedding" else "documents"] = self.documents
        if self.top_n:
            out["top_n"] = self.top_n
        if self.timings is not None:
            t = self.timings
            out |= {
                "input_tokens": t.input_tokens,
                "computed_tokens": t.computed_tokens,
                "images": t.images,
                "video_frames": t.video_frames,
                "queue_ms": round(t.queue_ms, 1),
                "preprocess_ms": round(t.preprocessing_ms, 1),
                "inference_ms": round(t.inference_ms, 1),
            }
        out["total_ms"] = round(self.seconds() * 1000, 1)
        out["status"] = self.status
        if self.trace_id:
            out["trace_id"] = self.trace_id
        return out


def close(record: RequestRecord, status: str, tracing=None, *, quiet: bool = False) -> None:
    """End `record` with `status`: trace span, metrics, then the log line. Only the first call counts.

    `quiet` requests (probes, scrapes) are counted in the metrics but neither traced nor logged.
    """
    if record.status:
        return
    record.status = status
    if tracing is not None and not quiet:
        record.trace_id = tracing.export(record)
    metrics.request_answered(record.face, record.route, record.dialect, status, record.seconds())
    if status == "ok" and record.model and record.timings is not None:
        metrics.request_cost(record.model, record.documents or 0, record.timings)
    if not quiet:
        fields = record.fields()
        log.info(_text(record, fields), extra=fields)


def _text(record: RequestRecord, fields: dict[str, object]) -> str:
    """The text line: `Rerank docs=5 tokens=... status=ok` (gRPC), `HTTP /v2/rerank cohere docs=5 ...` (HTTP)."""
    head = record.route if record.face == "grpc" else f"HTTP {record.route} {record.dialect}".rstrip()
    if record.face == "http" and record.method not in ("", "POST"):
        head = f"HTTP {record.method} {record.route}"
    short = {"documents": "docs", "input_tokens": "tokens", "computed_tokens": "computed"}
    short |= {"preprocess_ms": "pre_ms", "inference_ms": "infer_ms"}
    skip = {"face", "route", "dialect", "video_frames"}
    parts = [f"{short.get(key, key)}={value}" for key, value in fields.items() if key not in skip]
    return " ".join([head, *parts])
