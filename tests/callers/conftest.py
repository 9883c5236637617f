"""One real sidecar process (tiny model) for the callers' own packages and replayed request bodies.

Every test here talks to it over loopback exactly as the caller would: the real client package
from PyPI, or the caller's exact request bytes. Expected scores come from the sidecar's own gRPC
client for the same pairs.
"""

from __future__ import annotations

import http.client
import json
import struct
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import pytest

from tests.conftest import ServerProcess, free_port

MAX_DOCUMENTS = 60
QUERY = 'red "bike" <for> the & city café'  # quotes, HTML characters and non-ASCII: every escaping shows
DOCUMENTS = [
    "A bike shop sells red bicycles.",
    "The weather is sunny today.",
    "red bicycle for sale, barely used",
    "这家自行车店出售红色自行车。",
    'a "quoted" <b>html</b> & ampersand = sign',
]


@dataclass(frozen=True)
class Sidecar:
    """The running sidecar: its gRPC target and its HTTP base URL."""

    target: str
    url: str
    port: int


@pytest.fixture(scope="session")
def sidecar(tiny_model_dir, media_root, tmp_path_factory) -> Sidecar:
    http_port = free_port()
    args = ["--model", str(tiny_model_dir), "--media-root", str(media_root)]
    args += ["--max-documents", str(MAX_DOCUMENTS), "--http-port", str(http_port)]
    with ServerProcess(args, tmp_path_factory.mktemp("logs") / "callers-sidecar.log") as proc:
        yield Sidecar(proc.target, f"http://127.0.0.1:{http_port}", http_port)


@pytest.fixture(scope="session")
def scorer(sidecar):
    """The sidecar's gRPC client: the scores every caller must see for the same pairs."""
    from sidecar.client import RerankerClient

    with RerankerClient(sidecar.target, timeout=60, retries=0) as client:
        yield client


def grpc_scores(client, query, documents) -> list[float]:
    """Probabilities in document order, at the gRPC wire's float32 precision."""
    scores = [0.0] * len(documents)
    for result in client.rerank(query, documents).results:
        scores[result.index] = result.score
    return scores


def f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST raw bytes with exactly these headers (http.client adds only Host and Content-Length, where
    urllib would add a form Content-Type), as the caller's HTTP client sends them; status and raw answer."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", parts.path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
