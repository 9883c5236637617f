"""What the HTTP face refuses before a request reaches a route.

* **Browsers.** A web page can send a POST to `http://127.0.0.1:8080` without asking (a "simple"
  cross-origin request: a form, or `fetch` with a text/plain or untyped body) and can reach a
  loopback port under its own domain name (DNS rebinding). So POST bodies must be declared JSON
  (`application/json` or any `*/*+json`; else 415), and the Host header must name a trusted host
  (`--trusted-hosts`; else 421). A body with no Content-Type at all is accepted from non-browser
  callers (Weaviate's reranker module sends none), but not when the request carries an `Origin`
  header, which browsers add to every cross-origin POST.
* **Slow and idle connections** (`GuardedH11Protocol`): a connection has `--http-header-timeout-s`
  to send each request's headers, and at most `--http-max-connections` connections are open;
  beyond, a new one is answered 503 and closed.
"""

from __future__ import annotations

import ipaddress
import json
import logging

import h11
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from sidecar.api.status import HTTP_ONLY_CODES, RETRY_AFTER_SECONDS

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body of the HTTP face: `{"error": {"code", "message"}}`."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def trusted_host_names(setting: str | None, bind_host: str) -> frozenset[str] | None:
    """The Host names to accept (lower-case, no port), or None to accept any (see --trusted-hosts)."""
    if setting is None:
        return frozenset(LOOPBACK_NAMES) if _is_loopback(bind_host) else None
    names = {name.strip().lower().strip("[]") for name in setting.split(",") if name.strip()}
    return None if "*" in names or not names else frozenset(names)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """`Host` header value without its port: "example.com:8080" -> "example.com", "[::1]:80" -> "::1"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


def is_json_media_type(content_type: str) -> bool:
    """`application/json` or any structured `+json` type, parameters such as charset allowed."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    return bool(kind) and (media_type == "application/json" or subtype.endswith("+json"))


class Guard:
    """ASGI middleware: the Host check on every request, the JSON content-type check on POSTs."""

    def __init__(self, app: ASGIApp, trusted_hosts: frozenset[str] | None, on_refusal) -> None:
        self.app = app
        self.trusted_hosts = trusted_hosts
        self.on_refusal = on_refusal  # called with (scope, code) so the request's record knows why

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                status, message = refusal
                self.on_refusal(scope, HTTP_ONLY_CODES[status])
                await error_response(status, HTTP_ONLY_CODES[status], message)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        if self.trusted_hosts is not None:
            host = host_name(headers.get("host", ""))
            if host not in self.trusted_hosts:
                return 421, (
                    f"Host {headers.get('host', '')!r} is not among the trusted hosts; start the server with "
                    "--trusted-hosts naming it (or '*' behind a proxy that checks Host)"
                )
        if scope["method"] == "POST":
            content_type = headers.get("content-type")
            if content_type is None and "origin" in headers:
                return 415, "a request from a web page must declare its body: send Content-Type: application/json"
            if content_type is not None and not is_json_media_type(content_type):
                return 415, f"Content-Type {content_type!r} is not JSON; send Content-Type: application/json"
        return None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers and a cap on connections.

    Subclassed per server by `guarded_protocol` with the two limits as class attributes (uvicorn
    builds one protocol object per connection from the class it is given).
    """

    header_timeout_s: float = 10.0
    max_connections: int = 1000

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("refusing an HTTP connection: %d open (--http-max-connections)", len(self.connections) - 1)
            transport.write(_raw_503(f"the server has {self.max_connections} open connections; retry shortly"))
            transport.close()
            return
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def handle_events(self) -> None:
        super().handle_events()
        # h11 leaves IDLE once a request's head is parsed: the headers arrived in time.
        if self.conn.their_state is not h11.IDLE and getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this keep-alive connection gets its own header deadline.
        if not self.transport.is_closing() and getattr(self, "_head_timer", None) is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn is given, carrying this server's limits."""
    limits = {"header_timeout_s": header_timeout_s, "max_connections": max_connections}
    return type("SidecarH11Protocol", (GuardedH11Protocol,), limits)


def _raw_503(message: str) -> bytes:
    body = json.dumps({"error": {"code": HTTP_ONLY_CODES[503], "message": message}}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"retry-after: {RETRY_AFTER_SECONDS}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
