"""API keys on both faces: one `ApiKeys` decides, an ASGI middleware and a gRPC interceptor enforce.

With `--api-key`, `RERANK_SIDECAR_API_KEY` or `--api-key-file`, every HTTP route and RPC needs the
header (gRPC: metadata) `authorization: Bearer <key>`, except the probes, gRPC health and
`/metrics` while their `--public-*` flags are on. A refused request is answered UNAUTHENTICATED /
HTTP 401 (with `WWW-Authenticate: Bearer`) before any handler runs, and logged without the key.

Keys are kept only as SHA-256 digests. A presented key is hashed and compared with every accepted
digest by `hmac.compare_digest`, with no early exit, so the time taken tells neither which key
matched nor how long the keys are. The key file is re-read on SIGHUP (`ApiKeys.reload`) and when
it changes on disk (`ApiKeys.watch`, every 10 s: a Kubernetes Secret update needs no signal); a
file that cannot be read or holds no valid key keeps the keys in use, and the log says why.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import grpc
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar import metrics
from sidecar.api.observe import RequestRecord, close
from sidecar.api.status import GRPC_CODES
from sidecar.api.watched import WATCH_SECONDS, watch_files
from sidecar.errors import Kind, SidecarError
from sidecar.settings import Settings

log = logging.getLogger("sidecar.auth")
RERANKER_SERVICE = "rerank.v1.Reranker"

# /.well-known/*: the same probes where Weaviate's reranker-transformers module looks for them.
PROBE_PATHS = frozenset({"/health", "/ready", "/.well-known/ready", "/.well-known/live"})
METRICS_PATHS = frozenset({"/metrics"})
GRPC_HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
WWW_AUTHENTICATE = 'Bearer realm="rerank-sidecar"'


class KeyFileError(Exception):
    """The key file cannot be used; the message names the file and line, never a key."""


def read_key_file(path: Path) -> list[str]:
    """The keys in `path`: one per line; blank lines and lines starting with `#` are skipped."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise KeyFileError(f"cannot read the API key file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"the API key file {path} is not UTF-8 text") from None
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if not _valid_key(key):
            raise KeyFileError(f"{path} line {number}: a key must be printable ASCII without spaces")
        keys.append(key)
    if not keys:
        raise KeyFileError(f"the API key file {path} holds no key (one per line; # starts a comment)")
    return keys


def _valid_key(key: str) -> bool:
    """Keys travel in an HTTP header and in gRPC metadata: visible ASCII only."""
    return all("!" <= char <= "~" for char in key)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """Which requests need a key, and whether a presented `authorization` value carries one we accept."""

    def __init__(self, settings: Settings) -> None:
        self._single = settings.api_key
        self._file = settings.api_key_file
        if self._single is not None and not _valid_key(self._single):
            raise SystemExit("the API key (--api-key or RERANK_SIDECAR_API_KEY) must be printable ASCII without spaces")
        try:
            self._digests = self._load()
        except KeyFileError as exc:
            raise SystemExit(str(exc)) from None
        self.public_paths = (PROBE_PATHS if settings.public_probes else frozenset()) | (
            METRICS_PATHS if settings.public_metrics else frozenset()
        )
        self.public_methods = GRPC_HEALTH_METHODS if settings.public_grpc_health else frozenset()

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (else every request passes and nothing is installed)."""
        return bool(self._digests)

    def _load(self) -> tuple[bytes, ...]:
        keys = read_key_file(self._file) if self._file is not None else []
        if self._single:
            keys.append(self._single)
        return tuple(dict.fromkeys(_digest(key) for key in keys))

    def reload(self, why: str = "SIGHUP") -> None:
        """Re-read the key file (on SIGHUP, or when it changed); on any problem keep the keys in use and log why."""
        if self._file is None:
            log.info("%s: no --api-key-file to re-read; the API keys are unchanged", why)
            return
        try:
            digests = self._load()
        except KeyFileError as exc:
            log.error("%s: keeping the %d API key(s) in use: %s", why, len(self._digests), exc)
            return
        self._digests = digests
        log.info("%s: %d API key(s) in use, read from %s", why, len(digests), self._file)

    async def watch(self, interval: float = WATCH_SECONDS) -> None:
        """Re-read the key file whenever it changes on disk (a Kubernetes Secret update swaps it in place)."""
        if self._file is not None:
            await watch_files([self._file], lambda: self.reload("the API key file changed"), interval)

    def accepts(self, key: str) -> bool:
        """Whether `key` is one of the accepted keys, in time independent of which one and of their lengths."""
        presented = _digest(key)
        matched = False
        for digest in self._digests:  # every digest is compared: no early exit
            matched |= hmac.compare_digest(digest, presented)
        return matched

    def refusal(self, authorization: str | None) -> SidecarError | None:
        """None when `authorization` carries an accepted key; else the UNAUTHENTICATED error to answer."""
        if authorization is None or not authorization.strip():
            return SidecarError(Kind.UNAUTHENTICATED, "an API key is required: send 'authorization: Bearer <key>'")
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return SidecarError(Kind.UNAUTHENTICATED, "the authorization header must be 'Bearer <key>'")
        if not self.accepts(key.strip()):
            return SidecarError(Kind.UNAUTHENTICATED, "the API key is not valid")
        return None


class ApiKeyMiddleware:
    """ASGI middleware: answers a request without an accepted key with the face's 401 error body."""

    def __init__(
        self,
        app: ASGIApp,
        api_keys: ApiKeys,
        render: Callable[[SidecarError], Response],
        mark: Callable[[Scope, str], None],
    ) -> None:
        self.app = app
        self.api_keys = api_keys
        self.render = render  # the face's error response for a SidecarError (status from HTTP_CODES)
        self.mark = mark  # tells the face's request record why the request failed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.api_keys.public_paths:
            await self.app(scope, receive, send)
            return
        refusal = self.api_keys.refusal(Headers(scope=scope).get("authorization"))
        if refusal is None:
            await self.app(scope, receive, send)
            return
        metrics.auth_failed("http")
        self.mark(scope, refusal.kind.value)
        response = self.render(refusal)
        response.headers["www-authenticate"] = WWW_AUTHENTICATE
        await response(scope, receive, send)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """gRPC server interceptor: a call without an accepted key is aborted with UNAUTHENTICATED."""

    def __init__(self, api_keys: ApiKeys) -> None:
        self.api_keys = api_keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method in self.api_keys.public_methods:
            return await continuation(details)
        refusal = self.api_keys.refusal(_metadata_value(details.invocation_metadata or (), "authorization"))
        if refusal is None:
            return await continuation(details)
        metrics.auth_failed("grpc")
        service, _, name = details.method.strip("/").rpartition("/")
        route = name if service == RERANKER_SERVICE else "unmatched"  # no caller invents a metric label
        close(RequestRecord(face="grpc", route=route, dialect="grpc"), refusal.kind.value)
        handler = await continuation(details)  # its shape (streaming or not) and codecs, for the refusal
        return _refusing(handler, refusal)


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]], name: str) -> str | None:
    for key, value in metadata:
        if key == name:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _refusing(handler: grpc.RpcMethodHandler | None, refusal: SidecarError) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts with `refusal`."""

    async def abort(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(GRPC_CODES[refusal.kind], refusal.message)

    if handler is None:  # an unknown method: refuse it the same way, without telling it is unknown
        return grpc.unary_unary_rpc_method_handler(abort)
    codecs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **codecs)
    return grpc.unary_unary_rpc_method_handler(abort, **codecs)
