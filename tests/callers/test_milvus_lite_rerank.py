"""Milvus Lite's own model reranker (`FunctionType.RERANK`, provider `cohere`, the one Milvus Lite 3.2
implements) pointed at the sidecar's `/v2/rerank`: a real engine search whose hits come back in the
sidecar's order with the sidecar's scores."""

from __future__ import annotations

import pytest

from tests.callers.conftest import DOCUMENTS, QUERY, f32, grpc_scores
from tests.conftest import same_scores


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(str(tmp_path_factory.mktemp("milvus-lite-rerank") / "lite.db"))
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=1000)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="L2")
    client.create_collection("docs", schema=schema, index_params=index)
    client.insert("docs", [{"id": i, "text": t, "vector": [0.1 * i, 0.2, 0.3, 0.4]} for i, t in enumerate(DOCUMENTS)])
    yield client
    client.close()


def test_search_reranked_by_the_sidecar(collection, sidecar, scorer):
    from pymilvus import Function, FunctionType

    ranker = Function(
        name="sidecar",
        input_field_names=["text"],
        function_type=FunctionType.RERANK,
        params={
            "reranker": "model",
            "provider": "cohere",
            "queries": [QUERY],
            "base_url": f"{sidecar.url}/v2",  # Milvus Lite posts to {base_url}/rerank
            "api_key": "unused-the-sidecar-has-no-auth",
        },
    )
    hits = collection.search(
        "docs", data=[[0.0, 0.2, 0.3, 0.4]], anns_field="vector", limit=len(DOCUMENTS), ranker=ranker
    )[0]
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [hit["id"] for hit in hits] == sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])
    assert {hit["id"]: f32(hit["distance"]) for hit in hits} == same_scores(dict(enumerate(expected)))
