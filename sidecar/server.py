"""Process lifecycle: bind, load models in the background, warm up, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from grpc_health.v1 import health_pb2

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar.api.grpc_server import SERVICE_NAME, not_ready, start_grpc_server
from sidecar.api.http_app import start_http_server
from sidecar.settings import Settings

log = logging.getLogger("sidecar")


class Runtime:
    """What the API faces share: settings, and the engine once the models are loaded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = None

    def ready_engine(self):
        if self.engine is None:
            raise not_ready()
        return self.engine

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
    """Run until SIGTERM/SIGINT, then stop accepting, let in-flight requests finish, and exit."""
    if not settings.model and not settings.embedding_model:
        raise SystemExit("nothing to serve: pass --model and/or --embedding-model")
    if settings.adapter and not settings.model:
        raise SystemExit("--adapter applies to the reranker: pass --model too")
    runtime = Runtime(settings)
    server, health, port = await start_grpc_server(runtime, settings.host, settings.port)
    log.info("gRPC listening on %s:%d (health NOT_SERVING until the model is loaded)", settings.host, port)
    http = None
    if settings.http:
        http, http_port = await start_http_server(runtime, settings.host, settings.http_port)
        log.info("HTTP listening on %s:%d (/ready 503 until the model is loaded)", settings.host, http_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    load = asyncio.ensure_future(asyncio.to_thread(load_engine, settings))
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
            log.info("ready: serving on %s:%d", settings.host, port)
        await waiter
    log.info("shutting down: draining in-flight requests (up to %.0fs)", settings.drain_seconds)
    await health.enter_graceful_shutdown()
    stopping = [server.stop(grace=settings.drain_seconds)]
    if http is not None:
        stopping.append(http.stop())
    await asyncio.gather(*stopping)
    if runtime.engine is not None:
        runtime.engine.close()
    log.info("stopped")
    if failure is not None:
        raise SystemExit(f"rerank-sidecar: cannot load the models: {failure}")
