"""The embedded store and the batched log: round trips, refusals that write nothing, and a crash mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sidecar.experiments.errors import ExperimentError
from sidecar.experiments.log import ExperimentLog, ExperimentLogFull, record_event
from sidecar.experiments.records import UbiEvent, UbiQuery
from sidecar.experiments.store import SqliteStore, open_store

REPO = Path(__file__).resolve().parents[2]


def query(qid: str, hits=("d1", "d2", "d3"), experiment: str = "e") -> UbiQuery:
    return UbiQuery(query_id=qid, client_id="c", user_query="red shoes", query_response_hit_ids=hits,
                    query_attributes={"experiment": experiment, "design": "ab", "arm": "a"})  # fmt: skip


def test_round_trip_in_ubi_shape(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    q = query("q1")
    e = UbiEvent(action_name="click", query_id="q1", object_id="d2", position=2, session_id="s1")
    store.write([q], [e])
    store.write([], [e])  # the same event id again: kept once
    assert list(store.read_queries()) == [q] and list(store.read_events()) == [e]
    assert store.counts() == (1, 1)
    doc = e.to_document()
    assert doc["event_attributes"] == {
        "object": {"object_id": "d2", "object_id_field": "id"},
        "position": {"ordinal": 2},
    }
    assert set(q.to_document()) >= {"query_id", "client_id", "user_query", "query_attributes", "timestamp",
                                     "query_response_hit_ids", "application"}  # fmt: skip
    assert list(store.read_queries("other")) == [] and store.known_queries(["q1", "zz"]) == {"q1": q}
    store.close()
    assert list(open_store(f"sqlite:{tmp_path / 'log.db'}").read_queries()) == [q]


def test_duplicate_query_writes_nothing_of_its_batch(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    store.write([query("q1")], [])
    with pytest.raises(ExperimentError, match="'q1' is already logged"):
        store.write([query("q2"), query("q1")], [UbiEvent(action_name="click", query_id="q2")])
    assert store.counts() == (1, 0)
    with pytest.raises(ExperimentError, match="appears twice"):
        store.write([query("q3"), query("q3")], [])


@pytest.mark.parametrize(
    "event, message",
    [
        (dict(action_name="click", query_id="nope"), "'nope' is not a logged query"),
        (dict(action_name="click", query_id="q1", object_id="d9"), "'d9' was not served"),
        (dict(action_name="click", query_id="q1", object_id="d1", position=2), "served at position 1, not 2"),
        (dict(action_name="click", query_id="q1", position=4), "past the 3 hits"),
    ],
)
def test_events_that_do_not_fit_their_query_are_refused(tmp_path: Path, event: dict, message: str) -> None:
    with ExperimentLog(SqliteStore(tmp_path / "log.db")) as log:
        log.log_query(query("q1")).wait(10)
        good = UbiEvent(action_name="impression", query_id="q1")
        with pytest.raises(ExperimentError, match=message):
            log.log_events([good, UbiEvent(**event)])
        log.flush(10)
        assert log.store.counts() == (1, 0)  # the good event of the refused call was not written either


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"query_id": "q1"}, "events\\[0\\]: action_name is required"),
        ({"action_name": "click"}, "events\\[0\\]: query_id is required"),
        ({"action_name": "click", "query_id": "q1", "event_attributes": {"position": {"ordinal": 0}}}, "at least 1"),
        ({"action_name": "click", "query_id": "q1", "event_attributes": {"position": {"ordinal": "2"}}}, "integer"),
        ({"action_name": "click", "query_id": "q1", "event_attributes": []}, "must be an object"),
        ({"action_name": "click", "query_id": "q1", "timestamp": "yesterday"}, "ISO 8601"),
        ("click", "must be an object"),
    ],
)
def test_malformed_event_documents_name_the_field(doc: object, message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        UbiEvent.from_document(doc, index=0)  # type: ignore[arg-type]


def test_queued_query_accepts_events_at_once_and_duplicates_are_refused(tmp_path: Path) -> None:
    with ExperimentLog(SqliteStore(tmp_path / "log.db")) as log:
        log.log_query(query("q1"))
        receipt = record_event(log, "click", "q1", object_id="d3", position=3)
        with pytest.raises(ExperimentError, match="already logged"):
            log.log_query(query("q1"))
        receipt.wait(10)
        with pytest.raises(ExperimentError, match="already logged"):
            log.log_query(query("q1"))  # now from the store
    assert SqliteStore(tmp_path / "log.db").counts() == (1, 1)


def test_a_full_queue_refuses_instead_of_growing(tmp_path: Path) -> None:
    class Stuck(SqliteStore):
        def write(self, queries, events):
            time.sleep(0.5)
            super().write(queries, events)

    with ExperimentLog(Stuck(tmp_path / "log.db"), max_pending=2) as log:
        for i in range(3):
            log.log_query(query(f"q{i}"))
        with pytest.raises(ExperimentLogFull, match="at most 2"):
            for i in range(3, 6):
                log.log_query(query(f"q{i}"))


WRITER = """
import sys
from sidecar.experiments.log import ExperimentLog, record_event
from sidecar.experiments.records import UbiQuery
from sidecar.experiments.store import SqliteStore
log = ExperimentLog(SqliteStore(sys.argv[1]), batch_size=16)
for q in range(100000):
    qid = f"q{q}"
    log.log_query(UbiQuery(query_id=qid, client_id="c", user_query="x", query_response_hit_ids=("d1", "d2")))
    receipts = [record_event(log, "click", qid, object_id="d1", position=1, event_id=f"{qid}-{i}") for i in range(3)]
    for i, r in enumerate(receipts):
        r.wait()
        print(f"{qid}-{i}", flush=True)
"""


def test_every_acknowledged_event_survives_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    acknowledged = []
    assert process.stdout is not None
    while len(acknowledged) < 600:
        line = process.stdout.readline()
        assert line, "the writer stopped early"
        acknowledged.append(line.strip())
    process.send_signal(signal.SIGKILL)
    acknowledged += [line.strip() for line in process.stdout]  # acknowledged before the kill landed
    process.wait()
    store = SqliteStore(path)
    stored = {e.event_id for e in store.read_events()}
    assert set(acknowledged) <= stored
    queries = {q.query_id for q in store.read_queries()}
    assert {e.query_id for e in store.read_events()} <= queries  # no event without its query
    ExperimentLog(store).log_query(query(f"after-{len(stored)}")).wait(10)  # the file is usable after the crash
