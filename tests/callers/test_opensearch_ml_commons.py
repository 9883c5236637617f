"""ML-commons' own Cohere functions on a REAL OpenSearch 2.19 node: the connector as shipped but with the
stock `connector.post_process.cohere.rerank` (it casts each `relevance_score` to Double and places it
by `index`), reranking a search through the `rerank` processor exactly like the sidecar's own scores.

The node comes from tests/connectors/engines_fixtures.py (a node that cannot start fails the test).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from sidecar.apps.opensearch_setup import ML, OpenSearchHttp, setup
from tests.callers.conftest import DOCUMENTS, QUERY, f32, grpc_scores
from tests.conftest import same_scores
from tests.connectors.engines_fixtures import opensearch_node  # noqa: F401 - the real node

CONFIG = Path(__file__).resolve().parents[2] / "opensearch-plugin-config"
NAME = f"stock-cohere-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def stock_config(tmp_path_factory):
    config = tmp_path_factory.mktemp("stock-config")
    for path in CONFIG.glob("*.json"):
        shutil.copy(path, config / path.name)
    connector = json.loads((config / "connector.json").read_text())
    connector["actions"][0]["post_process_function"] = "connector.post_process.cohere.rerank"
    (config / "connector.json").write_text(json.dumps(connector))
    return config


def test_stock_cohere_functions_rerank_like_the_sidecar(opensearch_node, sidecar, scorer, stock_config):  # noqa: F811
    client = OpenSearchHttp(opensearch_node.url)
    try:
        setup(
            opensearch_node.url,
            sidecar.url,
            pipeline=NAME,
            document_fields=["content"],
            model_name=NAME,
            config_dir=stock_config,
        )
        client.call("PUT", f"/{NAME}", {"mappings": {"properties": {"content": {"type": "text"}}}})
        for i, content in enumerate(DOCUMENTS):
            client.call("PUT", f"/{NAME}/_doc/{i}?refresh=true", {"content": content})
        body = {"query": {"match_all": {}}, "size": 20, "ext": {"rerank": {"query_context": {"query_text": QUERY}}}}
        status, answer = client.request("POST", f"/{NAME}/_search?search_pipeline={NAME}", body)
        assert status == 200, answer
        expected = grpc_scores(scorer, QUERY, DOCUMENTS)
        hits = answer["hits"]["hits"]
        assert {int(h["_id"]): f32(h["_score"]) for h in hits} == same_scores(dict(enumerate(expected)))
        assert [int(h["_id"]) for h in hits] == sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])
    finally:
        client.request("DELETE", f"/_search/pipeline/{NAME}")
        client.request("DELETE", f"/{NAME}?ignore_unavailable=true")
        for kind in ("models", "connectors", "model_groups"):
            status, found = client.request(
                "POST", f"{ML}/{kind}/_search", {"query": {"prefix": {"name.keyword": NAME}}}
            )
            for hit in found.get("hits", {}).get("hits", []) if status == 200 else []:
                if kind == "models":
                    client.request("POST", f"{ML}/models/{hit['_id']}/_undeploy")
                client.request("DELETE", f"{ML}/{kind}/{hit['_id']}")
