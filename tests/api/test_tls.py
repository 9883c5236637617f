"""TLS and mutual TLS on both faces, with certificates made at run time (trustme): both clients and HTTP
handshake and rerank; the wrong CA, a missing client certificate and a plaintext client fail, and say why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import urllib.error

import grpc
import pytest

from sidecar.api.grpc_server import start_grpc_server
from sidecar.api.http_app import start_http_server
from sidecar.api.tls import server_tls
from sidecar.client import AsyncRerankerClient, RerankerClient
from sidecar.server import Runtime
from tests.api.security_fixtures import Http, pki  # noqa: F401 - the certificates fixture

QUERY, DOCS = "red bike", ["a red bicycle", "a car"]


async def blocking(method, *args, **kwargs):
    """A blocking client's call off the event loop, which serves both faces."""
    return await asyncio.to_thread(method, *args, **kwargs)


@dataclasses.dataclass
class TlsFaces:
    grpc_port: int
    http_port: int
    runtime: Runtime


async def serve(settings, reranker):
    from sidecar.scheduler import Engine

    runtime = Runtime(settings)
    runtime.engine = Engine(settings, reranker)
    grpc_server, _, grpc_port = await start_grpc_server(runtime, "127.0.0.1", 0)
    http_server, http_port = await start_http_server(runtime, "127.0.0.1", 0)

    async def stop():
        await http_server.stop()
        await grpc_server.stop(None)
        runtime.engine.close()

    return TlsFaces(grpc_port, http_port, runtime), stop


@pytest.fixture(scope="module")
async def tls_faces(api_settings, reranker, pki):  # noqa: F811
    faces, stop = await serve(dataclasses.replace(api_settings, tls_cert=pki.cert, tls_key=pki.key), reranker)
    yield faces
    await stop()


@pytest.fixture(scope="module")
async def mtls_faces(api_settings, reranker, pki):  # noqa: F811
    settings = dataclasses.replace(api_settings, tls_cert=pki.cert, tls_key=pki.key, tls_client_ca=pki.client_ca)
    faces, stop = await serve(settings, reranker)
    yield faces
    await stop()


async def test_tls_with_both_clients_and_http(tls_faces, pki):  # noqa: F811
    target = f"127.0.0.1:{tls_faces.grpc_port}"
    async with AsyncRerankerClient(target, root_certificates=pki.ca, retries=0) as client:  # a path
        assert len((await client.rerank(QUERY, DOCS)).results) == 2
    with RerankerClient(target, tls=True, root_certificates=pki.ca.read_bytes(), retries=0) as client:  # bytes
        assert len((await blocking(client.rerank, QUERY, DOCS)).results) == 2
    with RerankerClient(f"localhost:{tls_faces.grpc_port}", root_certificates=pki.ca.read_text()) as client:  # PEM
        assert (await blocking(client.model_info)).max_documents > 0
    https = Http(tls_faces.http_port, scheme="https", context=pki.client_context())
    reply = await https.call("POST", "/v2/rerank", {"query": QUERY, "documents": DOCS})
    assert reply.status == 200 and len(reply.json["results"]) == 2


async def test_a_certificate_from_another_ca_is_refused(tls_faces, pki):  # noqa: F811
    async with AsyncRerankerClient(f"127.0.0.1:{tls_faces.grpc_port}", root_certificates=pki.other_ca) as client:
        with pytest.raises(grpc.RpcError) as failed:
            await client.model_info()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in failed.value.details()
    https = Http(tls_faces.http_port, scheme="https", context=pki.client_context(ca=pki.other_ca))
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        await https.call("GET", "/health")


async def test_a_plaintext_client_against_tls_fails_saying_tls(tls_faces):
    target = f"127.0.0.1:{tls_faces.grpc_port}"
    async with AsyncRerankerClient(target, timeout=10, retries=0) as client:
        with pytest.raises(grpc.RpcError) as failed:
            await client.model_info()
    with RerankerClient(target, timeout=10, retries=0) as client:
        with pytest.raises(grpc.RpcError) as failed_blocking:
            await blocking(client.model_info)
        with pytest.raises(TimeoutError, match="serves TLS"):
            await blocking(client.wait_until_ready, timeout=1)
    for error in (failed.value, failed_blocking.value):
        assert error.code() == grpc.StatusCode.UNAVAILABLE  # the status is kept
        assert f"{target} serves TLS: connect with tls=True" in error.details()
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP on the TLS port: no answer
        await Http(tls_faces.http_port).call("GET", "/health")


async def test_a_tls_client_against_plaintext_fails_at_the_handshake(grpc_client):
    async with AsyncRerankerClient(grpc_client.target, tls=True, retries=0) as client:
        with pytest.raises(grpc.RpcError) as failed:
            await client.model_info()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "handshake failed" in failed.value.details().lower()


async def test_mutual_tls_with_both_clients_and_http(mtls_faces, pki):  # noqa: F811
    target = f"127.0.0.1:{mtls_faces.grpc_port}"
    credentials = {"root_certificates": pki.ca, "client_cert": pki.client_cert, "client_key": pki.client_key}
    async with AsyncRerankerClient(target, retries=0, **credentials) as client:
        assert len((await client.rerank(QUERY, DOCS)).results) == 2
    with RerankerClient(target, retries=0, **credentials) as client:
        assert len((await blocking(client.rerank, QUERY, DOCS)).results) == 2
    https = Http(mtls_faces.http_port, scheme="https", context=pki.client_context(with_certificate=True))
    reply = await https.call("POST", "/rerank", {"query": QUERY, "texts": DOCS})
    assert reply.status == 200 and len(reply.json) == 2


async def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_faces, pki):  # noqa: F811
    target = f"127.0.0.1:{mtls_faces.grpc_port}"
    async with AsyncRerankerClient(target, root_certificates=pki.ca, retries=0) as client:
        with pytest.raises(grpc.RpcError) as failed:
            await client.model_info()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "requires a client certificate (mutual TLS)" in failed.value.details()
    https = Http(mtls_faces.http_port, scheme="https", context=pki.client_context())
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        await https.call("GET", "/health")


def test_a_client_key_without_its_certificate_is_refused(pki):  # noqa: F811
    with pytest.raises(ValueError, match="both client_cert and client_key"):
        RerankerClient("127.0.0.1:1", root_certificates=pki.ca, client_key=pki.client_key)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"tls_cert": "cert"}, "needs both --tls-cert and --tls-key"),
        ({"tls_key": "key"}, "needs both --tls-cert and --tls-key"),
        ({"tls_client_ca": "client_ca"}, "--tls-client-ca needs --tls-cert and --tls-key"),
        ({"tls_cert": "cert", "tls_key": "client_key"}, "not a usable PEM certificate and key"),
        ({"tls_cert": "cert", "tls_key": "key", "tls_client_ca": "missing"}, "--tls-client-ca"),
    ],
)
def test_unusable_tls_files_stop_the_server_naming_the_flag(api_settings, pki, tmp_path, files, message):  # noqa: F811
    paths = {flag: getattr(pki, name, tmp_path / name) for flag, name in files.items()}
    with pytest.raises(SystemExit, match=message):
        server_tls(dataclasses.replace(api_settings, **paths))


def served_serial(port: int) -> int:
    """The serial number of the certificate a new TLS connection to `port` is shown."""
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # which certificate, not whether trusted
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


async def test_a_renewed_certificate_reaches_new_connections_on_both_faces(
    api_settings,
    reranker,
    pki,  # noqa: F811
    tmp_path,
    caplog,
):
    import trustme

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(pki.cert.read_bytes())
    key.write_bytes(pki.key.read_bytes())
    settings = dataclasses.replace(api_settings, tls_cert=cert, tls_key=key)
    faces, stop = await serve(settings, reranker)
    grpc_port, http_port = faces.grpc_port, faces.http_port
    try:
        first = {await asyncio.to_thread(served_serial, port) for port in (grpc_port, http_port)}
        cert.write_text("not a certificate")  # a bad renewal keeps the certificate in use
        faces.runtime.reload_secrets()
        assert "keeping the TLS certificate in use" in caplog.text
        assert {await asyncio.to_thread(served_serial, port) for port in (grpc_port, http_port)} == first
        other = trustme.CA().issue_cert("127.0.0.1")
        other.private_key_pem.write_to_path(key)
        cert.write_bytes(b"".join(blob.bytes() for blob in other.cert_chain_pems))
        faces.runtime.reload_secrets()
        second = {await asyncio.to_thread(served_serial, port) for port in (grpc_port, http_port)}
        assert len(first) == len(second) == 1 and first != second  # both faces, the new certificate
    finally:
        await stop()
