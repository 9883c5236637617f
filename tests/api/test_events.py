"""POST /v1/events on a real server process: behind the API key, validated whole, durable on 200 (even across a kill)."""

from __future__ import annotations

import json
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sidecar.experiments.log import ExperimentLog
from sidecar.experiments.records import UbiQuery
from sidecar.experiments.store import SqliteStore
from tests.conftest import ServerProcess, free_port

KEY = "events-test-key"


class EventsServer:
    def __init__(self, model: Path, db: Path, log: Path, keys: Path) -> None:
        self.http_port = free_port()
        args = ["--model", str(model), "--http-port", str(self.http_port), "--events-db", str(db),
                "--api-key-file", str(keys)]  # fmt: skip
        self.process = ServerProcess(args, log)

    def post(self, body: object, key: str | None = KEY) -> tuple[int, dict]:
        headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/v1/events",
                                         data=json.dumps(body).encode(), headers=headers, method="POST")  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(KEY + "\n")
    return path


def served(db: Path, *query_ids: str) -> None:
    """What the application's search_and_rerank(experiment=...) logs: the served lists."""
    with ExperimentLog(SqliteStore(db)) as log:
        for qid in query_ids:
            log.log_query(UbiQuery(query_id=qid, client_id="c", user_query="q", query_response_hit_ids=("d1", "d2", "d3"),
                                   query_attributes={"experiment": "e", "design": "ab", "arm": "a", "arms": ["a"]}))  # fmt: skip


def click(qid: str, hit: str = "d2", position: int = 2, **extra) -> dict:
    return {"action_name": "click", "query_id": qid, "session_id": "s1", **extra,
            "event_attributes": {"object": {"object_id": hit}, "position": {"ordinal": position}}}  # fmt: skip


def test_events_are_checked_whole_and_recorded(tiny_model_dir, tmp_path, keys) -> None:
    db = tmp_path / "log.db"
    served(db, "q1")
    server = EventsServer(tiny_model_dir, db, tmp_path / "server.log", keys)
    with server.process:
        assert server.post({"events": [click("q1")]}, key=None)[0] == 401
        status, body = server.post({"events": [click("q1"), click("q1", hit="d9")]})
        assert status == 422 and "events[1]: hit 'd9' was not served" in body["error"]["message"]
        status, body = server.post({"events": [click("q1"), {"action_name": "click"}]})
        assert status == 422 and "events[1]: query_id is required" in body["error"]["message"]
        status, body = server.post(click("nobody"))
        assert status == 422 and "'nobody' is not a logged query" in body["error"]["message"]
        assert server.post({"events": []})[0] == 422
        assert SqliteStore(db).counts() == (1, 0)  # nothing of the refused bodies
        assert server.post({"events": [click("q1"), click("q1", hit="d1", position=1)]}) == (200, {"recorded": 2})
        assert server.post(click("q1", event_id="retry-1")) == (200, {"recorded": 1})
        assert server.post(click("q1", event_id="retry-1")) == (200, {"recorded": 1})  # a retry: stored once
    assert SqliteStore(db).counts() == (1, 3)


def test_every_acknowledged_event_survives_a_kill(tiny_model_dir, tmp_path, keys) -> None:
    db = tmp_path / "log.db"
    served(db, *[f"q{i}" for i in range(50)])
    server = EventsServer(tiny_model_dir, db, tmp_path / "server.log", keys)
    acknowledged: list[str] = []
    with server.process:
        stop = threading.Event()

        def post_forever() -> None:
            i = 0
            while not stop.is_set():
                event_id = f"e{i}"
                try:
                    status, _ = server.post(click(f"q{i % 50}", event_id=event_id))
                except OSError:
                    return  # the server is gone
                if status == 200:
                    acknowledged.append(event_id)
                i += 1

        threads = [threading.Thread(target=post_forever) for _ in range(4)]
        for t in threads:
            t.start()
        while len(acknowledged) < 200:
            threading.Event().wait(0.05)
        server.process.process.send_signal(signal.SIGKILL)
        server.process.process.wait()
        stop.set()
        for t in threads:
            t.join(30)
    assert len(acknowledged) >= 200
    restarted = EventsServer(tiny_model_dir, db, tmp_path / "restarted.log", keys)
    with restarted.process:
        assert restarted.post(click("q0", event_id="after"))[0] == 200
    stored = {e.event_id for e in SqliteStore(db).read_events()}
    assert set(acknowledged) <= stored, sorted(set(acknowledged) - stored)[:5]
