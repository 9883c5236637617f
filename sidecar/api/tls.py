"""TLS for both faces from one certificate: `--tls-cert`, `--tls-key`, and `--tls-client-ca` for mutual TLS.

The files are read and checked once at start-up (a bad pair stops the server with a message naming
the flag), then handed to gRPC as server credentials and to uvicorn as its SSL settings.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from sidecar.settings import Settings


@dataclass(frozen=True)
class TlsFiles:
    """The server's PEM files, checked: certificate chain and key, and the client CA for mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials; with a client CA, clients must present a certificate it signed."""
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.client_ca.read_bytes() if self.client_ca else None,
            require_client_auth=self.client_ca is not None,
        )

    def uvicorn_options(self) -> dict[str, Any]:
        """The `uvicorn.Config` SSL arguments for the same files."""
        options: dict[str, Any] = {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}
        if self.client_ca is not None:
            options |= {"ssl_ca_certs": str(self.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options


def tls_files(settings: Settings) -> TlsFiles | None:
    """The checked TLS files, or None to serve plaintext; SystemExit naming the flag when they cannot serve."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise SystemExit("TLS needs both --tls-cert and --tls-key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"--tls-cert {settings.tls_cert} / --tls-key {settings.tls_key}: {_reason(exc)}") from None
    if settings.tls_client_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise SystemExit(f"--tls-client-ca {settings.tls_client_ca}: {_reason(exc)}") from None
    return TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM certificate and key ({exc.reason or exc})"
    return exc.strerror or str(exc)
