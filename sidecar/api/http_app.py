"""The HTTP face: Cohere-, Jina- and TEI-compatible rerank routes over the same engine as gRPC.

Routes (bodies are described in `sidecar.api.dialects`; the OpenAPI document in `sidecar.api.openapi`):

    POST /v2/rerank   Cohere v2                      POST /rerank   TEI ({query, texts}), and Milvus's
    POST /v1/rerank   Cohere v1 and Jina (one superset)              vLLM provider and Weaviate ({query, documents})
    GET  /health      200 while the process runs     GET  /ready    200 once the model is loaded, else 503
    GET  /info        the loaded model and the server's limits (the gRPC GetModelInfo, as JSON, plus TEI's keys)
    GET  /metrics     Prometheus metrics             GET  /openapi.json, /docs   the API's description
    GET  /.well-known/ready, /.well-known/live, /meta   what Weaviate's reranker-transformers module polls
    POST /v1/events   UBI events from front ends into the --events-db experiment log (`sidecar.api.events`)

Every rerank route runs one pipeline, `HttpService.rerank`: read the body (at most
`--max-message-bytes`, see `sidecar.api.http_body`) -> parse it for its dialect -> engine -> build
the dialect's response. A request whose client disconnects is cancelled, so the engine stops
scoring it. Responses carry the request's usage in headers (`x-compute-tokens`, `x-input-tokens`,
`x-queue-time`, `x-tokenization-time`, `x-inference-time`, `x-total-time`; times in milliseconds).

Errors are JSON and the message names the field, e.g. `documents[3].image: ...`. A rerank route
answers in its dialect's error body (Cohere `{message}`, Jina `{detail}`, TEI `{error, error_type}`,
each with this server's `code`); other routes in `{"error": {"code": ..., "message": ...}}`.
Engine errors (`SidecarError`) take their status from the one
table `sidecar.api.status.HTTP_CODES` and their code from the error kind (`validation` 422,
`too_large` 413, `overloaded` 429 with `Retry-After`, `unavailable` 503, ...). Failures that exist
only in HTTP (`sidecar.api.status.HTTP_ONLY_CODES`) are answered where they arise: a body that is
not JSON is 400 `invalid_json`; an untrusted Host 421 and a non-JSON POST 415
(`sidecar.api.http_guard`); an unknown route 404, a wrong method 405. Anything else is a bug: it
is answered 500 `internal` with a generic message and logged with its traceback. The server keeps
serving after every error. Each request is recorded once (`sidecar.api.observe`): its log line,
its metrics and, with `--otel`, its trace span.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import uvicorn
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar import metrics
from sidecar.api import openapi
from sidecar.api.auth import ApiKeyMiddleware
from sidecar.api.dialects import RERANK_ROUTES, Dialect, for_body, tei_info
from sidecar.api.events import EventsRoute
from sidecar.api.http_body import MalformedBody, read_json
from sidecar.api.http_guard import Guard, error_response, guarded_protocol, trusted_host_names
from sidecar.api.observe import RequestRecord, close
from sidecar.api.status import HTTP_CODES, HTTP_ONLY_CODES, RETRY_AFTER_SECONDS
from sidecar.api.waiting import unless
from sidecar.errors import Kind, SidecarError
from sidecar.types import Timings


def sidecar_error_response(exc: SidecarError, dialect: Dialect | None = None) -> JSONResponse:
    """A `SidecarError` through the one kind -> status table; 429 says when to retry."""
    headers = {"retry-after": str(RETRY_AFTER_SECONDS)} if exc.kind is Kind.OVERLOADED else None
    return dialect_error_response(dialect, HTTP_CODES[exc.kind], exc.kind.value, exc.message, headers)


def dialect_error_response(
    dialect: Dialect | None, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the body `dialect`'s callers read; without a dialect, the face's own body."""
    if dialect is None:
        return error_response(status, code, message, headers)
    return JSONResponse(dialect.error(code, message), status_code=status, headers=headers)


def usage_headers(timings: Timings, start: float) -> dict[str, str]:
    """What the request cost, TEI-style."""
    return {
        "x-compute-tokens": str(timings.computed_tokens),
        "x-input-tokens": str(timings.input_tokens),
        "x-queue-time": f"{timings.queue_ms:.1f}",
        "x-tokenization-time": f"{timings.preprocessing_ms:.1f}",
        "x-inference-time": f"{timings.inference_ms:.1f}",
        "x-feature-cache-hits": str(timings.feature_cache_hits),
        "x-total-time": f"{(time.perf_counter() - start) * 1000:.1f}",
    }


def record_of(scope: Scope) -> RequestRecord:
    """The request's record, opened by `Observed` (every request passes through it)."""
    return scope["state"]["record"]


def mark(scope: Scope, status: str) -> None:
    """Say why a request failed, for the record `Observed` closes (the HTTP status alone is ambiguous)."""
    scope["state"]["record_status"] = status


class HttpService:
    """The routes: thin methods onto one rerank pipeline and the runtime's state."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime  # sidecar.server.Runtime: settings, engine (None until loaded), tracing

    async def rerank(self, request: Request) -> Response:
        """The one pipeline: read -> validate -> engine -> response; engine errors via HTTP_CODES."""
        dialect = RERANK_ROUTES[request.url.path]
        record = record_of(request.scope)
        record.dialect, record.model = dialect.name, "reranker"
        try:
            body = await self.runtime.run(read_json(request, self.runtime.settings.max_message_bytes))
            dialect = for_body(dialect, body)
            record.dialect = dialect.name
            engine = self.runtime.ready_engine()
            parsed = dialect.parse(body, self.runtime.settings.max_documents)
            record.documents, record.top_n = len(parsed.input.documents), parsed.top_n
            with metrics.in_engine():
                outcome = await _until_disconnected(request, self.runtime.run(engine.rerank(parsed.input)))
            record.timings = outcome.timings
            payload = dialect.render(parsed, outcome.logits, outcome.timings, engine.reranker.name, outcome.chunks)
        except SidecarError as exc:
            mark(request.scope, exc.kind.value)
            return sidecar_error_response(exc, dialect)
        except MalformedBody as exc:
            mark(request.scope, HTTP_ONLY_CODES[400])
            return dialect_error_response(dialect, 400, HTTP_ONLY_CODES[400], str(exc))
        return JSONResponse(payload, headers=usage_headers(outcome.timings, record.started))

    async def health(self, request: Request) -> Response:
        """Liveness: the process is up and its event loop answers."""
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """Readiness: the same test every rerank request passes, so 200 means requests will be served."""
        try:
            self.runtime.ready_engine()
            if self.runtime.draining:
                raise SidecarError(Kind.UNAVAILABLE, "the server is shutting down")
        except SidecarError as exc:
            mark(request.scope, exc.kind.value)
            return sidecar_error_response(exc)
        return JSONResponse({"status": "ready"})

    async def info(self, request: Request) -> Response:
        model_info = self.runtime.model_info()
        info = tei_info(model_info, self.runtime.settings)
        info.update(
            MessageToDict(model_info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        )
        info["ready"] = self.runtime.engine is not None
        info["max_body_bytes"] = self.runtime.settings.max_message_bytes
        return JSONResponse(info)

    async def meta(self, request: Request) -> Response:
        """Weaviate's reranker modules show this under their name in Weaviate's `/v1/meta`."""
        info = MessageToDict(self.runtime.model_info(), preserving_proto_field_name=True)
        return JSONResponse({"model": info.get("model", ""), "models": info.get("models", [])})

    async def metrics(self, request: Request) -> Response:
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._document())

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(openapi.docs_page(self._document()))

    def _document(self) -> dict:
        settings = self.runtime.settings
        return openapi.document(
            OPERATIONS, max_documents=settings.max_documents, max_body_bytes=settings.max_message_bytes
        )


OPERATIONS = [
    openapi.OperationDoc("/v2/rerank", "POST", "Rerank documents (Cohere v2)", dialects=("cohere-jina-v2",)),
    openapi.OperationDoc("/v1/rerank", "POST", "Rerank documents (Cohere v1, Jina)", dialects=("cohere-jina-v1",)),
    openapi.OperationDoc(
        "/rerank", "POST", "Rerank texts (TEI) or documents (vLLM, Weaviate)", dialects=("tei", "vllm-weaviate")
    ),
    openapi.OperationDoc("/health", "GET", "Liveness: 200 while the process runs", response={"type": "object"}),
    openapi.OperationDoc("/ready", "GET", "Readiness: 200 once loaded, 503 otherwise", errors=(503,)),
    openapi.OperationDoc("/info", "GET", "Loaded models and limits", response={"type": "object"}),
    openapi.OperationDoc("/.well-known/ready", "GET", "Readiness, for Weaviate's module", errors=(503,)),
    openapi.OperationDoc("/.well-known/live", "GET", "Liveness, for Weaviate's module", response={"type": "object"}),
    openapi.OperationDoc("/meta", "GET", "The served model, for Weaviate's /v1/meta", response={"type": "object"}),
    openapi.OperationDoc("/metrics", "GET", "Prometheus metrics", media_type="text/plain"),
    openapi.OperationDoc(
        "/v1/events",
        "POST",
        "Record UBI events (impressions, clicks, ...) in the --events-db experiment log",
        request=openapi.EVENTS_REQUEST,
        example=openapi.EVENTS_EXAMPLE,
        response={"type": "object", "properties": {"recorded": {"type": "integer"}}},
        errors=(400, 404, 413, 415, 421, 422, 429, 503),
    ),  # fmt: skip
    openapi.OperationDoc("/openapi.json", "GET", "This document", response={"type": "object"}),
    openapi.OperationDoc("/docs", "GET", "This document as a page", media_type="text/html"),
]


async def _until_disconnected(request: Request, work):
    """Await the engine, cancelling it if the client goes away first (its job is then dropped)."""
    gone = SidecarError(Kind.CANCELLED, "the client disconnected before the scores were ready")
    return await unless(work, _disconnect(request), gone)


async def _disconnect(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Observed:
    """ASGI middleware around everything: opens each request's record and closes it with the outcome.

    The status is what the handler marked (`mark`), else "ok" for 2xx and the HTTP-only code of the
    status. Routes outside the table are recorded as "unmatched", so no path invents a metric label.
    GET requests that succeed and readiness probes are counted but not logged or traced.
    """

    def __init__(self, app: ASGIApp, runtime, paths: frozenset[str]) -> None:
        self.app = app
        self.runtime = runtime
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.paths else "unmatched"
        record = RequestRecord(face="http", route=route, method=scope["method"])
        tracing = self.runtime.tracing
        if tracing is not None:
            record.trace_parent = tracing.parent(_trace_headers(scope))
        scope.setdefault("state", {})["record"] = record
        answered = 500

        async def send_and_watch(message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            status = scope["state"].get("record_status")
            if status is None:
                status = "ok" if answered < 400 else HTTP_ONLY_CODES.get(answered, "internal")
            quiet = scope["method"] in ("GET", "HEAD") and (answered < 400 or route == "/ready")
            close(record, status, tracing, quiet=quiet)


def _trace_headers(scope: Scope) -> dict[str, str]:
    wanted = (b"traceparent", b"tracestate", b"baggage")
    return {name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in wanted}


async def _http_exception(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404/405 (and any other HTTPException) in the error body of this face."""
    code = HTTP_ONLY_CODES.get(exc.status_code, f"http_{exc.status_code}")
    mark(request.scope, code)
    return error_response(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """The last resort for bugs: a generic 500; the details stay in the log.

    Starlette re-raises the exception after this response, and uvicorn logs it with its traceback
    ("Exception in ASGI application"); the request's own line says status=internal.
    """
    mark(request.scope, "internal")
    return error_response(500, "internal", "internal server error; the server log has the details")


def build_app(runtime) -> ASGIApp:
    """The ASGI application over `runtime` (a `sidecar.server.Runtime`)."""
    service = HttpService(runtime)
    routes = [Route(path, service.rerank, methods=["POST"]) for path in RERANK_ROUTES]
    routes += [
        Route("/health", service.health, methods=["GET"]),
        Route("/ready", service.ready, methods=["GET"]),
        Route("/info", service.info, methods=["GET"]),
        Route("/metrics", service.metrics, methods=["GET"]),
        Route("/openapi.json", service.openapi, methods=["GET"]),
        Route("/docs", service.docs, methods=["GET"]),
        Route("/.well-known/ready", service.ready, methods=["GET"]),
        Route("/.well-known/live", service.health, methods=["GET"]),
        Route("/meta", service.meta, methods=["GET"]),
        Route("/v1/events", EventsRoute(runtime, mark).handle, methods=["POST"]),
    ]
    app: ASGIApp = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception, Exception: _unexpected})
    if runtime.api_keys.enabled:
        app = ApiKeyMiddleware(app, runtime.api_keys, render=sidecar_error_response, mark=mark)
    settings = runtime.settings
    guarded = Guard(app, trusted_host_names(settings.trusted_hosts, settings.host), mark)
    return Observed(guarded, runtime, frozenset(route.path for route in routes))


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process's lifecycle (sidecar.server) owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """A running HTTP face; `stop()` stops accepting, lets in-flight requests finish, and returns."""

    def __init__(self, server: _Server, task: asyncio.Task, port: int) -> None:
        self._server = server
        self._task = task
        self.port = port

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._task


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening-ready TCP socket on `host:port`; SO_REUSEPORT only when asked (--reuse-port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise SystemExit(f"cannot bind HTTP to {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot bind HTTP to {host}:{port}: {exc}") from None
    sock.setblocking(False)
    return sock


async def start_http_server(runtime, host: str, port: int) -> tuple[HttpServer, int]:
    """Bind `host:port` (0 = a free port) and serve on the running event loop; returns the bound port."""
    settings = runtime.settings
    sock = bind_socket(host, port, settings.reuse_port)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(runtime),
        http=guarded_protocol(settings.http_header_timeout_s, settings.http_max_connections),
        lifespan="off",
        log_config=None,  # keep the process's logging setup
        access_log=False,  # each request is logged once, with its usage, by Observed
        server_header=False,
        # A backstop only: sidecar.server answers what is still in flight when the drain time ends.
        timeout_graceful_shutdown=settings.drain_seconds + 2,
        **(runtime.tls.uvicorn_options() if runtime.tls else {}),
    )
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # re-raise a startup failure
            raise SystemExit(f"HTTP server on {host}:{bound} stopped during startup")
        await asyncio.sleep(0.01)
    if runtime.tls:
        runtime.tls.track(config.ssl)  # renewed certificates reach new HTTPS connections too
    return HttpServer(server, task, bound), bound
