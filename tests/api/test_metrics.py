"""`GET /metrics`, read with prometheus-client's own parser: after known traffic, every counter and
histogram count moved by exactly what was sent."""

from __future__ import annotations

import base64
import re
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar._proto.rerank.v1 import reranker_pb2_grpc as pb_grpc
from tests.api.conftest import IMAGE
from tests.conftest import ServerProcess, free_port


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample as {(name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Scrape:
    """The change of each sample between two scrapes of one server."""

    def __init__(self, before: dict, after: dict) -> None:
        self.before, self.after = before, after

    def delta(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)

    def value(self, name: str, **labels: str) -> float:
        return self.after[(name, frozenset(labels.items()))]


async def scrape(http) -> dict:
    reply = await http.get("/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain; version=")
    return parse(reply.raw.decode())


async def test_counters_and_histograms_count_exactly_what_was_sent(http, grpc_target):
    before = await scrape(http)
    input_tokens = computed_tokens = 0
    for documents in (["a", "b"], ["a", "b"], ["c", "d"]):
        reply = await http.post("/v2/rerank", {"query": "q", "documents": documents})
        assert reply.status == 200
        input_tokens += int(reply.headers["x-input-tokens"])
        computed_tokens += int(reply.headers["x-compute-tokens"])
    reply = await http.post("/rerank", {"query": "q", "texts": ["x", "y", "z"]})
    assert reply.status == 200
    input_tokens += int(reply.headers["x-input-tokens"])
    computed_tokens += int(reply.headers["x-compute-tokens"])
    assert (await http.post("/v2/rerank", {"query": "q"})).status == 422
    assert (await http.post("/v2/rerank", {"query": "", "documents": ["a"]})).status == 422
    assert (await http.post("/v2/rerank", raw=b"{nope")).status == 400
    assert (await http.post("/v2/rerank", {"query": "q"}, headers={"content-type": "text/plain"})).status == 415
    assert (await http.get("/no/such/route")).status == 404
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        stub = pb_grpc.RerankerStub(channel)
        response = await stub.Rerank(pb.RerankRequest(query=pb.Item(text="q"), documents=[pb.Item(text="d")] * 4))
        input_tokens += response.usage.input_tokens
        computed_tokens += response.usage.computed_tokens
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Rerank(pb.RerankRequest(documents=[pb.Item(text="d")]))
    m = Scrape(before, await scrape(http))

    requests = "rerank_sidecar_requests_total"
    assert m.delta(requests, face="http", route="/v2/rerank", dialect="cohere-jina-v2", status="ok") == 3
    assert m.delta(requests, face="http", route="/rerank", dialect="tei", status="ok") == 1
    assert m.delta(requests, face="http", route="/v2/rerank", dialect="cohere-jina-v2", status="validation") == 2
    assert m.delta(requests, face="http", route="/v2/rerank", dialect="cohere-jina-v2", status="invalid_json") == 1
    assert m.delta(requests, face="http", route="/v2/rerank", dialect="", status="unsupported_media_type") == 1
    assert m.delta(requests, face="http", route="unmatched", dialect="", status="not_found") == 1
    assert m.delta(requests, face="grpc", route="Rerank", dialect="grpc", status="ok") == 1
    assert m.delta(requests, face="grpc", route="Rerank", dialect="grpc", status="validation") == 1
    assert m.delta("rerank_sidecar_request_duration_seconds_count", face="http", route="/v2/rerank") == 7
    assert m.delta("rerank_sidecar_request_duration_seconds_count", face="grpc", route="Rerank") == 2

    # Per answered request: 5 rerank requests of 2, 2, 2, 3 and 4 documents.
    assert m.delta("rerank_sidecar_request_documents_count", model="reranker") == 5
    assert m.delta("rerank_sidecar_request_documents_sum", model="reranker") == 13
    for stage in ("queue", "preprocess", "inference"):
        assert m.delta(f"rerank_sidecar_{stage}_duration_seconds_count", model="reranker") == 5
    assert m.delta("rerank_sidecar_inference_duration_seconds_sum", model="reranker") > 0
    assert m.delta("rerank_sidecar_input_tokens_total", model="reranker") == input_tokens
    assert m.delta("rerank_sidecar_computed_tokens_total", model="reranker") == computed_tokens
    assert m.delta("rerank_sidecar_prefix_saved_tokens_total", model="reranker") == input_tokens - computed_tokens > 0

    # Per forward pass: every pair scored exactly once, padding counted apart from real tokens.
    assert m.delta("rerank_sidecar_rows_total", model="reranker") == 13
    assert m.delta("rerank_sidecar_batch_rows_sum", model="reranker") == 13
    batches = m.delta("rerank_sidecar_batch_rows_count", model="reranker")
    assert 5 <= batches == m.delta("rerank_sidecar_batch_padded_tokens_count", model="reranker")
    real = m.delta("rerank_sidecar_batch_tokens_total", model="reranker", kind="real")
    padding = m.delta("rerank_sidecar_batch_tokens_total", model="reranker", kind="padding")
    # Outside the batches each request computed its prefix once; all five share one prefix ("q", one instruction).
    prefixes = computed_tokens - real
    assert prefixes > 0 and prefixes % 5 == 0 and padding >= 0
    assert m.delta("rerank_sidecar_batch_padded_tokens_sum", model="reranker") == real + padding
    assert m.value("rerank_sidecar_queue_requests") == 0 and m.value("rerank_sidecar_queue_pairs") == 0


async def test_media_fetch_outcomes_by_source(http):
    before = await scrape(http)
    data_uri = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
    documents = [{"image": "red.png"}, {"image": data_uri}, {"image": base64.b64encode(IMAGE).decode()}]
    assert (await http.post("/v1/rerank", {"query": "q", "documents": documents})).status == 200
    for bad in ("missing.png", "../secret.png", "http://127.0.0.1:9/x.png", "data:image/png;base64,AAAA"):
        assert (await http.post("/v1/rerank", {"query": "q", "documents": [{"image": bad}]})).status == 422
    m = Scrape(before, await scrape(http))
    fetches = "rerank_sidecar_media_fetches_total"
    assert m.delta(fetches, source="path", outcome="ok") == 1
    assert m.delta(fetches, source="data", outcome="ok") == 1
    assert m.delta(fetches, source="inline", outcome="ok") == 1
    assert m.delta(fetches, source="path", outcome="error") == 1
    assert m.delta(fetches, source="path", outcome="refused") == 1
    assert m.delta(fetches, source="url", outcome="refused") == 1
    assert m.delta(fetches, source="data", outcome="error") == 1


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:  # no credentials: /metrics is open by default
        assert response.headers["content-type"].startswith("text/plain")
        return response.read().decode()


def test_a_fresh_server_exports_its_model_readiness_and_limits_on_both_ports(tiny_model_dir, tmp_path):
    metrics_port = free_port()
    args = ["--model", str(tiny_model_dir), "--metrics-port", str(metrics_port), "--max-queued-pairs", "300"]
    with ServerProcess(args, tmp_path / "server.log") as proc:
        http_port = int(re.search(r"HTTP listening on 127\.0\.0\.1:(\d+)", proc.log()).group(1))
        from sidecar.client import RerankerClient

        with RerankerClient(proc.target) as client:
            for _ in range(2):
                client.rerank("q", ["a", "b", "c"])
        separate, on_http = (
            parse(_get(f"http://127.0.0.1:{metrics_port}/metrics")),
            parse(_get(f"http://127.0.0.1:{http_port}/metrics")),
        )
        for samples in (separate, on_http):
            assert samples[("rerank_sidecar_ready", frozenset())] == 1
            assert samples[("rerank_sidecar_queue_pairs_limit", frozenset())] == 300
            info = [key for key in samples if key[0] == "rerank_sidecar_model_info"]
            assert len(info) == 1 and dict(info[0][1]) == {
                "model": "reranker",
                "name": str(tiny_model_dir),
                "device": "cpu",
                "dtype": "torch.float32",
            }
            assert samples[("rerank_sidecar_model_load_seconds", frozenset({("model", "reranker")}))] > 0
            ok = frozenset({("face", "grpc"), ("route", "Rerank"), ("dialect", "grpc"), ("status", "ok")})
            assert samples[("rerank_sidecar_requests_total", ok)] == 2
            assert samples[("process_resident_memory_bytes", frozenset())] > 0
            assert not [key for key in samples if key[0] == "rerank_sidecar_device_memory_bytes"]  # CPU only
