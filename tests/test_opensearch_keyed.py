"""`opensearch-setup --sidecar-api-key` end to end: a REAL OpenSearch 2.19 node searches through its rerank
pipeline against a REAL sidecar that requires an API key. The key travels in the ML-commons connector's
`credential` and `Authorization: Bearer ${credential.api_key}` header: the right key reranks, a wrong one
fails the search (the sidecar answers 401), and re-running setup with the right key heals it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.apps.opensearch_setup import ML, OpenSearchHttp, SetupError, key_fingerprint, setup
from sidecar.client import RerankerClient
from tests.conftest import ServerProcess, free_port
from tests.connectors.engines_fixtures import EngineNode, opensearch_node  # noqa: F401 - the real node
from tests.test_opensearch_setup import index

KEY = "os-sidecar-key-" + uuid.uuid4().hex
WRONG_KEY = "os-wrong-key-" + uuid.uuid4().hex
NAME = f"ostest-keyed-{uuid.uuid4().hex[:8]}"
DOCS = ["red running shoes", "blue suede shoes", "a green garden hose", "black office shoes"]
QUERY = "red shoes"


@dataclass
class KeyedStack:
    os: OpenSearchHttp
    node_url: str
    sidecar: ServerProcess
    sidecar_url: str

    def setup(self, key: str, check: bool = True):
        return setup(
            self.node_url, self.sidecar_url, pipeline=NAME, document_fields=["content"], model_name=NAME,
            check=check, api_key=key,
        )  # fmt: skip

    def search(self) -> tuple[int, object]:
        body = {"query": {"match_all": {}}, "size": 10, "ext": {"rerank": {"query_context": {"query_text": QUERY}}}}
        return self.os.request("POST", f"/{NAME}/_search?search_pipeline={NAME}", body)


@pytest.fixture(scope="module")
def keyed_stack(opensearch_node: EngineNode, tiny_model_dir: Path, tmp_path_factory) -> Iterator[KeyedStack]:  # noqa: F811
    root = tmp_path_factory.mktemp("opensearch-keyed")
    (root / "keys").write_text(KEY + "\n")
    port = free_port()
    args = ["--model", str(tiny_model_dir), "--http-port", str(port), "--api-key-file", str(root / "keys")]
    sidecar = ServerProcess(args, root / "sidecar.log")
    os = OpenSearchHttp(opensearch_node.url)
    try:
        sidecar.wait_ready()
        index(os, NAME, DOCS)
        yield KeyedStack(os, opensearch_node.url, sidecar, f"http://127.0.0.1:{port}")
    finally:
        sidecar.stop()
        os.request("DELETE", f"/_search/pipeline/{NAME}")
        os.request("DELETE", f"/{NAME}?ignore_unavailable=true")
        for kind in ("models", "connectors", "model_groups"):
            status, answer = os.request("POST", f"{ML}/{kind}/_search", {"query": {"prefix": {"name.keyword": NAME}}})
            for hit in answer.get("hits", {}).get("hits", []) if status == 200 else []:
                if kind == "models":
                    os.request("POST", f"{ML}/models/{hit['_id']}/_undeploy")
                os.request("DELETE", f"{ML}/{kind}/{hit['_id']}")


def assert_reranked(stack: KeyedStack) -> None:
    """The hits come back in the sidecar's order, with its scores (asked over gRPC with the key)."""
    status, answer = stack.search()
    assert status == 200, answer
    with RerankerClient(stack.sidecar.target, api_key=KEY, timeout=60) as client:
        expected = {str(r.index): r.score for r in client.rerank(QUERY, DOCS).results}
    hits = answer["hits"]["hits"]
    assert {hit["_id"] for hit in hits} == set(expected)
    for hit in hits:
        assert hit["_score"] == pytest.approx(expected[hit["_id"]], abs=1e-6), hit
    assert [hit["_id"] for hit in hits] == sorted(expected, key=lambda i: -expected[i])


def test_a_keyed_sidecar_reranks_opensearch_hits(keyed_stack):
    result = keyed_stack.setup(KEY)  # its test prediction goes through the key too
    connector = keyed_stack.os.call("GET", f"{ML}/connectors/{result.connector_id}")
    action = connector["actions"][0]
    assert action["headers"]["Authorization"] == "Bearer ${credential.api_key}"
    assert connector["parameters"]["api_key_fingerprint"] == key_fingerprint(KEY)
    assert KEY not in str(connector)  # ML-commons keeps the credential to itself
    assert_reranked(keyed_stack)
    assert keyed_stack.setup(KEY).changes == []  # same key: nothing to do


def test_a_wrong_key_fails_the_search_and_the_right_one_heals_it(keyed_stack):
    with pytest.raises(SetupError, match="401"):  # the test prediction reports the sidecar's refusal
        keyed_stack.setup(WRONG_KEY)
    status, answer = keyed_stack.search()
    assert status >= 400, answer
    assert "401" in str(answer) or "unauthenticated" in str(answer).lower(), answer
    changes = keyed_stack.setup(KEY).changes
    assert any(change.startswith("updated connector") for change in changes)
    assert_reranked(keyed_stack)
    log = keyed_stack.sidecar.log()
    assert re.search(r"HTTP /v2/rerank\b.* status=unauthenticated", log), log[-3000:]
    assert KEY not in log and WRONG_KEY not in log
