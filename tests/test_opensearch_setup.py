"""`rerank-sidecar opensearch-setup` end to end: a REAL OpenSearch 2.19 node (ML-commons + neural-search,
tests/engines/opensearch.sh) reranking through a REAL sidecar subprocess (tiny model, HTTP face).

The node comes from `tests/connectors/engines_fixtures.py`: a node that cannot start FAILS the tests
(nothing is skipped). Every object this module creates carries a per-run name and is deleted at its end,
so a node left running for a faster edit-test loop can be reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sidecar.apps.opensearch_setup import ML, TRUSTED_SETTING, OpenSearchHttp, SetupError, SetupResult, setup
from tests.conftest import ServerProcess, free_port
from tests.connectors.engines_fixtures import EngineNode, opensearch_node  # noqa: F401 - the real node

RUN = uuid.uuid4().hex[:8]
NAME = f"ostest-{RUN}"
TEXT_INDEX, MEDIA_INDEX = f"{NAME}-text", f"{NAME}-media"
QUERY = 'red "shoes" <for> the & office'  # quotes and HTML characters survive both JSON escapings
TEXT_DOCS = [
    "red running shoes with a light sole",
    "blue suede shoes",
    "red wool hat",
    "green garden hose",
    "black leather shoes for the office",
    'a "quoted" <b>html</b> & ampersand = sign',
]
RED_DOC = json.dumps({"text": "a product photo", "image": "red.png"})
BLUE_DOC = json.dumps({"text": "a product photo", "image": "nested/blue.png"})
MEDIA_DOCS = [RED_DOC, BLUE_DOC, "a product photo"]


@dataclass
class Stack:
    """The node, the sidecar and what the first setup made."""

    node: EngineNode
    os: OpenSearchHttp
    sidecar: ServerProcess
    sidecar_url: str
    result: SetupResult


def post_json(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def sidecar_scores(sidecar_url: str, query: str, documents: list[str]) -> list[float]:
    """The sidecar's own scores (Cohere /v2/rerank), in input order."""
    status, answer = post_json(f"{sidecar_url}/v2/rerank", {"query": query, "documents": documents})
    assert status == 200, answer
    scores = [0.0] * len(documents)
    for result in answer["results"]:
        scores[result["index"]] = result["relevance_score"]
    return scores


def index(os: OpenSearchHttp, name: str, documents: list[str]) -> None:
    os.call("PUT", f"/{name}", {"mappings": {"properties": {"content": {"type": "text"}}}})
    for i, content in enumerate(documents):
        os.call("PUT", f"/{name}/_doc/{i}?refresh=true", {"content": content})


def search(os: OpenSearchHttp, name: str, query: str = QUERY) -> tuple[int, Any]:
    body = {"query": {"match_all": {}}, "size": 20, "ext": {"rerank": {"query_context": {"query_text": query}}}}
    return os.request("POST", f"/{name}/_search?search_pipeline={NAME}", body)


def assert_reranked_like_sidecar(stack: Stack, name: str, documents: list[str]) -> dict[str, float]:
    """Hits come in the sidecar's order with the sidecar's scores; the scores by hit id."""
    status, answer = search(stack.os, name)
    assert status == 200, answer
    hits = answer["hits"]["hits"]
    expected = sidecar_scores(stack.sidecar_url, QUERY, documents)
    # The sidecar sends scores at float32 precision: at most 18 JSON characters, which ML-commons reads as
    # Double (longer numbers become BigDecimal, which its built-in Cohere post-process cannot cast).
    assert all(len(repr(score)) <= 18 for score in expected), expected
    assert sorted(hit["_id"] for hit in hits) == [str(i) for i in range(len(documents))]
    for hit in hits:
        assert hit["_score"] == pytest.approx(expected[int(hit["_id"])], abs=1e-6), hit
    order = sorted(range(len(documents)), key=lambda i: -expected[i])
    gaps = [expected[a] - expected[b] for a, b in zip(order, order[1:], strict=False)]
    assert min(gaps) > 1e-6, f"ties in the sidecar's scores make the order ambiguous: {expected}"
    assert [hit["_id"] for hit in hits] == [str(i) for i in order]
    return {hit["_id"]: hit["_score"] for hit in hits}


def cleanup(os: OpenSearchHttp) -> None:
    """Delete what this run made (best effort: a failed test may have left any subset)."""
    os.request("DELETE", f"/_search/pipeline/{NAME}")
    os.request("DELETE", f"/{TEXT_INDEX},{MEDIA_INDEX}?ignore_unavailable=true")
    for kind in ("models", "connectors", "model_groups"):
        query = {"query": {"prefix": {"name.keyword": NAME}}, "size": 100}
        status, answer = os.request("POST", f"{ML}/{kind}/_search", query)
        for hit in answer.get("hits", {}).get("hits", []) if status == 200 else []:
            if kind == "models":
                os.request("POST", f"{ML}/models/{hit['_id']}/_undeploy")
            os.request("DELETE", f"{ML}/{kind}/{hit['_id']}")


@pytest.fixture(scope="module")
def stack(opensearch_node: EngineNode, tiny_model_dir: Path, media_root: Path, tmp_path_factory) -> Iterator[Stack]:  # noqa: F811
    port = free_port()
    args = ["--model", str(tiny_model_dir), "--media-root", str(media_root), "--http-port", str(port)]
    sidecar = ServerProcess(args, tmp_path_factory.mktemp("opensearch-setup") / "sidecar.log")
    os = OpenSearchHttp(opensearch_node.url)
    try:
        sidecar.wait_ready()
        url = f"http://127.0.0.1:{port}"
        result = setup(opensearch_node.url, url, pipeline=NAME, document_fields=["content"], model_name=NAME)
        index(os, TEXT_INDEX, TEXT_DOCS)
        index(os, MEDIA_INDEX, MEDIA_DOCS)
        yield Stack(opensearch_node, os, sidecar, url, result)
    finally:
        sidecar.stop()
        cleanup(os)


def connectors_named(os: OpenSearchHttp, name: str) -> list[dict[str, Any]]:
    status, answer = os.request("POST", f"{ML}/connectors/_search", {"query": {"term": {"name.keyword": name}}})
    return answer["hits"]["hits"] if status == 200 else []


def test_first_setup_creates_everything(stack: Stack) -> None:
    changes = " | ".join(stack.result.changes)
    for made in ("created connector", "created model group", "registered model", "deployed model", "created search"):
        assert made in changes
    model = stack.os.call("GET", f"{ML}/models/{stack.result.model_id}")
    assert (model["model_state"], model["connector_id"]) == ("DEPLOYED", stack.result.connector_id)


def test_text_hits_are_reranked_exactly_like_the_sidecar(stack: Stack) -> None:
    assert_reranked_like_sidecar(stack, TEXT_INDEX, TEXT_DOCS)


def test_image_documents_reach_the_model(stack: Stack) -> None:
    scores = assert_reranked_like_sidecar(stack, MEDIA_INDEX, MEDIA_DOCS)
    # Same text, different image -> different score; and the image score is not the text-only score.
    assert abs(scores["0"] - scores["1"]) > 1e-6
    assert abs(scores["0"] - scores["2"]) > 1e-6
    text_only, as_text = sidecar_scores(stack.sidecar_url, QUERY, ["a product photo", RED_DOC])[0], scores["0"]
    assert as_text != pytest.approx(text_only, abs=1e-6)


def test_rerun_changes_nothing(stack: Stack) -> None:
    command = [sys.executable, "-m", "sidecar.cli", "opensearch-setup", "--opensearch", stack.node.url]
    command += [
        "--sidecar-url",
        stack.sidecar_url,
        "--pipeline",
        NAME,
        "--model-name",
        NAME,
        "--document-fields",
        "content",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "nothing changed"
    assert f"model_id: {stack.result.model_id}" in run.stdout
    assert f"pipeline: {NAME}" in run.stdout
    assert [hit["_id"] for hit in connectors_named(stack.os, f"{NAME}-connector")] == [stack.result.connector_id]


def test_changed_sidecar_url_updates_the_connector(stack: Stack) -> None:
    new_url = stack.sidecar_url.replace("127.0.0.1", "localhost")
    try:
        result = setup(stack.node.url, new_url, pipeline=NAME, document_fields=["content"], model_name=NAME)
        assert (result.model_id, result.connector_id) == (stack.result.model_id, stack.result.connector_id)
        assert result.changes == [f"updated connector {result.connector_id} (endpoint {new_url})"]
        connector = stack.os.call("GET", f"{ML}/connectors/{result.connector_id}")
        assert connector["parameters"]["endpoint"] == new_url
        assert stack.os.call("GET", f"{ML}/models/{result.model_id}")["model_state"] == "DEPLOYED"
        assert_reranked_like_sidecar(stack, TEXT_INDEX, TEXT_DOCS)
    finally:  # back to the original URL for the tests after this one
        setup(stack.node.url, stack.sidecar_url, pipeline=NAME, document_fields=["content"], model_name=NAME)


def test_untrusted_sidecar_url_names_the_setting(stack: Stack) -> None:
    refused = f"{NAME}-refused"
    with pytest.raises(SetupError, match=TRUSTED_SETTING.replace(".", r"\.")):
        setup(stack.node.url, "http://192.0.2.7:8080", pipeline=refused, model_name=refused)
    assert connectors_named(stack.os, f"{refused}-connector") == []


def test_unreachable_opensearch_is_a_clear_error() -> None:
    with pytest.raises(SetupError, match="cannot reach OpenSearch at http://127.0.0.1:"):
        setup(f"http://127.0.0.1:{free_port()}", "http://127.0.0.1:1")


def test_stopped_sidecar_fails_the_search(stack: Stack) -> None:
    """Last: stops the sidecar. The search fails loudly, never returns the unreranked order."""
    stack.sidecar.stop()
    status, answer = search(stack.os, TEXT_INDEX)
    assert status >= 500, answer
    assert "hits" not in answer
    assert "Error communicating with remote model: Connection refused" in json.dumps(answer), answer
    with pytest.raises(SetupError, match="is the sidecar up"):
        setup(stack.node.url, stack.sidecar_url, pipeline=NAME, document_fields=["content"], model_name=NAME)


def test_missing_ml_commons_is_a_clear_error() -> None:
    """A node without ML-commons (a loopback fake answering `/` and `_cat/plugins` like one)."""
    answers = {
        "/": {"version": {"distribution": "opensearch", "number": "2.19.6"}},
        "/_cat/plugins?format=json": [{"component": "opensearch-knn"}],
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(answers.get(self.path, {})).encode()
            self.send_response(200 if self.path in answers else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SetupError, match=r"ML-commons \(plugin opensearch-ml\) is not installed"):
            setup(f"http://127.0.0.1:{server.server_address[1]}", "http://127.0.0.1:1")
    finally:
        server.shutdown()
        server.server_close()
