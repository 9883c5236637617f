"""Three `rerank-sidecar serve` replicas behind one client target: gRPC's round_robin spreads the calls, and
when one replica is SIGKILLed while it scores a request, that call is retried on a survivor by the client's
retry policy: every call is answered, none is lost. Per-replica counts come from each replica's /metrics.
The load is bounded in time and count, on loopback only.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sidecar.client import AsyncRerankerClient, RerankerClient
from tests.conftest import ServerProcess, free_port

DOCUMENTS = [f"document {i}: a red bicycle leaning on a wall in the old town, " * 3 for i in range(24)]
LOAD_SECONDS = 20.0  # the whole load, kill included
MAX_CALLS = 400  # per run, whatever the speed


@dataclass
class Replica:
    process: ServerProcess
    http_port: int

    def metric(self, name: str, **labels: str) -> float:
        """One sample of this replica's /metrics (0 when the series has no sample yet)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def answered(self) -> int:
        return int(self.metric("rerank_sidecar_requests_total", face="grpc", route="Rerank", status="ok"))


@dataclass
class Load:
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def replicas(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> Iterator[list[Replica]]:
    # Replicas sharing CPU cores must not spin while idle (bench/results/replicas-cpu): the README's advice.
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    started = []
    try:
        for i in range(3):  # all three load their models at once
            port = free_port()
            args = ["--model", str(tiny_model_dir), "--http-port", str(port), "--max-batch-tokens", "512"]
            started.append(Replica(ServerProcess(args, tmp_path / f"replica-{i}.log"), port))
        for replica in started:
            replica.process.wait_ready()
        yield started
    finally:
        for replica in started:
            replica.process.stop()


def run_load(client: RerankerClient, load: Load, until: float, workers: int = 4) -> list[threading.Thread]:
    def work() -> None:
        while time.monotonic() < until:
            with load.lock:
                if load.answered + len(load.failures) >= MAX_CALLS:
                    return
            try:
                response = client.rerank("red bicycle", DOCUMENTS, timeout=60)
                assert len(response.results) == len(DOCUMENTS)
                with load.lock:
                    load.answered += 1
            except (grpc.RpcError, AssertionError) as exc:
                with load.lock:
                    load.failures.append(repr(exc)[:300])

    threads = [threading.Thread(target=work, name=f"load-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    return threads


def wait_for_calls(load: Load, calls: int, timeout: float = 30.0) -> None:
    """Until the load has had `calls` answers: the kill must come while calls are still being sent
    (a fast engine reaches MAX_CALLS within seconds, so a fixed sleep could outlast the load)."""
    deadline = time.monotonic() + timeout
    while load.answered + len(load.failures) < calls:
        assert time.monotonic() < deadline, f"only {load.answered} calls answered in {timeout:.0f}s"
        time.sleep(0.01)


def kill_while_busy(replica: Replica, timeout: float = 10.0) -> None:
    """SIGKILL once the replica holds a request it has not answered (it is scoring it)."""
    deadline = time.monotonic() + timeout
    while replica.metric("rerank_sidecar_queue_requests") < 1:
        assert time.monotonic() < deadline, "the replica never received a request"
        time.sleep(0.02)
    replica.process.process.kill()


def test_a_replica_killed_mid_request_loses_no_call(replicas):
    victim, survivors = replicas[1], [replicas[0], replicas[2]]
    client = RerankerClient([r.process.target for r in replicas], timeout=60, retries=4, backoff=0.05)
    load = Load()
    started = time.monotonic()
    threads = run_load(client, load, started + LOAD_SECONDS)
    wait_for_calls(load, MAX_CALLS // 10)  # well into the load, long before MAX_CALLS ends it
    kill_while_busy(victim)
    for thread in threads:
        thread.join(timeout=LOAD_SECONDS + 120)
    client.close()
    assert not load.failures, load.failures[:5]
    counts = [survivor.answered() for survivor in survivors]
    victim_answered = victim.process.log().count("Rerank docs=24")  # /metrics is gone with the process
    # Every call was answered once; a call the victim was scoring was answered again by a survivor.
    assert sum(counts) + victim_answered >= load.answered >= 20
    assert sum(counts) + victim_answered <= load.answered + 4  # at most the in-flight calls, answered twice
    assert all(count >= load.answered / 5 for count in counts), (counts, victim_answered, load.answered)
    assert victim.process.process.poll() is not None


def test_without_retries_the_same_kill_fails_calls(replicas):
    """The control: the retry policy is what saves the in-flight calls."""
    victim = replicas[0]
    client = RerankerClient([r.process.target for r in replicas], timeout=60, retries=0)
    load = Load()
    threads = run_load(client, load, time.monotonic() + 8.0)
    wait_for_calls(load, MAX_CALLS // 10)
    kill_while_busy(victim)
    for thread in threads:
        thread.join(timeout=120)
    client.close()
    assert any("UNAVAILABLE" in failure for failure in load.failures), load.failures


async def test_the_async_client_spreads_calls_and_takes_a_dns_target(replicas):
    targets = [r.process.target for r in replicas]
    before = [r.answered() for r in replicas]
    async with AsyncRerankerClient(targets, timeout=60) as client:
        await client.wait_until_ready(timeout=30)
        for _ in range(30):
            await client.rerank("red", ["a red bicycle"])
    spread = [r.answered() - b for r, b in zip(replicas, before)]
    assert sum(spread) == 30 and min(spread) >= 5, spread  # round robin over the connected replicas
    # localhost resolves to 127.0.0.1 and ::1; the replica listens on the first only, and the call gets there.
    async with AsyncRerankerClient(f"dns:///localhost:{replicas[2].process.port}", timeout=60) as client:
        await client.rerank("red", ["a red bicycle"])
    assert replicas[2].answered() == before[2] + spread[2] + 1
