"""`--log-format json`: one JSON object per line, one per request with its fields; keys never logged."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import grpc

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar._proto.rerank.v1 import reranker_pb2_grpc as pb_grpc
from tests.conftest import ServerProcess

SECRET = "sk-do-not-log-0123456789"


def _post(port: int, path: str, body: dict) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {SECRET}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_json_logs_one_object_per_line_with_the_request_fields(tiny_model_dir, tmp_path):
    with ServerProcess(["--model", str(tiny_model_dir), "--log-format", "json"], tmp_path / "server.log") as proc:
        port = int(re.search(r"HTTP listening on 127\.0\.0\.1:(\d+)", proc.log()).group(1))
        assert _post(port, "/v2/rerank", {"query": "q", "documents": ["a", "b", "c"], "top_n": 2}) == 200
        assert _post(port, "/rerank", {"query": "q", "texts": [7]}) == 422
        with grpc.insecure_channel(proc.target) as channel:
            stub = pb_grpc.RerankerStub(channel)
            request = pb.RerankRequest(query=pb.Item(text="q"), documents=[pb.Item(text="d")] * 2)
            stub.Rerank(request, metadata=[("authorization", f"Bearer {SECRET}")], timeout=60)
    lines = proc.log().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert not [line for line in lines if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line)]  # no text-format lines
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"] == "sidecar" and r["message"].startswith("ready: serving") for r in records)
    requests = [r for r in records if r["logger"] == "sidecar.requests"]
    http_ok, http_bad, grpc_ok = requests
    assert http_ok["face"] == "http" and http_ok["route"] == "/v2/rerank" and http_ok["dialect"] == "cohere-jina-v2"
    assert http_ok["documents"] == 3 and http_ok["top_n"] == 2 and http_ok["status"] == "ok"
    assert http_ok["input_tokens"] > http_ok["computed_tokens"] > 0
    for key in ("queue_ms", "preprocess_ms", "inference_ms", "total_ms"):
        assert isinstance(http_ok[key], float) and http_ok[key] >= 0
    assert http_bad["route"] == "/rerank" and http_bad["status"] == "validation" and "input_tokens" not in http_bad
    assert grpc_ok["face"] == "grpc" and grpc_ok["route"] == "Rerank" and grpc_ok["documents"] == 2
    assert "trace_id" not in grpc_ok  # tracing is off
    assert SECRET not in proc.log()


def test_text_logs_keep_one_line_per_request(tiny_model_dir, tmp_path):
    with ServerProcess(["--model", str(tiny_model_dir)], tmp_path / "server.log") as proc:
        port = int(re.search(r"HTTP listening on 127\.0\.0\.1:(\d+)", proc.log()).group(1))
        assert _post(port, "/v2/rerank", {"query": "q", "documents": ["a", "b"]}) == 200
    line = next(line for line in proc.log().splitlines() if "sidecar.requests" in line)
    assert re.search(r"HTTP /v2/rerank cohere-jina-v2 docs=2 tokens=\d+ computed=\d+ images=0 queue_ms=[\d.]+ ", line)
    assert line.endswith("status=ok") and SECRET not in proc.log()
