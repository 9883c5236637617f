"""Prometheus metrics: every series the service exports, and the one function that records each event.

The series live in prometheus-client's default registry, beside its process collector
(`process_resident_memory_bytes`, CPU seconds, open file descriptors). Names follow Prometheus
conventions (`_seconds`, `_bytes`, `_total`, base units); the label `model` is "reranker" or
"embedding". The engine and the API faces call the small functions below at the points where
things happen; nothing else in the service touches prometheus-client.

Scraped at `GET /metrics` on the HTTP port, and with `--metrics-port` on a port of its own.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from sidecar.types import Timings

T = TypeVar("T")
prometheus_client.disable_created_metrics()  # no `_created` series beside each counter and histogram

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
# Seconds: from a few milliseconds (one small CPU request) to a minute (a full queue on a CPU).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)

REQUESTS = Counter(
    "rerank_sidecar_requests",
    "Requests answered, by face, route (RPC name or HTTP path), dialect and status (ok or the error code).",
    ["face", "route", "dialect", "status"],
)
REQUEST_DURATION = Histogram(
    "rerank_sidecar_request_duration_seconds",
    "Total server time per request, from the first byte read to the answer.",
    ["face", "route"],
    buckets=LATENCY_BUCKETS,
)
QUEUE_DURATION = Histogram(
    "rerank_sidecar_queue_duration_seconds",
    "Per request: time prepared and waiting for its first forward pass.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
PREPROCESS_DURATION = Histogram(
    "rerank_sidecar_preprocess_duration_seconds",
    "Per request: media fetching and decoding plus tokenisation.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "rerank_sidecar_inference_duration_seconds",
    "Per request: time in the forward passes that held its rows.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
REQUEST_DOCUMENTS = Histogram(
    "rerank_sidecar_request_documents",
    "Documents per rerank request, inputs per embed request.",
    ["model"],
    buckets=COUNT_BUCKETS,
)
BATCH_ROWS = Histogram(
    "rerank_sidecar_batch_rows", "Rows (pairs or inputs) per forward pass.", ["model"], buckets=ROW_BUCKETS
)
BATCH_PADDED_TOKENS = Histogram(
    "rerank_sidecar_batch_padded_tokens",
    "Tokens per forward pass, padding included (rows x longest row).",
    ["model"],
    buckets=TOKEN_BUCKETS,
)
BATCH_TOKENS = Counter(
    "rerank_sidecar_batch_tokens",
    "Tokens through forward passes: kind=real or padding (batch fill = real / (real + padding)).",
    ["model", "kind"],
)
ROWS = Counter("rerank_sidecar_rows", "Pairs scored / inputs embedded.", ["model"])
INPUT_TOKENS = Counter("rerank_sidecar_input_tokens", "Prompt tokens of answered requests.", ["model"])
COMPUTED_TOKENS = Counter(
    "rerank_sidecar_computed_tokens", "Tokens actually computed (fewer than input with prefix reuse).", ["model"]
)
PREFIX_SAVED_TOKENS = Counter(
    "rerank_sidecar_prefix_saved_tokens", "Tokens not computed thanks to query-prefix reuse.", ["model"]
)
QUEUE_REQUESTS = Gauge("rerank_sidecar_queue_requests", "Requests handed to the engine and not finished.")
QUEUE_PAIRS = Gauge("rerank_sidecar_queue_pairs", "Pairs (or embed inputs) admitted and not finished.")
QUEUE_PAIRS_LIMIT = Gauge("rerank_sidecar_queue_pairs_limit", "Admission limit on queued pairs (--max-queued-pairs).")
MEDIA_FETCHES = Counter(
    "rerank_sidecar_media_fetches",
    "Images and video files resolved: source=url|data|path|inline, outcome=ok|error|too_large|refused.",
    ["source", "outcome"],
)
MODEL_LOAD_SECONDS = Gauge("rerank_sidecar_model_load_seconds", "Time to load each model at start-up.", ["model"])
READY = Gauge("rerank_sidecar_ready", "1 while the server answers requests (models loaded, not draining).")
MODEL_INFO = Gauge("rerank_sidecar_model_info", "The loaded models (value 1).", ["model", "name", "device", "dtype"])
AUTH_FAILURES = Counter("rerank_sidecar_auth_failures", "Requests refused for a missing or wrong API key.", ["face"])


class _DeviceMemory(Collector):
    """CUDA memory allocated per device, read at scrape time; nothing on a CPU-only process."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        torch = sys.modules.get("torch")  # never import torch just to be scraped
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return []
        family = GaugeMetricFamily(
            "rerank_sidecar_device_memory_bytes", "Device memory allocated by tensors (CUDA).", labels=["device"]
        )
        for index in range(torch.cuda.device_count()):
            family.add_metric([f"cuda:{index}"], torch.cuda.memory_allocated(index))
        return [family]


REGISTRY.register(_DeviceMemory())


class _FeatureCaches(Collector):
    """The document feature caches (models/features.py) summed over the served models, read at scrape
    time; nothing before a model is loaded."""

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        features = sys.modules.get("sidecar.models.features")  # loaded with the models, never just to be scraped
        if features is None or not features.live_caches():
            return []
        totals = features.totals()
        hits = CounterMetricFamily(
            "rerank_sidecar_feature_cache_hits", "Pictures served from the feature cache, by tier.", labels=["tier"]
        )
        for tier, count in totals.hits.items():
            hits.add_metric([tier], count)
        misses = CounterMetricFamily(
            "rerank_sidecar_feature_cache_misses", "Pictures looked up in the feature cache and decoded."
        )
        misses.add_metric([], totals.misses)
        size = GaugeMetricFamily(
            "rerank_sidecar_feature_cache_bytes", "Bytes the feature cache holds, by tier.", labels=["tier"]
        )
        for tier, count in totals.bytes.items():
            size.add_metric([tier], count)
        return [hits, misses, size]


REGISTRY.register(_FeatureCaches())


# ---- the events ----------------------------------------------------------------------------------


def request_answered(face: str, route: str, dialect: str, status: str, seconds: float) -> None:
    """One request of either face has been answered (or given up on) with `status`."""
    REQUESTS.labels(face, route, dialect, status).inc()
    REQUEST_DURATION.labels(face, route).observe(seconds)


def request_cost(model: str, documents: int, timings: Timings) -> None:
    """What one answered request cost, from the engine's timings."""
    QUEUE_DURATION.labels(model).observe(timings.queue_ms / 1000)
    PREPROCESS_DURATION.labels(model).observe(timings.preprocessing_ms / 1000)
    INFERENCE_DURATION.labels(model).observe(timings.inference_ms / 1000)
    REQUEST_DOCUMENTS.labels(model).observe(documents)
    INPUT_TOKENS.labels(model).inc(timings.input_tokens)
    COMPUTED_TOKENS.labels(model).inc(timings.computed_tokens)
    PREFIX_SAVED_TOKENS.labels(model).inc(max(timings.input_tokens - timings.computed_tokens, 0))


def batch_forward(model: str, row_lengths: Sequence[int]) -> None:
    """One forward pass over rows of these token lengths (padded to the longest)."""
    if not row_lengths:
        return
    padded = len(row_lengths) * max(row_lengths)
    real = sum(row_lengths)
    BATCH_ROWS.labels(model).observe(len(row_lengths))
    BATCH_PADDED_TOKENS.labels(model).observe(padded)
    BATCH_TOKENS.labels(model, "real").inc(real)
    BATCH_TOKENS.labels(model, "padding").inc(padded - real)
    ROWS.labels(model).inc(len(row_lengths))


def queue_admitted(pairs: int) -> None:
    """The engine admitted `pairs` more rows (a request, or the windows its long documents became)."""
    QUEUE_PAIRS.inc(pairs)


def queue_released(pairs: int) -> None:
    """An admitted request's `pairs` rows finished, failed or were cancelled."""
    QUEUE_PAIRS.dec(pairs)


@contextlib.contextmanager
def in_engine() -> Iterator[None]:
    """Counts a request in `rerank_sidecar_queue_requests` while the engine holds it."""
    QUEUE_REQUESTS.inc()
    try:
        yield
    finally:
        QUEUE_REQUESTS.dec()


# Refusals by policy (SSRF guard, media root), told apart from other failures by their message.
_REFUSALS = ("non-public address", "outside the media root", "local paths are disabled")


def media_resolved(uri: str | None, inline: bool, error: BaseException | None = None) -> None:
    """One image, frame or video reference resolved (error=None) or failed with `error`."""
    if inline:
        source = "inline"
    elif uri and uri.startswith("data:"):
        source = "data"
    elif uri and uri.split("://", 1)[0].lower() in ("http", "https"):
        source = "url"
    else:
        source = "path"
    kind = getattr(getattr(error, "kind", None), "value", "")
    if error is None:
        outcome = "ok"
    elif kind in ("cancelled", "deadline"):
        return  # the request went away: nothing is known about the reference
    elif kind == "too_large":
        outcome = "too_large"
    elif any(reason in str(error) for reason in _REFUSALS):
        outcome = "refused"
    else:
        outcome = "error"
    MEDIA_FETCHES.labels(source, outcome).inc()


def counted_fetch(fetch: Callable[..., T], uri: str | None, inline: bool) -> Callable[..., T]:
    """`fetch` (which resolves one media reference) counted in `rerank_sidecar_media_fetches_total`."""

    def counted(*args, **kwargs) -> T:
        try:
            result = fetch(*args, **kwargs)
        except BaseException as exc:
            media_resolved(uri, inline, exc)
            raise
        media_resolved(uri, inline)
        return result

    return counted


def model_loaded(model: str, name: str, device: str, dtype: str, seconds: float) -> None:
    MODEL_LOAD_SECONDS.labels(model).set(seconds)
    MODEL_INFO.labels(model, name, device, dtype).set(1)


def serving(ready: bool, queue_limit: int | None = None) -> None:
    """The server became ready (models loaded and warm) or stopped being so (draining)."""
    READY.set(1 if ready else 0)
    if queue_limit is not None:
        QUEUE_PAIRS_LIMIT.set(queue_limit)


def auth_failed(face: str) -> None:
    AUTH_FAILURES.labels(face).inc()


# ---- exposition ----------------------------------------------------------------------------------


def exposition() -> bytes:
    """The text exposition format of every series (what `GET /metrics` returns)."""
    return prometheus_client.generate_latest(REGISTRY)


class MetricsServer:
    """`--metrics-port`: prometheus-client's own HTTP server on a daemon thread."""

    def __init__(self, host: str, port: int) -> None:
        self._server, self._thread = prometheus_client.start_http_server(port, addr=host, registry=REGISTRY)
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
