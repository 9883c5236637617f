"""API keys on both faces, in this process: every route and RPC refuses a missing or wrong key and serves
the right one; probes, gRPC health and /metrics stay open while their flags say so; the key file is
re-read by `ApiKeys.reload` (what SIGHUP calls; the signal itself is tested in tests/test_auth_server.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from starlette.routing import Route

from sidecar.api.auth import ApiKeys
from sidecar.api.grpc_server import start_grpc_server
from sidecar.api.http_app import build_app, start_http_server
from sidecar.client import AsyncRerankerClient
from sidecar.server import Runtime
from tests.api.security_fixtures import DIALECT_BODIES, Http

KEY_A = "key-a-7d2f0c1e9b8a"
KEY_B = "key-b-0f3e6a5d4c21"
ROTATED = "key-c-rotated-5e6f7a8b"


@dataclasses.dataclass
class Faces:
    """Both faces over one keyed runtime."""

    runtime: Runtime
    http: Http
    grpc_target: str
    key_file: object


@pytest.fixture(scope="module")
async def faces(api_settings, reranker, tmp_path_factory):
    from sidecar.scheduler import Engine

    key_file = tmp_path_factory.mktemp("keys") / "keys"
    key_file.write_text(f"# rotation: both keys are accepted\n{KEY_A}\n\n  {KEY_B}  \n")
    settings = dataclasses.replace(api_settings, api_key_file=key_file)
    runtime = Runtime(settings)
    runtime.engine = Engine(settings, reranker)
    grpc_server, health, grpc_port = await start_grpc_server(runtime, "127.0.0.1", 0)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    http_server, http_port = await start_http_server(runtime, "127.0.0.1", 0)
    yield Faces(runtime, Http(http_port), f"127.0.0.1:{grpc_port}", key_file)
    await http_server.stop()
    await grpc_server.stop(None)
    runtime.engine.close()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def router(app):
    """The Starlette application inside the face's ASGI middleware (each wraps the next as `.app`)."""
    while not hasattr(app, "routes"):
        app = app.app
    return app


def protected_routes(runtime: Runtime) -> list[tuple[str, str]]:
    """(method, path) of every route of the HTTP face that needs a key: new routes are covered too."""
    routes = [r for r in router(build_app(runtime)).routes if isinstance(r, Route)]
    return [
        (method, route.path)
        for route in routes
        if route.path not in runtime.api_keys.public_paths
        for method in sorted(route.methods - {"HEAD"})
    ]


def assert_refused(reply, message: str) -> None:
    assert reply.status == 401, reply.raw
    assert reply.headers["www-authenticate"].startswith("Bearer")
    error = reply.error()
    assert error["code"] == "unauthenticated"
    assert message in error["message"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "an API key is required"),
        (bearer("not-a-key"), "the API key is not valid"),
        (bearer(KEY_A + "x"), "the API key is not valid"),
        (bearer(KEY_A[:-1]), "the API key is not valid"),
        ({"authorization": f"Basic {KEY_A}"}, "must be 'Bearer <key>'"),
        ({"authorization": KEY_A}, "must be 'Bearer <key>'"),
        ({"authorization": "Bearer "}, "must be 'Bearer <key>'"),
    ],
)
async def test_every_http_route_refuses_a_missing_or_wrong_key(faces, headers, message):
    routes = protected_routes(faces.runtime)
    assert {path for _, path in routes} >= {*DIALECT_BODIES, "/info"}
    for method, path in routes:
        reply = await faces.http.call(method, path, DIALECT_BODIES.get(path, {}), headers)
        assert_refused(reply, message)


@pytest.mark.parametrize("key", [KEY_A, KEY_B])
async def test_each_dialect_serves_every_key_of_the_file(faces, key):
    for path, body in DIALECT_BODIES.items():
        reply = await faces.http.call("POST", path, body, bearer(key))
        assert reply.status == 200, (path, reply.raw)
    scheme_in_any_case = {"authorization": f"bEaReR {key}"}
    assert (await faces.http.call("GET", "/info", None, scheme_in_any_case)).status == 200


async def test_probes_answer_without_a_key(faces):
    for path in ("/health", "/ready", "/.well-known/ready", "/.well-known/live"):  # the last two: Weaviate's module
        assert (await faces.http.call("GET", path)).status == 200, path


async def test_unknown_routes_are_refused_before_they_are_looked_up(faces):
    assert_refused(await faces.http.call("GET", "/nowhere"), "an API key is required")
    assert (await faces.http.call("GET", "/nowhere", None, bearer(KEY_A))).status == 404


@pytest.mark.parametrize(("key", "message"), [(None, "an API key is required"), ("wrong", "the API key is not valid")])
async def test_every_rpc_refuses_a_missing_or_wrong_key(faces, key, message):
    async with AsyncRerankerClient(faces.grpc_target, api_key=key or "", timeout=30, retries=0) as client:
        for call in (client.rerank("q", ["d"]), client.embed(["d"]), client.model_info()):
            with pytest.raises(grpc.RpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in refused.value.details()
    async with grpc.aio.insecure_channel(faces.grpc_target) as channel:  # a streaming service: reflection
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        with pytest.raises(grpc.RpcError) as refused:
            async for _ in call:
                pass
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_rpcs_serve_the_right_key_and_health_is_open(faces):
    async with AsyncRerankerClient(faces.grpc_target, api_key=KEY_B, timeout=60, retries=0) as client:
        assert len((await client.rerank("red bike", ["a red bicycle", "a car"])).results) == 2
        assert (await client.model_info()).max_documents > 0
        with pytest.raises(grpc.RpcError) as no_embedder:  # past the key check: the engine's own answer
            await client.embed(["d"])
        assert no_embedder.value.code() == grpc.StatusCode.UNIMPLEMENTED
    async with grpc.aio.insecure_channel(faces.grpc_target) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_client_reads_the_key_from_the_environment(faces, monkeypatch):
    monkeypatch.setenv("RERANK_SIDECAR_API_KEY", KEY_A)
    async with AsyncRerankerClient(faces.grpc_target, timeout=60, retries=0) as client:
        assert (await client.model_info()).max_documents > 0
    async with AsyncRerankerClient(faces.grpc_target, api_key="", timeout=60, retries=0) as client:
        with pytest.raises(grpc.RpcError) as refused:  # "" sends no key, whatever the environment says
            await client.model_info()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_reload_swaps_the_keys_and_a_bad_file_keeps_them(faces, caplog):
    api_keys = faces.runtime.api_keys
    try:
        faces.key_file.write_text(f"{ROTATED}\n")
        api_keys.reload()
        assert_refused(await faces.http.call("GET", "/info", None, bearer(KEY_A)), "not valid")
        assert (await faces.http.call("GET", "/info", None, bearer(ROTATED))).status == 200
        for bad in ("# only a comment\n", "two words\n"):
            faces.key_file.write_text(bad)
            api_keys.reload()
            assert (await faces.http.call("GET", "/info", None, bearer(ROTATED))).status == 200
        assert "keeping the 1 API key(s) in use" in caplog.text
        assert "line 1: a key must be printable ASCII without spaces" in caplog.text
        assert "two words" not in caplog.text
    finally:
        faces.key_file.write_text(f"{KEY_A}\n{KEY_B}\n")
        api_keys.reload()


@pytest.mark.parametrize("flag", ["public_probes", "public_grpc_health", "public_metrics"])
def test_each_exemption_is_a_flag(api_settings, flag):
    open_keys = ApiKeys(dataclasses.replace(api_settings, api_key=KEY_A))
    closed = ApiKeys(dataclasses.replace(api_settings, api_key=KEY_A, **{flag: False}))
    opened = {
        "public_probes": {"/health", "/ready", "/.well-known/ready", "/.well-known/live"},
        "public_metrics": {"/metrics"},
        "public_grpc_health": {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"},
    }[flag]
    assert opened <= open_keys.public_paths | open_keys.public_methods
    assert not opened & (closed.public_paths | closed.public_methods)


async def test_closed_probes_and_health_need_the_key(api_settings, reranker):
    from sidecar.scheduler import Engine

    settings = dataclasses.replace(api_settings, api_key=KEY_A, public_probes=False, public_grpc_health=False)
    runtime = Runtime(settings)
    runtime.engine = Engine(settings, reranker)
    http_server, http_port = await start_http_server(runtime, "127.0.0.1", 0)
    grpc_server, health, grpc_port = await start_grpc_server(runtime, "127.0.0.1", 0)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        http = Http(http_port)
        assert_refused(await http.call("GET", "/ready"), "an API key is required")
        assert (await http.call("GET", "/ready", None, bearer(KEY_A))).status == 200
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with AsyncRerankerClient(f"127.0.0.1:{grpc_port}", api_key=KEY_A) as client:
            await client.wait_until_ready(timeout=10)  # the client's health checks carry the key
    finally:
        await http_server.stop()
        await grpc_server.stop(None)
        runtime.engine.close()


def test_no_key_configured_installs_nothing(api_settings):
    api_keys = ApiKeys(api_settings)
    assert not api_keys.enabled
    assert router(build_app(Runtime(api_settings))).user_middleware == []


def test_every_key_is_compared_whichever_matches(api_settings, tmp_path, monkeypatch):
    """No early exit: the time taken does not tell which key matched (or that none did)."""
    keys = tmp_path / "keys"
    keys.write_text("first-key-123\nsecond-key-456789\nthird\n")
    api_keys = ApiKeys(dataclasses.replace(api_settings, api_key_file=keys))
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((len(a), len(b))) or real(a, b))
    for presented, expected in [("first-key-123", True), ("third", True), ("nope", False), ("x" * 500, False)]:
        calls.clear()
        assert api_keys.accepts(presented) is expected
        assert calls == [(32, 32)] * 3  # fixed-length digests, every key compared


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "holds no key"),
        ("# nothing\n\n", "holds no key"),
        ("good-key\nbad key\n", "line 2: a key must be printable ASCII"),
        ("naïve-key\n", "line 1: a key must be printable ASCII"),
    ],
)
def test_a_bad_key_file_stops_the_server_and_names_the_line(api_settings, tmp_path, text, reason):
    keys = tmp_path / "keys"
    keys.write_text(text)
    with pytest.raises(SystemExit) as stopped:
        Runtime(dataclasses.replace(api_settings, api_key_file=keys))
    assert reason in str(stopped.value) and "bad key" not in str(stopped.value)


def test_a_missing_key_file_stops_the_server(api_settings, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        Runtime(dataclasses.replace(api_settings, api_key_file=tmp_path / "absent"))
    assert "cannot read the API key file" in str(stopped.value)


def test_the_client_never_shows_its_key():
    client = AsyncRerankerClient("127.0.0.1:1", api_key=KEY_A)
    assert ("authorization", f"Bearer {KEY_A}") in client.spec.metadata
    assert KEY_A not in repr(client.spec) and KEY_A not in repr(client)


async def test_a_changed_key_file_is_read_without_a_signal(api_settings, tmp_path, caplog):
    """A Kubernetes Secret update replaces the mounted file (a symlink swap): the watcher picks it up."""
    caplog.set_level(logging.INFO, logger="sidecar.auth")
    keys = tmp_path / "keys"
    (tmp_path / "v1").write_text(f"{KEY_A}\n")
    keys.symlink_to(tmp_path / "v1")
    api_keys = ApiKeys(dataclasses.replace(api_settings, api_key_file=keys))
    watcher = asyncio.ensure_future(api_keys.watch(interval=0.05))
    try:
        await asyncio.sleep(0.2)
        assert "changed" not in caplog.text  # nothing changed, nothing re-read
        (tmp_path / "v2").write_text(f"{ROTATED}\n")
        keys.unlink()
        keys.symlink_to(tmp_path / "v2")
        for _ in range(100):
            if api_keys.accepts(ROTATED):
                break
            await asyncio.sleep(0.05)
        assert api_keys.accepts(ROTATED) and not api_keys.accepts(KEY_A)
        assert "the API key file changed: 1 API key(s) in use" in caplog.text
    finally:
        watcher.cancel()
