"""Process lifecycle: bind, load models in the background, warm up, serve, drain on SIGTERM.

Shutdown keeps one promise: the process is gone about `--drain-seconds` after SIGTERM. Both
faces stop accepting at once and in-flight requests may finish until the drain time ends; what is
still running then is answered UNAVAILABLE / 503 in the faces' own format, the servers close, and
the process exits, without waiting for worker threads that are still busy (a media fetch, a
forward pass): they cannot be interrupted, and nobody waits for their results any more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable
from typing import TypeVar

from grpc_health.v1 import health_pb2

from sidecar import metrics
from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar.api.grpc_server import SERVICE_NAME, not_ready, start_grpc_server
from sidecar.api.http_app import start_http_server
from sidecar.api.waiting import unless
from sidecar.errors import Kind, SidecarError
from sidecar.settings import Settings
from sidecar.tracing import Tracing, start_tracing

log = logging.getLogger("sidecar")
T = TypeVar("T")


class Runtime:
    """What the API faces share: settings, the engine once the models are loaded, tracing, the drain."""

    def __init__(self, settings: Settings, tracing: Tracing | None = None) -> None:
        self.settings = settings
        self.engine = None
        self.tracing = tracing
        self.draining = False  # SIGTERM received: /ready answers 503
        self._drain_over = asyncio.Event()  # the drain time has ended: in-flight work is answered UNAVAILABLE

    def ready_engine(self):
        if self.engine is None:
            raise not_ready()
        return self.engine

    async def run(self, work: Awaitable[T]) -> T:
        """Await a request's work, unless the drain time ends first: then it is cancelled, UNAVAILABLE."""
        return await unless(
            work,
            self._drain_over.wait(),
            SidecarError(
                Kind.UNAVAILABLE,
                f"the server is shutting down and the drain time ({self.settings.drain_seconds:g}s) ended before "
                "this request finished; retry on another replica",
            ),
        )

    def end_drain(self) -> None:
        """Answer everything still in flight UNAVAILABLE (called when --drain-seconds have passed)."""
        self._drain_over.set()

    def model_info(self) -> pb.ModelInfo:
        info = pb.ModelInfo(
            max_documents=self.settings.max_documents,
            max_batch_tokens=self.engine.max_batch_tokens if self.engine else (self.settings.max_batch_tokens or 0),
            max_message_bytes=self.settings.max_message_bytes,
            prefix_reuse=self.settings.prefix_reuse,
        )
        if self.engine is None:
            return info
        if self.engine.reranker is not None:
            info.model = self.engine.reranker.name
        for model in (self.engine.reranker, self.engine.embedder):
            if model is not None:
                info.models.append(
                    pb.LoadedModel(
                        name=model.name,
                        kind=model.kind,
                        dimension=model.hidden_size,
                        max_length=model.max_length,
                        dtype=str(model.dtype).removeprefix("torch."),
                        device=str(model.device),
                        adapter=model.adapter,
                    )
                )
        return info


def load_engine(settings: Settings):
    """Load the configured models (slow: imports torch, reads weights) and warm them up."""
    from sidecar.models import fused
    from sidecar.models.embedder import EmbedderModel
    from sidecar.models.loading import load_pretrained, merged_adapter, resolve_device, resolve_dtype
    from sidecar.models.reranker import RerankerModel
    from sidecar.models.template_check import template_difference
    from sidecar.scheduler import Engine

    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    reranker = embedder = None
    if settings.model:
        start = time.perf_counter()
        log.info("loading reranker %s on %s (%s)", settings.model, device, dtype)
        model, processor = load_pretrained(
            settings.model, device, dtype, settings.attn_implementation, adapter=settings.adapter
        )
        reranker = RerankerModel(
            settings.model, model, processor, special_tokens_in_text=settings.special_tokens_in_text
        )
        reranker.adapter = settings.adapter or merged_adapter(settings.model)
        log.info("reranker loaded in %.1fs", time.perf_counter() - start)
        metrics.model_loaded("reranker", settings.model, str(device), str(dtype), time.perf_counter() - start)
    if settings.embedding_model:
        start = time.perf_counter()
        log.info("loading embedding model %s on %s (%s)", settings.embedding_model, device, dtype)
        base, processor = load_pretrained(
            settings.embedding_model, device, dtype, settings.attn_implementation, with_lm_head=False
        )
        embedder = EmbedderModel(
            settings.embedding_model, base, processor, special_tokens_in_text=settings.special_tokens_in_text
        )
        log.info("embedding model loaded in %.1fs", time.perf_counter() - start)
        metrics.model_loaded(
            "embedding", settings.embedding_model, str(device), str(dtype), time.perf_counter() - start
        )
    compile_layers = fused.wanted(settings.compile_layers, device)
    for loaded in (model for model in (reranker, embedder) if model is not None):
        if difference := template_difference(loaded.processor, loaded.kind):
            log.warning("%s %s: scores may drift from the reference's: %s", loaded.kind, loaded.name, difference)
        if compile_layers:
            start = time.perf_counter()
            reason = loaded.compile_layers()
            if reason is None:
                log.info("%s: decoder layers compiled in %.1fs", loaded.kind, time.perf_counter() - start)
            elif settings.compile_layers == "on":
                raise SystemExit(f"--compile-layers on: {loaded.kind} {loaded.name}: {reason}")
            else:
                log.warning("%s: decoder layers stay eager: %s", loaded.kind, reason)
    return Engine(settings, reranker, embedder)


async def warm_up(engine) -> None:
    """One tiny request through the whole path, so the first user request is not the slow one."""
    from sidecar.types import ItemInput, RerankInput

    if engine.reranker is not None:
        await engine.rerank(RerankInput(ItemInput(text="warm-up"), (ItemInput(text="warm-up"),)))
    if engine.embedder is not None:
        await engine.embed((ItemInput(text="warm-up"),))


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting, drain in-flight requests, and return."""
    if not settings.model and not settings.embedding_model:
        raise SystemExit("nothing to serve: pass --model and/or --embedding-model")
    if settings.adapter and not settings.model:
        raise SystemExit("--adapter applies to the reranker: pass --model too")
    runtime = Runtime(settings, start_tracing(settings.otel))
    server, health, port = await start_grpc_server(runtime, settings.host, settings.port)
    log.info("gRPC listening on %s:%d (health NOT_SERVING until the model is loaded)", settings.host, port)
    http = scrape = None
    if settings.http:
        http, http_port = await start_http_server(runtime, settings.host, settings.http_port)
        log.info("HTTP listening on %s:%d (/ready 503 until the model is loaded)", settings.host, http_port)
    if settings.metrics_port is not None:
        scrape = metrics.MetricsServer(settings.host, settings.metrics_port)
        log.info("metrics on http://%s:%d/metrics", settings.host, scrape.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    load = _in_daemon_thread(load_engine, settings)
    waiter = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({load, waiter}, return_when=asyncio.FIRST_COMPLETED)
    failure: BaseException | None = None
    if load in done:
        try:
            engine = load.result()
        except (Exception, SystemExit) as exc:  # a model that cannot load stops the process cleanly
            failure = exc
            log.error("cannot load the models: %s", exc)
            stop.set()
        else:
            await warm_up(engine)
            runtime.engine = engine  # requests and /ready on either face see the engine only once warm
            for service in ("", SERVICE_NAME):
                await health.set(service, health_pb2.HealthCheckResponse.SERVING)
            metrics.serving(True, settings.max_queued_pairs)
            log.info("ready: serving on %s:%d", settings.host, port)
        await waiter
    await _drain(runtime, server, health, http, settings.drain_seconds)
    if scrape is not None:
        scrape.stop()
    if runtime.tracing is not None:
        runtime.tracing.shutdown()
    log.info("stopped")
    if failure is not None:
        raise SystemExit(f"rerank-sidecar: cannot load the models: {failure}")


async def _drain(runtime: Runtime, server, health, http, drain_seconds: float) -> None:
    """Stop accepting on both faces; at the drain time's end answer the rest UNAVAILABLE; close."""
    log.info("shutting down: draining in-flight requests (up to %gs)", drain_seconds)
    runtime.draining = True
    metrics.serving(False)
    await health.enter_graceful_shutdown()
    expiry = asyncio.get_running_loop().call_later(drain_seconds, runtime.end_drain)
    # The grace periods are backstops: at drain_seconds the faces answer what is left themselves.
    stopping = [server.stop(grace=drain_seconds + 2)]
    if http is not None:
        stopping.append(http.stop())
    await asyncio.gather(*stopping)
    expiry.cancel()
    if runtime.engine is not None:
        # Closing joins the model thread; a forward pass still running must not hold the exit.
        await asyncio.wait({_in_daemon_thread(runtime.engine.close)}, timeout=1.0)


def _in_daemon_thread(function, *args) -> asyncio.Future:
    """Run `function` on a daemon thread (the process may exit while it runs); its result as a future."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=run, name=getattr(function, "__name__", "worker"), daemon=True).start()
    return future


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def exit_promptly(code: int = 0) -> None:
    """Exit now, even when worker threads are still busy: after a drain nobody waits for their results.

    Python would otherwise join every non-daemon thread (the engine's thread pools) at exit, and a
    thread blocked in a media fetch or a forward pass would hold the process past --drain-seconds.
    """
    busy = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not busy:
        return
    log.info("exiting with %d worker threads still busy (%s)", len(busy), ", ".join(sorted(set(busy))))
    logging.shutdown()
    os._exit(code)
