"""API keys on a real `rerank-sidecar serve` process: the key file plus RERANK_SIDECAR_API_KEY, the Cohere
SDK with its `api_key`, key rotation by SIGHUP on both faces and every HTTP dialect, a bad file on SIGHUP
keeping the keys in use, and no key in any line of the server's log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from sidecar.client import RerankerClient
from tests.api.conftest import Reply, _exchange
from tests.api.security_fixtures import DIALECT_BODIES
from tests.conftest import ServerProcess, free_port

FILE_KEY = "file-key-3c9d1e0a7b6f5e4d"
ENV_KEY = "env-key-9a8b7c6d5e4f3a2b"
ROTATED_KEY = "rotated-key-0e1d2c3b4a596877"
WRONG_KEY = "wrong-key-1234567890abcdef"


@dataclass
class KeyedServer:
    process: ServerProcess
    http_url: str
    key_file: Path

    def http(self, path: str, body: object, key: str | None) -> Reply:
        headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {key}"} if key else {})
        request = urllib.request.Request(self.http_url + path, data=json.dumps(body).encode(), headers=headers)
        return _exchange(request)

    def grpc_code(self, key: str | None) -> grpc.StatusCode:
        with RerankerClient(self.process.target, api_key=key or "", timeout=60, retries=0) as client:
            try:
                client.rerank("red bike", ["a red bicycle"])
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    def hangup_and_wait(self, expected: str) -> None:
        """SIGHUP, then wait for the reload's log line."""
        count = self.process.log().count(expected)
        self.process.process.send_signal(signal.SIGHUP)
        deadline = 200
        while self.process.log().count(expected) == count and deadline:
            time.sleep(0.05)
            deadline -= 1
        assert self.process.log().count(expected) > count, self.process.log()[-2000:]


@pytest.fixture(scope="module")
def keyed(tiny_model_dir, tmp_path_factory, monkeypatch_module) -> Iterator[KeyedServer]:
    root = tmp_path_factory.mktemp("keyed")
    key_file = root / "keys"
    key_file.write_text(f"# the sidecar's keys\n{FILE_KEY}\n")
    http_port = free_port()
    monkeypatch_module.setenv("RERANK_SIDECAR_API_KEY", ENV_KEY)  # inherited by the server process
    process = ServerProcess(
        ["--model", str(tiny_model_dir), "--http-port", str(http_port), "--api-key-file", str(key_file)],
        root / "server.log",
    )
    monkeypatch_module.delenv("RERANK_SIDECAR_API_KEY")
    with process:
        yield KeyedServer(process, f"http://127.0.0.1:{http_port}", key_file)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_both_faces_and_every_dialect_before_rotation(keyed):
    for path, body in DIALECT_BODIES.items():
        assert keyed.http(path, body, None).status == 401
        assert keyed.http(path, body, WRONG_KEY).status == 401
        assert keyed.http(path, body, FILE_KEY).status == 200, path
        assert keyed.http(path, body, ENV_KEY).status == 200, path  # the variable's key beside the file's
    assert keyed.grpc_code(None) == grpc.StatusCode.UNAUTHENTICATED
    assert keyed.grpc_code(WRONG_KEY) == grpc.StatusCode.UNAUTHENTICATED
    assert keyed.grpc_code(FILE_KEY) == keyed.grpc_code(ENV_KEY) == grpc.StatusCode.OK


def test_the_cohere_sdk_reaches_the_sidecar_with_its_api_key(keyed):
    import cohere

    v2 = cohere.ClientV2(api_key=FILE_KEY, base_url=keyed.http_url, timeout=60)
    response = v2.rerank(model="rerank-v3.5", query="red bike", documents=["a red bicycle", "a car"], top_n=1)
    assert len(response.results) == 1 and 0 < response.results[0].relevance_score < 1
    v1 = cohere.Client(api_key=FILE_KEY, base_url=keyed.http_url, timeout=60)
    assert len(v1.rerank(query="red bike", documents=["a red bicycle", "a car"]).results) == 2
    wrong = cohere.ClientV2(api_key=WRONG_KEY, base_url=keyed.http_url, timeout=60)
    with pytest.raises(cohere.errors.UnauthorizedError) as refused:
        wrong.rerank(model="rerank-v3.5", query="red bike", documents=["a car"])
    assert refused.value.body["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("command", ["load-catalogue", "web"])
def test_the_apps_reach_a_keyed_sidecar_with_the_flag_or_the_variable(keyed, command, monkeypatch):
    from sidecar.apps.loader import wait_sidecar
    from sidecar.apps.sidecar_flags import client_options, sidecar_target
    from sidecar.cli import build_parser

    target = keyed.process.target
    for argv, environment in (([f"--sidecar-api-key={FILE_KEY}"], ""), ([], ENV_KEY), ([], "")):
        monkeypatch.setenv("RERANK_SIDECAR_API_KEY", environment)
        args = build_parser().parse_args([command, "--sidecar", f"{target},{target}", *argv])
        client = wait_sidecar(sidecar_target(args.sidecar), 30, **client_options(args))  # health needs no key
        try:
            if argv or environment:
                assert client.model_info().max_documents > 0
            else:
                with pytest.raises(grpc.RpcError) as refused:
                    client.model_info()
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            client.close()


def test_sighup_rotates_the_keys_on_both_faces(keyed):
    keyed.key_file.write_text(f"{ROTATED_KEY}\n")
    keyed.hangup_and_wait(f"SIGHUP: 2 API key(s) in use, read from {keyed.key_file}")
    for path, body in DIALECT_BODIES.items():
        assert keyed.http(path, body, FILE_KEY).status == 401, path
        assert keyed.http(path, body, ROTATED_KEY).status == 200, path
    assert keyed.grpc_code(FILE_KEY) == grpc.StatusCode.UNAUTHENTICATED
    assert keyed.grpc_code(ROTATED_KEY) == keyed.grpc_code(ENV_KEY) == grpc.StatusCode.OK


def test_a_bad_file_on_sighup_keeps_the_keys_in_use(keyed):
    keyed.key_file.write_text(f"{ROTATED_KEY} {FILE_KEY}\n")  # a space: not a key
    keyed.hangup_and_wait("SIGHUP: keeping the 2 API key(s) in use")
    assert "line 1: a key must be printable ASCII without spaces" in keyed.process.log()
    keyed.key_file.unlink()
    keyed.hangup_and_wait("SIGHUP: keeping the 2 API key(s) in use: cannot read the API key file")
    assert keyed.http("/v2/rerank", DIALECT_BODIES["/v2/rerank"], ROTATED_KEY).status == 200
    assert keyed.grpc_code(ROTATED_KEY) == grpc.StatusCode.OK
    assert keyed.process.process.poll() is None


def test_no_key_appears_in_the_log(keyed):
    log = keyed.process.log()
    assert log.count("status=unauthenticated") >= 8  # the refusals were logged...
    for key in (FILE_KEY, ENV_KEY, ROTATED_KEY, WRONG_KEY):
        assert key not in log  # ...without the keys
        assert key[:12] not in log


def test_a_bad_key_file_stops_serve_before_it_binds(tiny_model_dir, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# nothing but a comment\n")
    command = [sys.executable, "-m", "sidecar.cli", "serve", "--model", str(tiny_model_dir)]
    done = subprocess.run(
        [*command, "--port", "0", "--no-http", "--api-key-file", str(keys)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "RERANK_SIDECAR_API_KEY": ""},
    )  # fmt: skip
    assert done.returncode != 0
    assert f"the API key file {keys} holds no key" in done.stderr
