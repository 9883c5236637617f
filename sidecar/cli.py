"""`rerank-sidecar`: serve, and make tiny checkpoints for tests and offline runs."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import os
import sys
from pathlib import Path

from sidecar.apps import COMMANDS
from sidecar.logs import configure_logging
from sidecar.settings import API_KEY_ENV, Settings

# Help text per Settings field: what it does and its trade-off.
FLAG_HELP = {
    "model": "reranker checkpoint: hub id (e.g. Qwen/Qwen3-VL-Reranker-2B) or local directory",
    "adapter": "LoRA adapter directory written by `rerank-sidecar finetune`, merged into the --model weights at "
    "load (every fast path serves it unchanged; GetModelInfo and /info name it)",
    "embedding_model": "embedding checkpoint: hub id (e.g. Qwen/Qwen3-VL-Embedding-2B) or local directory",
    "host": "address to bind; keep 127.0.0.1 unless a network policy protects the port",
    "port": "gRPC port (0 picks a free one and logs it)",
    "http": "serve the HTTP face (Cohere /v1|v2/rerank, Jina /v1/rerank, TEI, vLLM and Weaviate /rerank, /health, "
    "/ready, /info) "
    "on --http-port beside gRPC; --no-http serves gRPC only",
    "http_port": "HTTP port on the same --host (0 picks a free one and logs it)",
    "device": "torch device: auto (CUDA if present, else CPU), cpu, cuda, cuda:1, ...",
    "dtype": "auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16",
    "attn_implementation": "attention kernel: sdpa (default), eager, or flash_attention_2 if installed",
    "compile_layers": "fuse each decoder layer's norms, rotary embedding, gate and residual adds into compiled "
    "kernels (torch.compile; checked against eager at start-up): auto (on when a GPU is used), on (fail to start "
    "if it cannot), off",
    "max_batch_tokens": "padded tokens per forward micro-batch; unset = auto: 16384 on CUDA (larger is faster "
    "and uses more memory), 1024 on CPU (small batches keep activations in cache)",
    "max_batch_rows": "pairs per forward micro-batch",
    "max_documents": "documents per request; more is INVALID_ARGUMENT",
    "max_queued_pairs": "pairs admitted and not yet scored; beyond this requests fail fast with RESOURCE_EXHAUSTED / "
    "HTTP 429 (a request with more documents than this can never fit: HTTP 413)",
    "prefix_reuse": "compute the shared system+instruction+query prefix once per request (--no-prefix-reuse to compare)",
    "prefix_reuse_min_saved_tokens": "reuse the prefix only if it saves this many tokens (prefix x (docs-1)); "
    "unset = auto: 0 on CPU, 2048 on CUDA",
    "feature_cache_mb": "document feature cache, device tier, MB per served model: a picture's vision-tower "
    "output is kept, keyed by a hash of its bytes, so a picture seen before skips decoding and the vision tower "
    "(scores unchanged); least recently used entries move to the host tier. On a CPU-only server both sizes "
    "together make one tier. 0 with --feature-cache-host-mb 0 turns the cache off",
    "feature_cache_host_mb": "document feature cache, host-memory tier, MB per served model: entries evicted from "
    "the device tier, copied back on their next use",
    "preprocess_workers": "threads that prepare requests (media, tokenisation) while the model computes",
    "media_workers": "threads, shared by all requests, that fetch, decode and resize a request's images in parallel",
    "events_db": "SQLite file of an experiment log (UBI queries and events): turns on POST /v1/events, where front "
    "ends record impressions, clicks and purchases on lists that search_and_rerank(experiment=...) logged into "
    "the same file; each answer comes after the events are durable (unset: the route answers 404)",
    "media_root": "directory under which local media paths may be read; unset disables local paths",
    "allow_private_urls": "allow media URLs on loopback/private/link-local addresses (off: SSRF protection)",
    "fetch_connect_timeout_s": "media URL connect timeout, seconds",
    "fetch_read_timeout_s": "media URL read timeout, seconds",
    "max_media_bytes": "largest image file accepted, bytes",
    "max_video_bytes": "largest video file accepted (Video.uri), bytes",
    "max_media_redirects": "redirects followed per media URL",
    "max_image_pixels": "largest image, decoded pixels (decompression-bomb guard; checked from the header, before "
    "decoding)",
    "max_frame_pixels": "largest video frame (listed frames and video files), decoded pixels; the reference's frame "
    "resizing keeps large intermediates, so a frame costs several times an image of the same size",
    "max_request_pixels": "decoded pixels of all images and video frames of one request (bounds its decoding time); "
    "more is RESOURCE_EXHAUSTED / HTTP 413",
    "max_decoding_pixels": "decoded pixels held in memory at once by all requests together; decodes wait for room "
    "(about 3 bytes per pixel; at least --max-image-pixels)",
    "max_pair_tokens": "tokens of one query-document pair after the reference's truncation (images, video frames and "
    "special tokens are never truncated and count); more is RESOURCE_EXHAUSTED / HTTP 413 naming the document",
    "max_request_tokens": "model-input tokens of one request (a shared query prefix counts once; image tokens are "
    "checked from the headers before decoding); more is RESOURCE_EXHAUSTED / HTTP 413",
    "max_chunks_per_document": "windows a document is split into when a request asks for chunking (long_documents "
    "chunk); text beyond them is not scored",
    "special_tokens_in_text": "plain (default): special-token strings such as <|im_end|> in queries and documents are "
    "text, so a document cannot forge prompt structure; reference: they are special tokens, as the official "
    "reference encodes them",
    "max_message_bytes": "largest gRPC request or HTTP request body, bytes; larger is RESOURCE_EXHAUSTED / HTTP 413",
    "drain_seconds": "on SIGTERM, seconds in-flight requests may take to finish; then they are answered "
    "UNAVAILABLE / 503 and the process exits",
    "reuse_port": "set SO_REUSEPORT on both faces so several processes can share --port and --http-port "
    "(off: a second server on a taken port fails to start)",
    "trusted_hosts": "HTTP Host header names accepted, comma-separated, any port (e.g. rerank.internal,10.0.0.5); "
    "'*' accepts any; unset = auto: localhost,127.0.0.1,::1 when --host is a loopback address (so a web page cannot "
    "reach it through DNS rebinding), any otherwise",
    "http_header_timeout_s": "seconds an HTTP connection has to send a request's headers (slow clients are "
    "disconnected)",
    "http_max_connections": "open HTTP connections at most; beyond, a new connection is answered 503 and closed",
    "metrics_port": "also serve Prometheus /metrics on this port of --host (it is always on the HTTP port)",
    "log_format": "text or json (one JSON object per line, one per request with its fields)",
    "otel": "OpenTelemetry tracing: one span per request with media/tokenization/queue/inference children, "
    "honouring W3C traceparent; exported over OTLP as the OTEL_* variables say (needs the [otel] extra)",
    "api_key": "require this API key (authorization: Bearer <key>) on every route and RPC; unset = read "
    "RERANK_SIDECAR_API_KEY; prefer --api-key-file or the variable: a flag's value shows in the process list",
    "api_key_file": "require one of the keys in this file (one per line, # comments; several keys let you rotate "
    "without downtime); re-read when it changes (checked every 10 s) and on SIGHUP; a bad file keeps the old keys",
    "public_probes": "with keys: HTTP /health and /ready answer without one (--no-public-probes protects them)",
    "public_grpc_health": "with keys: grpc.health.v1.Health answers without one (--no-public-grpc-health protects it)",
    "public_metrics": "with keys: GET /metrics answers without one (--no-public-metrics protects it)",
    "tls_cert": "PEM certificate chain: serve gRPC and HTTP over TLS (needs --tls-key); a renewed certificate is "
    "read when the files change and on SIGHUP",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA bundle: require mutual TLS, clients presenting a certificate this CA signed",
    "grpc_max_connection_age_s": "close each gRPC connection after this many seconds, in-flight calls finishing "
    "first; clients reconnect at once and re-resolve dns:/// targets, so replicas added since get calls too "
    "(unset: connections last)",
}


FLAG_CHOICES = {"compile_layers": ["auto", "on", "off"], "special_tokens_in_text": ["plain", "reference"]}


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        help_text = f"{FLAG_HELP[field.name]} (default: {default})"
        if field.type in ("bool", bool):
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif "Path" in str(field.type):
            parser.add_argument(flag, dest=field.name, type=Path, default=default, help=help_text)
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(field.type), str)
            choices = FLAG_CHOICES.get(field.name)
            parser.add_argument(flag, dest=field.name, type=kind, default=default, choices=choices, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerank-sidecar", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server (and the HTTP face)")
    _add_settings_flags(serve)

    tiny = commands.add_parser("make-tiny-model", help="write a random Qwen3-VL checkpoint (no hub access)")
    tiny.add_argument("directory", type=Path)
    tiny.add_argument(
        "--shape",
        default="tiny",
        choices=["tiny", "mini", "2b", "learnable"],
        help="tiny: tests; mini: CPU benchmarks; 2b: the real 2B shape; learnable: tiny with large random weights, "
        "which LoRA fine-tuning can teach a task in a few hundred CPU steps (default: tiny)",
    )
    tiny.add_argument(
        "--kind",
        default="reranker",
        choices=["reranker", "embedding"],
        help="which model family the checkpoint stands in for (same architecture)",
    )
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--no-weights",
        action="store_true",
        help="write config and processor only; the loader initialises random weights",
    )

    # The apps (sidecar/apps/): each module adds its own flags; none of them imports torch.
    for app in COMMANDS:
        importlib.import_module(app.module).add_arguments(commands.add_parser(app.name, help=app.help))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, getattr(args, "log_format", "text"))
    if args.command == "serve":
        from sidecar.server import exit_promptly, serve

        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
        values["api_key"] = values["api_key"] or os.environ.get(API_KEY_ENV) or None
        try:
            settings = Settings(**values)
        except ValueError as exc:
            sys.exit(f"rerank-sidecar serve: {exc}")
        asyncio.run(serve(settings))
        exit_promptly()
    elif args.command == "make-tiny-model":
        from sidecar.models.tiny import make_tiny_model

        path = make_tiny_model(
            args.directory, shape=args.shape, seed=args.seed, save_weights=not args.no_weights, kind=args.kind
        )
        print(f"wrote a random {args.shape} Qwen3-VL {args.kind} checkpoint to {path}")
    else:
        app = next(app for app in COMMANDS if app.name == args.command)
        sys.exit(importlib.import_module(app.module).run(args))


if __name__ == "__main__":
    main()
