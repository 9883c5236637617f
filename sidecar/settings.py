"""All server settings in one typed, frozen object. The CLI fills it; everything else reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

API_KEY_ENV = "RERANK_SIDECAR_API_KEY"  # one API key, read by `serve` and by the clients when none is passed


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Server configuration. Every field has a CLI flag of the same name (dashes for underscores)."""

    model: str | None = None  # reranker checkpoint: hub id or local directory
    adapter: str | None = None  # LoRA adapter directory (rerank-sidecar finetune) merged into --model at load
    embedding_model: str | None = None  # embedding checkpoint: hub id or local directory
    host: str = "127.0.0.1"
    port: int = 50051
    http: bool = True  # serve the HTTP face (Cohere/Jina/TEI-compatible JSON) beside gRPC
    http_port: int = 8080
    device: str = "auto"  # "auto" = first CUDA device if any, else CPU
    dtype: str = "auto"  # "auto" = bfloat16 on CUDA, float32 on CPU
    attn_implementation: str = "sdpa"
    # Decoder layers compiled into fused kernels (torch.compile): "auto", "on" or "off"; see models/fused.py.
    compile_layers: str = "auto"
    # Padded tokens per forward micro-batch. None = auto: 16384 on CUDA (large batches fill the GPU),
    # 1024 on CPU (a few pairs at a time: activations stay in cache; measured 27 vs 18 pairs/s).
    max_batch_tokens: int | None = None
    max_batch_rows: int = 256  # pairs per micro-batch
    max_documents: int = 1000  # documents per Rerank (inputs per Embed) request
    max_queued_pairs: int = 8192  # pairs admitted but not yet scored; beyond -> RESOURCE_EXHAUSTED
    prefix_reuse: bool = True  # compute the shared query prefix once per request
    # Reuse the prefix only when it saves at least this many tokens (shared length x (documents - 1)):
    # the separate prefix forward costs a fixed overhead that a GPU notices on small requests.
    # None = auto: 0 on CPU (every saved token counts), 2048 on CUDA.
    prefix_reuse_min_saved_tokens: int | None = None
    # Document feature cache (models/features.py): pictures' vision-tower output kept across requests,
    # MB per served model, on the device and in host memory (one tier of both sizes on a CPU); 0 and 0 = off.
    feature_cache_mb: int = 1024
    feature_cache_host_mb: int = 1024
    preprocess_workers: int = 2  # threads that prepare requests (media, tokenisation) while the model computes
    media_workers: int = 8  # threads that fetch and decode one request's images in parallel
    media_root: Path | None = None  # local media paths are allowed only under this directory
    allow_private_urls: bool = False  # allow http(s) media URLs on loopback/private/link-local addresses
    fetch_connect_timeout_s: float = 3.0
    fetch_read_timeout_s: float = 10.0
    max_media_bytes: int = 20 * 1024 * 1024  # per image or video frame
    max_video_bytes: int = 200 * 1024 * 1024  # per video file
    max_media_redirects: int = 3
    max_image_pixels: int = 64_000_000  # decoded pixels per image: decompression-bomb guard
    max_frame_pixels: int = 1 << 24  # decoded pixels per video frame (4096 x 4096; frames cost more memory)
    max_request_pixels: int = 1 << 28  # decoded pixels per request, all images and video frames together
    max_decoding_pixels: int = 1 << 27  # decoded pixels held at once by all requests (memory bound)
    max_pair_tokens: int = 32768  # tokens of one query-document pair after truncation (media and specials count)
    # Model-input tokens per request (a shared query prefix counts once): room for --max-documents (1000)
    # documents of ~1,000 tokens, the model card's 1000 candidates; pictures are bounded by pixels too.
    max_request_tokens: int = 1 << 20
    max_chunks_per_document: int = 16  # windows a chunked document is split into at most
    max_message_bytes: int = 64 * 1024 * 1024  # largest gRPC request or HTTP request body
    drain_seconds: float = 30.0  # on SIGTERM, how long in-flight requests may finish
    reuse_port: bool = False  # SO_REUSEPORT on both faces: several processes may share --port/--http-port
    # POST /v1/events writes front ends' UBI events into this SQLite experiment log (None: the route is off).
    events_db: Path | None = None
    # HTTP Host names accepted (comma-separated; "*" = any). None = auto: loopback names for a loopback
    # --host (a web page cannot reach the port through DNS rebinding), any for other binds.
    trusted_hosts: str | None = None
    http_header_timeout_s: float = 10.0  # a connection must send a request's headers within this time
    http_max_connections: int = 1000  # open HTTP connections; beyond, new ones get 503 and are closed
    metrics_port: int | None = None  # also serve /metrics on this port (same --host); None = HTTP port only
    log_format: str = "text"  # "text" or "json" (one object per line)
    otel: bool = False  # OpenTelemetry tracing (the [otel] extra), configured by the OTEL_* variables
    # Special-token strings in user text: "plain" encodes them as text (a document cannot forge prompt
    # structure); "reference" encodes them as special tokens, exactly as the official reference does.
    special_tokens_in_text: str = "plain"
    # API keys (sidecar/api/auth.py): with either set, every route and RPC needs `authorization: Bearer <key>`.
    api_key: str | None = field(default=None, repr=False)  # one key; also read from API_KEY_ENV
    api_key_file: Path | None = None  # keys one per line (several for rotation); re-read on SIGHUP
    public_probes: bool = True  # HTTP /health and /ready answer without a key
    public_grpc_health: bool = True  # grpc.health.v1.Health answers without a key
    public_metrics: bool = True  # GET /metrics answers without a key
    # TLS (sidecar/api/tls.py): both faces on the same certificate; a client CA turns on mutual TLS.
    tls_cert: Path | None = None  # PEM certificate chain
    tls_key: Path | None = None  # PEM private key
    tls_client_ca: Path | None = None  # PEM CA bundle; clients must present a certificate it signed
    # Close each gRPC connection after this long (in-flight calls finish first): clients reconnect and
    # re-resolve dns:/// targets, which is how they find replicas added since. None = never.
    grpc_max_connection_age_s: float | None = None

    def __post_init__(self) -> None:
        if self.special_tokens_in_text not in ("plain", "reference"):
            raise ValueError("--special-tokens-in-text must be plain or reference")
        if self.max_decoding_pixels < self.max_image_pixels:
            raise ValueError(
                f"--max-decoding-pixels ({self.max_decoding_pixels}) must be at least --max-image-pixels "
                f"({self.max_image_pixels}), or the largest allowed image could never be decoded"
            )
        for name in (
            "max_documents",
            "max_queued_pairs",
            "max_pair_tokens",
            "max_request_tokens",
            "max_request_pixels",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("feature_cache_mb", "feature_cache_host_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be 0 (off) or more")
