"""The local stack the demo and the embedded search page share: a sidecar child process and its models.

`Sidecar` runs `python -m sidecar.cli serve` on a loopback port the OS picks, so the calling process
never imports torch and reaches the server only through `sidecar.client`, as an application would.
`resolve_models` picks the checkpoints (tiny random ones built offline with `--tiny`, or hub ids and
directories checked for loadability in seconds), and `open_milvus_lite` opens an embedded index.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_RERANKER = "Qwen/Qwen3-VL-Reranker-2B"
DEFAULT_EMBEDDER = "Qwen/Qwen3-VL-Embedding-2B"
TINY_SEEDS = {"reranker": 0, "embedding": 1}
TINY_MARK = ".complete"
PORT_LINE = re.compile(r"gRPC listening on [^\s:]+:(\d+)")
say = functools.partial(print, flush=True)


class DemoError(Exception):
    """A failure the demo explains in one message (exit status 2)."""


def ensure_tiny_models(cache_dir: Path) -> tuple[Path, Path]:
    """(reranker, embedding) tiny random checkpoints in `cache_dir`, built on first use (no network)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    missing = [kind for kind in TINY_SEEDS if not (cache_dir / kind / TINY_MARK).exists()]
    if not missing:
        say(f"  reusing tiny random models in {cache_dir}")
    for kind in missing:
        say(f"  building a tiny random {kind} model in {cache_dir / kind} (first run only) ...")
        staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=cache_dir))
        try:
            command = [sys.executable, "-m", "sidecar.cli", "make-tiny-model", str(staging), "--kind", kind]
            command += ["--seed", str(TINY_SEEDS[kind])]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if done.returncode != 0:
                raise DemoError(f"could not build the tiny {kind} model:\n{done.stderr[-3000:]}")
            (staging / TINY_MARK).write_text(f"tiny {kind} seed={TINY_SEEDS[kind]}\n")
            shutil.rmtree(cache_dir / kind, ignore_errors=True)
            with contextlib.suppress(OSError):  # a concurrent demo may have just put one there
                staging.rename(cache_dir / kind)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return cache_dir / "reranker", cache_dir / "embedding"


def hub_problem(name: str) -> str | None:
    """Why `name` cannot load here, found in seconds (the hub client retries for minutes); None if it may."""
    if Path(name).expanduser().is_dir():
        return None
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None
    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
    except ValueError:  # HFValidationError: not a repo id
        return "it is neither a local directory nor a model hub id"
    where = "it is neither a local directory nor in the Hugging Face cache"
    if constants.HF_HUB_OFFLINE:
        return f"{where}, and HF_HUB_OFFLINE is set"
    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout=5).close()
    except OSError as exc:
        return f"{where}, and the model hub ({constants.ENDPOINT}) cannot be reached: {exc}"
    return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Sidecar:
    """`rerank-sidecar serve` as a child process on a loopback port the OS picks."""

    def __init__(self, serve_args: list[str], verbose: bool) -> None:
        self.serve_args, self.verbose = serve_args, verbose
        self.echo = threading.Event()
        self.port: int | None = None
        self._port_seen = threading.Event()
        self._log = ""
        self.process: subprocess.Popen[bytes]
        self._reader: threading.Thread

    def start(self) -> None:
        """Spawn it in its own session: a terminal's Ctrl-C reaches only us, and we stop it in order."""
        command = [sys.executable, "-m", "sidecar.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
        self.process = subprocess.Popen(
            command + self.serve_args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )  # fmt: skip
        self.echo.set()
        self._reader = threading.Thread(target=self._pump, name="sidecar-log", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        """Reader thread: keep the log's tail, spot the bound port, echo while asked to."""
        assert self.process.stdout is not None
        while chunk := os.read(self.process.stdout.fileno(), 65536):
            text = chunk.decode(errors="replace")
            self._log = (self._log + text)[-200_000:]
            if self.port is None and (match := PORT_LINE.search(self._log)):
                self.port = int(match.group(1))
                self._port_seen.set()
            if self.echo.is_set():  # model loading (and downloading) progress
                sys.stderr.write(text)
                sys.stderr.flush()

    def log_tail(self, lines: int = 25) -> str:
        """The last `lines` lines of the sidecar's log (progress-bar redraws as separate lines)."""
        return "\n".join(self._log.replace("\r", "\n").splitlines()[-lines:])

    def _check_alive(self) -> None:
        """Raise `DemoError` with the log's tail if the sidecar has exited."""
        if self.process.poll() is not None:
            time.sleep(0.2)  # let the reader drain the last lines
            raise DemoError(
                f"the sidecar exited with status {self.process.returncode}; its last lines:\n{self.log_tail()}"
            )

    def wait_ready(self, timeout: float) -> str:
        """Block until the sidecar reports SERVING (models loaded and warmed up); return its target."""
        from sidecar.client import RerankerClient

        deadline = time.monotonic() + timeout
        while not self._port_seen.wait(0.2):
            self._check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"the sidecar did not bind a port in {timeout:.0f}s:\n{self.log_tail()}")
        target = f"127.0.0.1:{self.port}"
        with RerankerClient(target, retries=0) as probe:
            while True:
                self._check_alive()
                try:
                    probe.wait_until_ready(timeout=1.0)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise DemoError(f"the sidecar was not ready after {timeout:.0f}s") from None
        if not self.verbose:
            self.echo.clear()
        return target

    def stop(self) -> None:
        """SIGTERM (the server drains in-flight requests and exits), SIGKILL after 20 s."""
        if self.process.poll() is None:
            say("stopping the sidecar ...", file=sys.stderr)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=2)
        say(f"sidecar stopped (exit status {self.process.returncode})", file=sys.stderr)


def open_milvus_lite(path: Path, stack: contextlib.ExitStack) -> Any:
    """A MilvusClient on a Milvus Lite file; on exit its in-process server is stopped too, which flushes it."""
    from pymilvus import MilvusClient

    client = MilvusClient(str(path))

    def close() -> None:
        client.close()  # leaves the server running until interpreter exit: it would write into a removed dir
        with contextlib.suppress(ImportError):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(path))

    stack.callback(close)
    return client


def quiet_engine_logs() -> None:
    """Milvus Lite logs its start-up at INFO, and pymilvus calls one RPC it lacks (a harmless logged ERROR)."""
    for name in ("faiss", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("grpc._server").addFilter(
        lambda record: not (record.exc_info and isinstance(record.exc_info[1], NotImplementedError))
    )


def resolve_models(args: argparse.Namespace) -> tuple[str, str]:
    """(reranker, embedding model) to serve: tiny ones built on first use, or names checked for loadability."""
    if args.tiny:
        if args.model or args.embedding_model:
            raise DemoError("--tiny picks both models: leave out --model and --embedding-model, or --tiny")
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rerank-sidecar" / "tiny"
        reranker, embedder = ensure_tiny_models(args.cache_dir or cache)
        return str(reranker), str(embedder)
    names = args.model or DEFAULT_RERANKER, args.embedding_model or DEFAULT_EMBEDDER
    for name in dict.fromkeys(names):
        if problem := hub_problem(name):
            raise DemoError(
                f"cannot load {name}: {problem}.\n  Run `rerank-sidecar demo --tiny` for an offline demo with tiny random "
                "models,\n  or pass --model and --embedding-model with local checkpoint directories."
            )
    return names
