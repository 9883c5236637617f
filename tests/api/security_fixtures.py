"""What the API-key and TLS tests share: an HTTP caller with headers and TLS, and certificates made at run time."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import Reply, _exchange

DIALECT_BODIES = {  # one request per HTTP dialect, by route
    "/v2/rerank": {"query": "red bike", "documents": ["a red bicycle", "a car"]},
    "/v1/rerank": {"query": "red bike", "documents": [{"text": "a red bicycle"}, {"text": "a car"}]},
    "/rerank": {"query": "red bike", "texts": ["a red bicycle", "a car"]},
}


class Http:
    """urllib on a worker thread (the servers share the test's event loop), with headers and an SSL context."""

    def __init__(self, port: int, *, scheme: str = "http", context: ssl.SSLContext | None = None) -> None:
        self.base = f"{scheme}://127.0.0.1:{port}"
        self.context = context

    async def call(self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None) -> Reply:
        data = None if method == "GET" else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"content-type": "application/json", **(headers or {})}
        )
        return await asyncio.to_thread(_exchange, request, self.context)


@dataclass(frozen=True)
class Pki:
    """PEM files made by trustme: a server CA and a certificate for 127.0.0.1/localhost, a client CA and a
    client certificate, and an unrelated CA."""

    ca: Path
    cert: Path
    key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    def client_context(self, *, with_certificate: bool = False, ca: Path | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(ca or self.ca))
        if with_certificate:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    import trustme

    root = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    client = client_ca.issue_cert("search-app@example.com")
    server_ca.cert_pem.write_to_path(root / "ca.pem")
    server.private_key_pem.write_to_path(root / "key.pem")
    client_ca.cert_pem.write_to_path(root / "client-ca.pem")
    client.private_key_pem.write_to_path(root / "client-key.pem")
    other_ca.cert_pem.write_to_path(root / "other-ca.pem")
    for name, issued in (("cert.pem", server), ("client-cert.pem", client)):
        (root / name).write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return Pki(
        *(
            root / f
            for f in (
                "ca.pem",
                "cert.pem",
                "key.pem",
                "client-ca.pem",
                "client-cert.pem",
                "client-key.pem",
                "other-ca.pem",
            )
        )
    )
