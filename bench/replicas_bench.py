"""Several GPUs: one process per GPU behind the client's balancing, or N workers in one process? What a CPU shows.

Measured here (CPU only; nothing in it stands for a GPU figure):

A. Host-side preparation (media decoding, prompt building, tokenisation: `RerankerModel.prepare`) by
   2 workers as threads of one process (the shape `serve --devices 0,1` would have: one Python
   interpreter, one GIL, for every GPU's requests) and as 2 processes (one per GPU), against 1 worker.
B. Three `rerank-sidecar serve` replicas (tiny model) behind one client target: the per-call cost of
   gRPC's round_robin over a list against one direct target (with OpenMP's default spin-waiting and
   with OMP_WAIT_POLICY=PASSIVE: replicas sharing CPU cores), how the calls spread, and a SIGKILL of
   one replica under 4 concurrent clients (calls answered, failed, latency around the kill).

    python bench/replicas_bench.py --out bench/results/replicas-cpu
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workloads  # noqa: E402

PREPARE_SECONDS = 15.0  # per configuration of part A
LOAD_SECONDS, KILL_AT = 24.0, 8.0  # part B's failover run


# ---- A: preparation, threads of one process vs processes ------------------------------------------------


def _load(model_dir: str):
    import torch

    from sidecar.models.loading import load_pretrained
    from sidecar.models.reranker import RerankerModel

    torch.set_num_threads(1)
    model, processor = load_pretrained(model_dir, torch.device("cpu"), torch.float32)
    return RerankerModel(model_dir, model, processor)


def _request(reranker, kind: str):
    from sidecar.types import RerankInput

    tokenizer = reranker.tokenizer
    if kind == "text":
        return RerankInput(workloads.text_query(), workloads.text_documents(tokenizer, 100))
    return RerankInput(workloads.text_query(), workloads.image_documents(tokenizer, 20))


def _prepare_loop(reranker, request, until: float) -> int:
    """Prepare `request` again and again until `until`; the number of pairs prepared."""
    from sidecar.media import MediaPolicy, MediaResolver

    pairs = 0
    while time.monotonic() < until:
        reranker.prepare(request, MediaResolver(MediaPolicy()), True, 0)
        pairs += len(request.documents)
    return pairs


def _process_worker(model_dir: str, kind: str, ready, go, out) -> None:
    reranker = _load(model_dir)
    request = _request(reranker, kind)
    _prepare_loop(reranker, request, time.monotonic() + 2)  # warm-up
    ready.put(True)
    go.wait()
    out.put(_prepare_loop(reranker, request, time.monotonic() + PREPARE_SECONDS))


def preparation(model_dir: str) -> list[dict]:
    reranker = _load(model_dir)
    rows = []
    for kind in ("text", "image"):
        request = _request(reranker, kind)
        _prepare_loop(reranker, request, time.monotonic() + 2)  # warm-up
        for layout in ("1 worker", "2 threads, one process", "2 processes"):
            if layout == "2 processes":
                context = multiprocessing.get_context("spawn")
                ready, out, go = context.Queue(), context.Queue(), context.Event()
                procs = [
                    context.Process(target=_process_worker, args=(model_dir, kind, ready, go, out)) for _ in range(2)
                ]
                for proc in procs:
                    proc.start()
                for _ in procs:  # both loaded and warm before the clock starts
                    ready.get(timeout=600)
                go.set()
                pairs = sum(out.get(timeout=300) for _ in procs)
                for proc in procs:
                    proc.join()
            else:
                workers = 1 if layout == "1 worker" else 2
                counts = [0] * workers
                until = time.monotonic() + PREPARE_SECONDS

                def run(slot: int, counts: list[int], request=request, until: float = until) -> None:
                    counts[slot] = _prepare_loop(reranker, request, until)

                threads = [threading.Thread(target=run, args=(i, counts)) for i in range(workers)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                pairs = sum(counts)
            rows.append({"workload": kind, "layout": layout, "pairs_per_s": round(pairs / PREPARE_SECONDS, 1)})
            print(rows[-1], flush=True)
    return rows


# ---- B: replicas behind one target -------------------------------------------------------------------------


def replicas(model_dir: str, workdir: Path, omp_wait_policy: str | None, failover: bool) -> dict:
    """Three replicas started with OMP_WAIT_POLICY=`omp_wait_policy` (None: OpenMP's default, spinning)."""
    from sidecar.client import RerankerClient
    from tests.conftest import ServerProcess

    saved = os.environ.pop("OMP_WAIT_POLICY", None)
    if omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = omp_wait_policy  # inherited by the server processes only
    try:
        servers = [ServerProcess(["--model", model_dir], workdir / f"replica-{i}.log") for i in range(3)]
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
        if saved is not None:
            os.environ["OMP_WAIT_POLICY"] = saved
    try:
        for server in servers:
            server.wait_ready()
        targets = [s.target for s in servers]
        clients = {"direct": RerankerClient(targets[0], timeout=60), "round_robin over 3": RerankerClient(targets)}
        times: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():
            for _ in range(20):  # connections up, every replica warm
                client.rerank("red", ["a red bicycle"])
        for _ in range(10):  # interleaved blocks, so that the shared machine's load drifts under both alike
            for name, client in clients.items():
                for _ in range(20):
                    start = time.perf_counter()
                    client.rerank("red", ["a red bicycle"])
                    times[name].append((time.perf_counter() - start) * 1000)
        for client in clients.values():
            client.close()
        latency = {
            name: {"p50_ms": round(statistics.median(t), 2), "p95_ms": round(_pct(t, 95), 2)}
            for name, t in times.items()
        }
        spread = [s.log().count("Rerank docs=1 ") for s in servers]
        result = {"omp_wait_policy": omp_wait_policy or "default", "latency_one_doc": latency}
        result["calls_per_replica_1_doc"] = spread
        if failover:
            result["failover"] = _failover(servers)
        return result
    finally:
        for server in servers:
            server.stop()


def _failover(servers) -> dict:
    from sidecar.client import RerankerClient

    documents = [f"document {i}: a red bicycle leaning on a wall in the old town, " * 3 for i in range(24)]
    client = RerankerClient([s.target for s in servers], timeout=60, retries=4, backoff=0.05)
    records: list[tuple[float, float, bool]] = []  # (start offset, ms, ok)
    lock, start = threading.Lock(), time.monotonic()

    def work() -> None:
        while time.monotonic() - start < LOAD_SECONDS:
            began = time.monotonic()
            try:
                ok = len(client.rerank("red bicycle", documents).results) == len(documents)
            except Exception:  # noqa: BLE001 - counted as a failed call
                ok = False
            with lock:
                records.append((began - start, (time.monotonic() - began) * 1000, ok))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(KILL_AT)
    servers[1].process.kill()
    for thread in threads:
        thread.join()
    client.close()
    before = [ms for t, ms, ok in records if t + ms / 1000 < KILL_AT]
    around = [ms for t, ms, ok in records if t <= KILL_AT <= t + ms / 1000]
    after = [ms for t, ms, ok in records if t > KILL_AT]
    counts = [s.log().count("Rerank docs=24") for s in servers]
    return {
        "calls": len(records),
        "failed": sum(not ok for _, _, ok in records),
        "answered_per_replica": counts,
        "latency_before_kill": _summary(before),
        "latency_in_flight_at_kill": _summary(around),
        "latency_after_kill": _summary(after),
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _summary(values: list[float]) -> dict:
    if not values:
        return {"calls": 0}
    return {
        "calls": len(values),
        "p50_ms": round(statistics.median(values)),
        "p99_ms": round(_pct(values, 99)),
        "max_ms": round(max(values)),
    }


def machine() -> dict:
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cpu (no GPU on this machine)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from sidecar.models.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(make_tiny_model(Path(tmp) / "tiny", shape="tiny", seed=0))
        results = {"machine": machine(), "preparation": preparation(model_dir)}
        results["replicas"] = [
            replicas(model_dir, Path(tmp), None, failover=False),
            replicas(model_dir, Path(tmp), "PASSIVE", failover=True),
        ]
        results["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
