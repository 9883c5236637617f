"""Milvus specifics on Milvus Lite: a user's own schema, the weighted ranker, engine errors."""

from __future__ import annotations

import pytest

from connectors import EngineError, FieldMapping, search_and_rerank
from tests.connectors.corpus import CORPUS, QUERY, item_of


@pytest.fixture(scope="module")
def catalogue(milvus_lite, sidecar):
    """A user's own collection: VARCHAR key "sku", "title"/"body", ARRAY "photos", vector "embedding", BM25 on body."""
    from pymilvus import DataType, Function, FunctionType

    vectors = [e.values for e in sidecar.embed([item_of(d) for d in CORPUS]).embeddings]
    schema = milvus_lite.create_schema(auto_id=False)
    schema.add_field("sku", DataType.VARCHAR, is_primary=True, max_length=32)
    schema.add_field("title", DataType.VARCHAR, max_length=200)
    schema.add_field("body", DataType.VARCHAR, max_length=2000, enable_analyzer=True)
    schema.add_field("photos", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4, max_length=200)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=32)
    schema.add_field("body_bm25", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function("body_bm25_fn", FunctionType.BM25, input_field_names=["body"], output_field_names=["body_bm25"])
    )
    index = milvus_lite.prepare_index_params()
    index.add_index("embedding", index_type="FLAT", metric_type="IP")
    index.add_index("body_bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    if milvus_lite.has_collection("catalogue"):
        milvus_lite.drop_collection("catalogue")
    milvus_lite.create_collection("catalogue", schema=schema, index_params=index, consistency_level="Strong")
    rows = [
        {"sku": f"SKU-{d.id}", "title": d.text.split()[-1], "body": d.text, "photos": d.images(), "embedding": v}
        for d, v in zip(CORPUS, vectors)
    ]
    milvus_lite.insert("catalogue", rows)
    return milvus_lite


def test_own_schema_with_custom_names(catalogue, sidecar):
    from connectors.milvus import MilvusConnector

    mapping = FieldMapping(text_fields=("title", "body"), image_fields="photos")
    connector = MilvusConnector(catalogue, "catalogue", mapping)
    assert connector.supported_modes == {"dense", "bm25", "hybrid"}
    assert (connector.dense_name, connector.sparse_name, connector.primary) == ("embedding", "body_bm25", "sku")
    results = search_and_rerank(connector, QUERY, top_k=8, top_n=None, mode="hybrid", rerank_client=sidecar)
    by_sku = {f"SKU-{d.id}": d for d in CORPUS}
    assert results and all(r.reranked for r in results)
    for r in results:
        assert r.text == f"{by_sku[r.id].text.split()[-1]}\n{by_sku[r.id].text}"
        assert r.image_refs == by_sku[r.id].images()


def test_weighted_ranker_with_all_weight_on_dense_follows_dense(milvus_lite, milvus_products, embed_query):
    from connectors.milvus import MilvusConnector

    connector = MilvusConnector(milvus_lite, "products", milvus_products.mapping, ranker="weighted", weights=(1.0, 0.0))
    vector = embed_query(QUERY)
    dense = [h.id for h in connector.search(None, vector, 3, "dense")]
    assert [h.id for h in connector.search(QUERY, vector, 3, "hybrid")] == dense


def test_wrong_vector_size_is_an_engine_error(milvus_products):
    with pytest.raises(EngineError) as caught:
        milvus_products.search(None, [0.1, 0.2], 3, "dense")
    assert caught.value.engine == "milvus" and "search on 'products'" in str(caught.value)


def test_filter_must_be_an_expression(milvus_products):
    with pytest.raises(TypeError, match="boolean expression string"):
        milvus_products.search(QUERY, None, 3, "bm25", {"color": "red"})
