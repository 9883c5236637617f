"""Dense kNN against the real Milvus server (PyPI `milvus` 2.3, started by tests/engines/milvus.sh).

Milvus 2.3 has no BM25 Function, so only "dense" is exercised here; BM25 and hybrid run on
Milvus Lite in test_search_and_rerank.py. A server that cannot start fails these tests.
"""

from __future__ import annotations

import pytest

from connectors import FieldMapping, FieldMappingError, search_and_rerank
from tests.connectors.corpus import CORPUS, QUERY


@pytest.fixture(scope="module")
def server_products(milvus_server_uri, sidecar):
    from pymilvus import MilvusClient

    from connectors.milvus import index_documents

    client = MilvusClient(milvus_server_uri)
    connector = index_documents(
        client, "products", CORPUS, embed_client=sidecar, full_text=False, index_type="FLAT", recreate=True,
        progress=False,
    )  # fmt: skip
    yield connector
    client.close()


def test_server_collection_serves_dense_only(server_products):
    assert server_products.supported_modes == {"dense"} and server_products.vector_size == 32


def test_dense_returns_the_nearest_documents(server_products, doc_vectors, embed_query):
    vector = embed_query(QUERY)
    hits = server_products.search(None, vector, 4, "dense")
    expected = sorted(doc_vectors, key=lambda i: -float(doc_vectors[i] @ vector))[:4]
    assert [h.id for h in hits] == expected
    assert hits[0].image_refs == [*CORPUS[hits[0].id].images()]


def test_rerank_order_is_the_sidecars_own_order(server_products, sidecar):
    results = search_and_rerank(server_products, QUERY, top_k=6, top_n=None, mode="dense", rerank_client=sidecar)
    vector = sidecar.embed([QUERY]).embeddings[0].values
    hits = server_products.search(None, vector, 6, "dense")
    response = sidecar.rerank(QUERY, [{"id": str(h.id), "text": h.text, "images": h.image_refs} for h in hits])
    assert [r.id for r in results] == [hits[x.index].id for x in response.results]
    assert [r.rerank_score for r in results] == pytest.approx([x.score for x in response.results], abs=1e-6)


def test_filter_expression_and_top_k_beyond_the_collection(server_products, sidecar):
    results = search_and_rerank(
        server_products, QUERY, top_k=1000, top_n=None, mode="dense", filter="price < 100", rerank_client=sidecar
    )
    assert sorted(r.id for r in results) == sorted(d.id for d in CORPUS if d.fields["price"] < 100)
    assert search_and_rerank(server_products, QUERY, mode="dense", filter="price > 1000", rerank_client=sidecar) == []


def test_bm25_is_refused_and_missing_fields_are_named(server_products, down_client):
    from connectors.milvus import MilvusConnector

    with pytest.raises(ValueError, match="cannot serve mode 'bm25'; it supports dense"):
        search_and_rerank(server_products, QUERY, mode="bm25", rerank_client=down_client)
    with pytest.raises(FieldMappingError, match="field 'title'"):
        MilvusConnector(server_products.client, "products", FieldMapping(text_fields="title"))
