"""TLS for both faces from one certificate: `--tls-cert`, `--tls-key`, and `--tls-client-ca` for mutual TLS.

The files are read and checked at start-up (a bad pair stops the server with a message naming the
flag), then served to gRPC through credentials that ask for the current certificate at every
handshake, and to uvicorn through its SSL context. A renewed certificate (cert-manager, a Secret
update) is read on SIGHUP and when the files change on disk (`ServerTls.watch`, every 10 s): new
connections get it, open ones keep theirs. Renewed files that do not make a usable pair keep the
certificate in use, and the log says why. A replaced client CA is added to the ones already
trusted; dropping a CA takes a restart.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import Any

import grpc

from sidecar.api.watched import WATCH_SECONDS, watch_files
from sidecar.settings import Settings

log = logging.getLogger("sidecar.tls")


class ServerTls:
    """The server's PEM files and what both faces serve from them; `reload` swaps in renewed files."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._lock = threading.Lock()  # gRPC asks for the certificate from its own threads
        self._generation = 0
        self._pem = self._read()  # raises ValueError naming the flag
        self._contexts: list[ssl.SSLContext] = []  # uvicorn's, once the HTTP face has started

    def _read(self) -> tuple[bytes, bytes, bytes | None]:
        """(key, chain, client CA) as PEM, checked to make a usable server certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--tls-cert {self.cert} / --tls-key {self.key}: {_reason(exc)}") from None
        if self.client_ca is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"--tls-client-ca {self.client_ca}: {_reason(exc)}") from None
        return self.key.read_bytes(), self.cert.read_bytes(), self.client_ca.read_bytes() if self.client_ca else None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials that serve the certificate current at each handshake; with a client CA, mutual TLS."""
        served = self._generation

        def current() -> grpc.ServerCertificateConfiguration | None:
            nonlocal served
            with self._lock:
                if served == self._generation:
                    return None  # unchanged: gRPC keeps the one it has
                served = self._generation
                return self._configuration()

        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), current, require_client_authentication=self.client_ca is not None
        )

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        key, chain, client_ca = self._pem
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=client_ca)

    def uvicorn_options(self) -> dict[str, Any]:
        """The `uvicorn.Config` SSL arguments for the same files."""
        options: dict[str, Any] = {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}
        if self.client_ca is not None:
            options |= {"ssl_ca_certs": str(self.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options

    def track(self, context: ssl.SSLContext | None) -> None:
        """Keep uvicorn's SSL context (built when it starts) up to date on reload."""
        if context is not None:
            self._contexts.append(context)

    def reload(self, why: str = "SIGHUP") -> None:
        """Read the files again; serve them to new connections, or keep the certificate in use and log why."""
        try:
            pem = self._read()
        except ValueError as exc:
            log.error("%s: keeping the TLS certificate in use: %s", why, exc)
            return
        for context in self._contexts:
            context.load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                context.load_verify_locations(cafile=self.client_ca)
        with self._lock:
            self._pem = pem
            self._generation += 1
        log.info("%s: TLS certificate read from %s", why, self.cert)

    async def watch(self, interval: float = WATCH_SECONDS) -> None:
        """Reload when any of the files changes on disk."""
        paths = [p for p in (self.cert, self.key, self.client_ca) if p is not None]
        await watch_files(paths, lambda: self.reload("the TLS files changed"), interval)


def server_tls(settings: Settings) -> ServerTls | None:
    """The checked TLS files, or None to serve plaintext; SystemExit naming the flag when they cannot serve."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise SystemExit("TLS needs both --tls-cert and --tls-key")
    try:
        return ServerTls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM certificate and key ({exc.reason or exc})"
    return exc.strerror or str(exc)
