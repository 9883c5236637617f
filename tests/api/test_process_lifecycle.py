"""`rerank-sidecar serve` as a process: the drain ends on time with our own errors, and ports are not shared
by accident."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest

from sidecar.client import RerankerClient
from tests.api.conftest import StalledServer
from tests.conftest import ServerProcess, free_port

DRAIN = 2.0


def http_port(proc: ServerProcess) -> int:
    found = re.search(r"HTTP listening on 127\.0\.0\.1:(\d+)", proc.log())
    assert found, proc.log()
    return int(found.group(1))


def _post(port: int, body: dict) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/rerank",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers["content-type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read()


def test_requests_still_running_when_the_drain_ends_get_503_and_unavailable_and_the_process_exits(
    tiny_model_dir, tmp_path
):
    stalled = StalledServer()  # a media URL that never answers: the requests stay in preprocessing
    args = ["--model", str(tiny_model_dir), "--drain-seconds", str(DRAIN), "--allow-private-urls"]
    proc = ServerProcess([*args, "--fetch-read-timeout-s", "60"], tmp_path / "drain.log")
    try:
        proc.wait_ready()
        port = http_port(proc)
        results: dict[str, object] = {}

        def over_http() -> None:
            results["http"] = _post(port, {"query": "q", "documents": [{"image": stalled.url}]})

        def over_grpc() -> None:
            with RerankerClient(proc.target, timeout=120, retries=0) as client:
                try:
                    client.rerank("q", [{"images": [stalled.url.replace("slow", "slower")]}])
                except grpc.RpcError as exc:
                    results["grpc"] = exc

        threads = [threading.Thread(target=over_http), threading.Thread(target=over_grpc)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # both requests are in flight, waiting on their images
        signalled = time.monotonic()
        proc.process.send_signal(signal.SIGTERM)
        code = proc.process.wait(timeout=60)
        exited = time.monotonic() - signalled
        for thread in threads:
            thread.join(timeout=30)
        status, content_type, body = results["http"]
        assert status == 503 and content_type == "application/json", body
        error = json.loads(body)["error"]
        assert error["code"] == "unavailable" and "drain time (2s) ended" in error["message"]
        assert results["grpc"].code() == grpc.StatusCode.UNAVAILABLE
        assert "drain time (2s) ended" in results["grpc"].details()
        assert code == 0
        assert exited < DRAIN + 8, f"exited {exited:.1f}s after SIGTERM with --drain-seconds {DRAIN}"  # not at 60 s
        assert "status=unavailable" in proc.log() and "Exception in ASGI application" not in proc.log()
    finally:
        proc.stop()
        stalled.close()


def _start(args: list[str], log_path) -> subprocess.Popen:
    command = [sys.executable, "-m", "sidecar.cli", "serve", *args]
    return subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


@pytest.mark.parametrize("face", ["grpc", "http"])
def test_a_second_server_on_a_taken_port_fails_to_start(tiny_model_dir, tmp_path, face):
    grpc_port, http_port_ = free_port(), free_port()
    owner = _start(
        ["--model", str(tiny_model_dir), "--port", str(grpc_port), "--http-port", str(http_port_)],
        tmp_path / "owner.log",
    )
    try:
        with RerankerClient(f"127.0.0.1:{grpc_port}") as client:
            client.wait_until_ready(120)
        taken = (
            ["--port", str(grpc_port), "--http-port", "0"]
            if face == "grpc"
            else ["--port", "0", "--http-port", str(http_port_)]
        )
        second = _start(["--model", str(tiny_model_dir), *taken], tmp_path / "second.log")
        try:
            code = second.wait(timeout=60)
        except subprocess.TimeoutExpired:  # it started and shares the port: the bug this test guards
            second.kill()
            code = second.wait()
        assert code != 0
        log = (tmp_path / "second.log").read_text()
        assert f"cannot bind {'gRPC' if face == 'grpc' else 'HTTP'} to 127.0.0.1:" in log
    finally:
        owner.send_signal(signal.SIGTERM)
        owner.wait(timeout=60)


def test_reuse_port_lets_two_servers_share_both_ports(tiny_model_dir, tmp_path):
    grpc_port, http_port_ = free_port(), free_port()
    args = ["--model", str(tiny_model_dir), "--port", str(grpc_port), "--http-port", str(http_port_), "--reuse-port"]
    servers = [_start(args, tmp_path / f"server{i}.log") for i in range(2)]
    try:
        with RerankerClient(f"127.0.0.1:{grpc_port}") as client:
            client.wait_until_ready(120)
        for i in range(2):
            deadline = time.monotonic() + 120
            while "ready: serving" not in (tmp_path / f"server{i}.log").read_text():
                assert servers[i].poll() is None, (tmp_path / f"server{i}.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert all(server.poll() is None for server in servers)
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(timeout=60)
