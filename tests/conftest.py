"""Shared fixtures: a tiny random Qwen3-VL checkpoint built at test time, and a real server process."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCORE_SCALE = 64.0
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach the model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from sidecar.models.tiny import make_tiny_model

    # Scores spread over about +-3 (a random head gives +-0.05), so prompt changes move them far beyond noise.
    return make_tiny_model(tmp_path_factory.mktemp("tiny-reranker"), shape="tiny", seed=0, score_scale=SCORE_SCALE)


@pytest.fixture(scope="session")
def embedding_model_dir(tmp_path_factory) -> Path:
    from sidecar.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-embedding"), shape="tiny", seed=1, kind="embedding")


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    import torch

    from sidecar.models.loading import load_pretrained

    return load_pretrained(str(tiny_model_dir), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def reranker(tiny_loaded, tiny_model_dir):
    from sidecar.models.reranker import RerankerModel

    model, processor = tiny_loaded
    return RerankerModel(str(tiny_model_dir), model, processor)


SCORE_ROUNDING = 1e-5  # fp32 parity tolerance between two computations of the same pair


def same_scores(expected, tolerance: float = SCORE_ROUNDING):
    """Scores of the same pairs from another call, up to fp32 rounding: which rows share a forward
    (streamed preparation, other requests) varies from call to call, and so do the last bits."""
    return pytest.approx(expected, abs=tolerance)


def png_bytes(width: int, height: int, seed: int, mode: str = "RGB") -> bytes:
    """A random image, PNG-encoded (lossless, so decoding gives back exactly these pixels)."""
    rng = np.random.default_rng(seed)
    channels = 4 if mode == "RGBA" else 3
    array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


class ImageServer:
    """A loopback HTTP server answering every GET with one image, after a delay or a release; it
    records the paths asked for. `url` is its base; use it as a context manager."""

    def __init__(self, image: bytes, delay: float = 0.0, held: bool = False) -> None:
        import http.server
        import threading

        self.hits: list[str] = []
        self.release = threading.Event()
        if not held:
            self.release.set()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                owner.hits.append(self.path)
                owner.release.wait(30)
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", str(len(image)))
                self.end_headers()
                self.wfile.write(image)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def __enter__(self) -> ImageServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`rerank-sidecar serve` as a subprocess on a loopback port."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "sidecar.cli", "serve", "--port", str(self.port), "--http-port", "0", *args]
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        from sidecar.client import RerankerClient

        with RerankerClient(self.target) as client:
            try:
                client.wait_until_ready(timeout)
            except TimeoutError:
                raise RuntimeError(f"server did not start; log:\n{self.log_path.read_text()}") from None

    def __enter__(self) -> ServerProcess:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def media_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "red.png").write_bytes(png_bytes(96, 64, seed=1))
    (root / "nested").mkdir()
    (root / "nested" / "blue.png").write_bytes(png_bytes(64, 96, seed=2))
    (tmp_path_factory.getbasetemp() / "secret.png").write_bytes(png_bytes(32, 32, seed=3))
    return root


@pytest.fixture(scope="session")
def server(tiny_model_dir, media_root, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("logs") / "server.log"
    proc = ServerProcess(
        [
            "--model",
            str(tiny_model_dir),
            "--media-root",
            str(media_root),
            "--max-documents",
            "60",
            "--max-message-bytes",
            str(4 * 1024 * 1024),
            "--fetch-read-timeout-s",
            "2",
        ],
        log_path,
    )
    with proc:
        yield proc


@pytest.fixture(scope="session")
def client(server):
    from sidecar.client import RerankerClient

    with RerankerClient(server.target, timeout=60, retries=0) as c:
        yield c


@pytest.fixture(scope="session")
def wait_for():
    def wait(predicate, timeout: float = 10.0, interval: float = 0.05):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(interval)
        return False

    return wait
