"""The HTTP face: Cohere-, Jina- and TEI-compatible rerank routes over the same engine as gRPC.

Routes (bodies are described in `sidecar.api.http_schemas`):

    POST /v2/rerank   Cohere v2                      POST /rerank   TEI
    POST /v1/rerank   Cohere v1 and Jina (one superset)
    GET  /health      200 while the process runs     GET  /ready    200 once the model is loaded, else 503
    GET  /info        the loaded model and the server's limits (the gRPC GetModelInfo, as JSON)

Every rerank route runs one pipeline, `HttpService.rerank`: read the body (at most
`--max-message-bytes`) -> parse it for its dialect -> engine -> build the dialect's response. A
request whose client disconnects is cancelled, so the engine stops scoring it. Responses carry the
request's usage in headers (`x-compute-tokens`, `x-input-tokens`, `x-queue-time`,
`x-tokenization-time`, `x-inference-time`, `x-total-time`; times in milliseconds).

Errors are JSON, `{"error": {"code": ..., "message": ...}}`, and the message names the field,
e.g. `documents[3].image: ...`. Engine errors (`SidecarError`) take their status from the one
table `sidecar.api.status.HTTP_CODES` and their code from the error kind (`validation` 422,
`too_large` 413, `overloaded` 429, `unavailable` 503, ...). Failures that exist only in HTTP are
answered where they arise: a body that is not JSON is 400 `invalid_json`; an unknown route 404,
a wrong method 405. Anything else is a bug: it is answered 500 `internal` with a generic message
and logged with its traceback. The server keeps serving after every error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator

import uvicorn
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.api.http_schemas import COHERE_V1, COHERE_V2, TEI, Dialect
from sidecar.api.status import HTTP_CODES
from sidecar.errors import Kind, SidecarError
from sidecar.types import Timings

log = logging.getLogger("sidecar.requests")
_HTTP_CODES_BY_STATUS = {404: "not_found", 405: "method_not_allowed"}


class MalformedBody(Exception):
    """The body is not JSON (HTTP 400). Only HTTP has this failure: gRPC decodes protobuf itself."""


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body of the HTTP face."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def sidecar_error_response(exc: SidecarError) -> JSONResponse:
    """A `SidecarError` through the one kind -> status table."""
    return error_response(HTTP_CODES[exc.kind], exc.kind.value, exc.message)


async def read_json(request: Request, limit: int) -> object:
    """The request body parsed as JSON; TOO_LARGE past `limit` bytes, MalformedBody if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _too_large(None, limit)
    except ClientDisconnect:
        raise SidecarError(Kind.CANCELLED, "the client disconnected while sending the body") from None
    if not body.strip():
        raise MalformedBody("the request body is empty; send a JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise MalformedBody("the request body is not valid UTF-8") from None
    except ValueError as exc:  # raised by _reject_constant
        raise MalformedBody(str(exc)) from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON; send numbers only")


def _too_large(size: int | None, limit: int) -> SidecarError:
    what = f"the request body of {size} bytes" if size is not None else "the request body"
    return SidecarError(Kind.TOO_LARGE, f"{what} exceeds the limit of {limit} bytes (--max-message-bytes)")


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


class HttpService:
    """The routes: thin methods onto one rerank pipeline and the runtime's state."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime  # sidecar.server.Runtime: settings, engine (None until loaded)

    async def cohere_v2(self, request: Request) -> Response:
        return await self.rerank(request, COHERE_V2)

    async def cohere_v1(self, request: Request) -> Response:
        return await self.rerank(request, COHERE_V1)

    async def tei(self, request: Request) -> Response:
        return await self.rerank(request, TEI)

    async def health(self, request: Request) -> Response:
        """Liveness: the process is up and its event loop answers."""
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """Readiness: the same test every rerank request passes, so 200 means requests will be served."""
        try:
            self.runtime.ready_engine()
        except SidecarError as exc:
            return sidecar_error_response(exc)
        return JSONResponse({"status": "ready"})

    async def info(self, request: Request) -> Response:
        info = MessageToDict(
            self.runtime.model_info(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        info["ready"] = self.runtime.engine is not None
        info["max_body_bytes"] = self.runtime.settings.max_message_bytes
        return JSONResponse(info)

    async def rerank(self, request: Request, dialect: Dialect) -> Response:
        """The one pipeline: read -> validate -> engine -> response; engine errors via HTTP_CODES."""
        start = time.perf_counter()
        docs = 0
        try:
            body = await read_json(request, self.runtime.settings.max_message_bytes)
            engine = self.runtime.ready_engine()
            parsed = dialect.parse(body, self.runtime.settings.max_documents)
            docs = len(parsed.input.documents)
            logits, timings = await _until_disconnected(request, engine.rerank(parsed.input))
            payload = dialect.render(parsed, logits, timings, engine.reranker.name)
        except SidecarError as exc:
            _log(request, dialect, docs, start, exc.kind.value)
            return sidecar_error_response(exc)
        except MalformedBody as exc:
            _log(request, dialect, docs, start, "invalid_json")
            return error_response(400, "invalid_json", str(exc))
        _log(request, dialect, docs, start, "OK", timings)
        return JSONResponse(payload, headers=usage_headers(timings, start))


async def _until_disconnected(request: Request, work) -> tuple[list[float], Timings]:
    """Await the engine, cancelling it if the client goes away first (its job is then dropped)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise SidecarError(Kind.CANCELLED, "the client disconnected before the scores were ready")
    outcome = task.result()
    return outcome.logits, outcome.timings


async def _disconnect(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _log(request: Request, dialect: Dialect, docs: int, start: float, status: str, timings: Timings | None = None):
    total = (time.perf_counter() - start) * 1000
    if timings is None:
        log.info("HTTP %s %s docs=%d total_ms=%.1f status=%s", request.url.path, dialect.name, docs, total, status)
        return
    log.info(
        "HTTP %s %s docs=%d tokens=%d computed=%d images=%d queue_ms=%.1f pre_ms=%.1f infer_ms=%.1f "
        "total_ms=%.1f status=%s",
        request.url.path,
        dialect.name,
        docs,
        timings.input_tokens,
        timings.computed_tokens,
        timings.images,
        timings.queue_ms,
        timings.preprocessing_ms,
        timings.inference_ms,
        total,
        status,
    )


async def _http_exception(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404/405 (and any other HTTPException) in the error body of this face."""
    code = _HTTP_CODES_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """The last resort for bugs: a generic 500; the details stay in the log.

    Starlette re-raises the exception after this response, and uvicorn logs it with its traceback
    ("Exception in ASGI application"), so this logs only the request line, once.
    """
    log.error("HTTP %s status=internal: unexpected %s (traceback follows)", request.url.path, type(exc).__name__)
    return error_response(500, "internal", "internal server error; the server log has the details")


def build_app(runtime) -> Starlette:
    """The ASGI application over `runtime` (a `sidecar.server.Runtime`)."""
    service = HttpService(runtime)
    routes = [
        Route("/v2/rerank", service.cohere_v2, methods=["POST"]),
        Route("/v1/rerank", service.cohere_v1, methods=["POST"]),
        Route("/rerank", service.tei, methods=["POST"]),
        Route("/health", service.health, methods=["GET"]),
        Route("/ready", service.ready, methods=["GET"]),
        Route("/info", service.info, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_exception, Exception: _unexpected})


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


async def start_http_server(runtime, host: str, port: int) -> tuple[HttpServer, int]:
    """Bind `host:port` (0 = a free port) and serve on the running event loop; returns the bound port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise SystemExit(f"cannot bind HTTP to {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot bind HTTP to {host}:{port}: {exc}") from None
    sock.setblocking(False)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(runtime),
        lifespan="off",
        log_config=None,  # keep the process's logging setup
        access_log=False,  # each request is logged once, with its usage, by HttpService
        server_header=False,
        timeout_graceful_shutdown=runtime.settings.drain_seconds,  # then in-flight requests are cancelled
    )
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # re-raise a startup failure
            raise SystemExit(f"HTTP server on {host}:{bound} stopped during startup")
        await asyncio.sleep(0.01)
    return HttpServer(server, task, bound), bound
