"""How the clients reach the sidecar: targets, TLS, the API key, and gRPC's own balancing and retries.

One target is any gRPC target string: `host:port`, `dns:///name:port` (every address the name
resolves to, e.g. a Kubernetes headless Service), `ipv4:a:p,b:p`, `unix:/path`. A list of
`ip:port` strings is turned into one `ipv4:`/`ipv6:` target. Whatever the target resolves to, the
channel balances calls over the addresses with gRPC's `round_robin` policy and retries a call that
fails with UNAVAILABLE (a replica down, restarting or still loading; every sidecar RPC is
idempotent) with gRPC's retry policy, on the next address: both from the channel's service config.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sidecar.settings import API_KEY_ENV

SERVICE = "rerank.v1.Reranker"
MAX_ATTEMPTS = 5  # gRPC's ceiling on retryPolicy.maxAttempts

PemLike = bytes | str | Path


@dataclass(frozen=True)
class ChannelSpec:
    """Everything a channel to the sidecar is built from, for the blocking and the asyncio client alike."""

    target: str  # the gRPC target string the channel dials
    credentials: grpc.ChannelCredentials | None  # None: plaintext
    options: tuple[tuple[str, Any], ...]
    metadata: tuple[tuple[str, str], ...] = field(repr=False)  # sent with every call: the API key, never shown

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """What one call sends: the key, and the caller's W3C trace context when it has one."""
        return self.metadata + trace_context()

    def channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=self.options)
        return grpc.secure_channel(self.target, self.credentials, options=self.options)

    def aio_channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self.options)
        return grpc.aio.secure_channel(self.target, self.credentials, options=self.options)


def trace_context() -> tuple[tuple[str, str], ...]:
    """`traceparent` (and `tracestate`) of the caller's current OpenTelemetry span, so a search can be
    followed into the sidecar (`serve --otel`); nothing when OpenTelemetry is not installed or no
    span is active."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return ()
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


def channel_spec(
    target: str | Sequence[str],
    *,
    api_key: str | None,
    tls: bool,
    root_certificates: PemLike | None,
    client_cert: PemLike | None,
    client_key: PemLike | None,
    server_name: str | None,
    retries: int,
    backoff: float,
    max_message_bytes: int,
) -> ChannelSpec:
    """The channel for these client arguments (see `RerankerClient`)."""
    if (client_cert is None) != (client_key is None):
        raise ValueError("mutual TLS needs both client_cert and client_key")
    credentials = None
    if tls or root_certificates is not None or client_cert is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(root_certificates), private_key=_pem(client_key), certificate_chain=_pem(client_cert)
        )
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.service_config", service_config(retries, backoff)),
        ("grpc.service_config_disable_resolution", 1),  # ours, not one published in DNS TXT records
        ("grpc.enable_retries", 1),
        ("grpc.per_rpc_retry_buffer_size", max_message_bytes),  # a request of any size can be retried
    ]
    targets = [target] if isinstance(target, str) else list(target)
    if credentials is not None and server_name is None and len(targets) > 1:
        server_name = _split(targets[0])[0]  # the certificate is checked against one name, not the list
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    return ChannelSpec(grpc_target(target), credentials, tuple(options), metadata)


def grpc_target(target: str | Sequence[str]) -> str:
    """One gRPC target string for one target or a list of `ip:port` replicas."""
    if isinstance(target, str):
        return target
    targets = list(target)
    if not targets:
        raise ValueError("no target: give host:port, dns:///name:port or a list of ip:port")
    if len(targets) == 1:
        return targets[0]
    families = {_address_family(entry) for entry in targets}
    if len(families) > 1:
        raise ValueError(f"the targets {targets} mix IPv4 and IPv6 addresses; list one family")
    return f"{families.pop()}:{','.join(targets)}"


def _split(entry: str) -> tuple[str, str]:
    host, _, port = entry.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), port


def _address_family(entry: str) -> str:
    host, port = _split(entry)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not port.isdigit():
        raise ValueError(
            f"{entry!r}: a list of targets takes ip:port entries ([v6]:port for IPv6); for host names use one "
            "dns:///name:port target that resolves to every replica (a Kubernetes headless Service does)"
        ) from None
    return "ipv4" if address.version == 4 else "ipv6"


def service_config(retries: int, backoff: float) -> str:
    """round_robin over every resolved address; UNAVAILABLE retried `retries` times (at most 4) with backoff."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retries > 0:
        initial = max(backoff, 0.001)
        config["methodConfig"] = [
            {
                "name": [{"service": SERVICE}],
                "retryPolicy": {
                    "maxAttempts": min(retries + 1, MAX_ATTEMPTS),
                    "initialBackoff": f"{initial:.3f}s",
                    "maxBackoff": f"{initial * 8:.3f}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return json.dumps(config)


def _pem(value: PemLike | None) -> bytes | None:
    """PEM bytes as given, or read from a path (a str that is not PEM text is a path)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    return Path(value).read_bytes()


class DiagnosedRpcError(grpc.RpcError):
    """A failed call whose details gained what a probe of the server found; code() is unchanged."""

    def __init__(self, cause: grpc.RpcError, details: str) -> None:
        super().__init__(details)
        self._code, self._details, self.cause = cause.code(), details, cause

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def __getattr__(self, name: str) -> Any:  # debug_error_string(), trailing_metadata(), ... of the cause
        return getattr(self.cause, name)

    def __str__(self) -> str:
        return f"{self._code.name}: {self._details}"


_CLOSED = re.compile(r"(?:ipv4:|ipv6:)?(\[[0-9a-fA-F:.]+\]|[^\s,]+?):(\d+): (?:Socket closed|Connection reset)")


def diagnose(exc: grpc.RpcError, spec: ChannelSpec) -> grpc.RpcError:
    """`exc`, or for a connection the server closed at once, `exc` with the reason a TLS probe finds.

    A plaintext client against a TLS server, or a client without a certificate against a server
    that requires one, sees only "Socket closed": the probe says which of the two it is.
    """
    details = exc.details() if hasattr(exc, "details") else None
    if not hasattr(exc, "code") or exc.code() != grpc.StatusCode.UNAVAILABLE or not details:
        return exc
    closed = _CLOSED.search(details)
    if closed is None:
        return exc
    host, port = closed.group(1).strip("[]"), int(closed.group(2))
    finding = _probe_tls(host, port, plaintext=spec.credentials is None)
    return DiagnosedRpcError(exc, f"{details} ({finding})") if finding else exc


def _probe_tls(host: str, port: int, plaintext: bool) -> str | None:
    """What a TLS handshake with `host:port` (as gRPC makes it, ALPN h2, no client certificate) shows."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe for the protocol, not a check of the certificate
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=2) as raw, context.wrap_socket(raw) as tls:
            if plaintext:
                return f"{host}:{port} serves TLS: connect with tls=True and root_certificates= its CA"
            tls.settimeout(1)
            if tls.recv(1) == b"":  # an HTTP/2 server speaks first; one that hangs up wants a certificate
                return f"{host}:{port} requires a client certificate (mutual TLS): pass client_cert= and client_key="
    except OSError:  # ssl.SSLError included: not a TLS server, or gone
        pass
    return None
