"""Elasticsearch specifics on the real Elasticsearch 9 node: client-side RRF, `_source` filtering, a user's own index.

The shared scenarios (candidates, reranked order, images, filters, empty results) run on this
engine in test_shared_scenarios.py; errors in test_elasticsearch_and_opensearch_errors.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from connectors import FieldMapping, search_and_rerank
from tests.connectors.corpus import BY_ID, CORPUS, QUERY, item_of


def test_source_filtering_fetches_only_the_mapped_fields(es_client, es_products):
    from connectors.elasticsearch import ElasticsearchConnector

    lean = ElasticsearchConnector(es_client, "products", FieldMapping(image_fields="image"))
    hit = lean.search("hose", None, 1, "bm25")[0]
    assert hit.id == "3" and set(hit.fields) == {"text", "image"}  # no doc_id: the id is Elasticsearch's _id
    assert set(es_products.search("hose", None, 1, "bm25")[0].fields) == {"doc_id", "text", "image", "color", "price"}
    assert "dense" not in es_products.search(None, [0.1] * 32, 1, "dense")[0].fields  # never the vector


def test_hybrid_is_reciprocal_rank_fusion_of_bm25_and_knn(es_products, embed_query):
    vector = embed_query(QUERY)
    lexical = [h.id for h in es_products.search(QUERY, None, 6, "bm25")]
    dense = [h.id for h in es_products.search(None, vector, 6, "dense")]

    def rrf(doc: int) -> float:
        return sum(1 / (60 + ranked.index(doc) + 1) for ranked in (lexical, dense) if doc in ranked)

    hits = es_products.search(QUERY, vector, 6, "hybrid")
    assert [h.score for h in hits] == pytest.approx([rrf(h.id) for h in hits], abs=1e-12)
    expected = sorted(set(lexical) | set(dense), key=lambda d: -rrf(d))[:6]
    assert sorted(h.score for h in hits) == pytest.approx(sorted(rrf(d) for d in expected))
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(h.text == BY_ID[h.id].text and h.image_refs == BY_ID[h.id].images() for h in hits)


def test_auto_fusion_falls_back_to_the_client_on_a_build_without_rrf(es_client, es_products, embed_query, caplog):
    from connectors.elasticsearch import ElasticsearchConnector

    auto = ElasticsearchConnector(es_client, "products", es_products.mapping, fusion="auto", source_fields=["color"])
    vector = embed_query(QUERY)
    with caplog.at_level("INFO", logger="connectors"):
        hits = auto.search(QUERY, vector, 5, "hybrid")
    assert "no rrf retriever" in caplog.text and auto._server_rrf is False
    assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in es_products.search(QUERY, vector, 5, "hybrid")]
    assert [h.id for h in auto.search(QUERY, vector, 5, "hybrid")] == [h.id for h in hits]  # decided once


def test_rrf_constant_changes_the_scores(es_client, es_products, embed_query):
    from connectors.elasticsearch import ElasticsearchConnector

    steep = ElasticsearchConnector(es_client, "products", es_products.mapping, rrf_k=1)
    vector = embed_query(QUERY)
    dense = [h.id for h in steep.search(None, vector, 3, "dense")]
    hits = steep.search("running sole", vector, 3, "hybrid")
    # doc 0 alone has "running" and "sole": first in BM25, 1/(1+1), plus 1/(1+rank) if kNN found it
    expected = 1 / 2 + (1 / (2 + dense.index(0)) if 0 in dense else 0.0)
    assert hits[0].id == 0 and hits[0].score == pytest.approx(expected)


def test_a_list_of_filter_clauses(es_products, embed_query):
    red_and_cheap = [{"term": {"color": "red"}}, {"range": {"price": {"lt": 50}}}]
    vector = embed_query(QUERY)
    for mode in ("bm25", "dense", "hybrid"):
        assert [h.id for h in es_products.search(QUERY, vector, 10, mode, red_and_cheap)] == [2], mode


@pytest.fixture(scope="module")
def catalogue(es_client, sidecar):
    """A user's own index: keyword "sku", "title"/"body" text, object "meta", keyword "photos", two vectors."""
    vectors = [list(e.values) for e in sidecar.embed([item_of(d) for d in CORPUS]).embeddings]
    es_client.options(ignore_status=404).indices.delete(index="catalogue")
    es_client.indices.create(
        index="catalogue",
        mappings={
            "properties": {
                "sku": {"type": "keyword"},
                "title": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
                "body": {"type": "text"},
                "meta": {"properties": {"brand": {"type": "keyword"}}},
                "photos": {"type": "keyword"},
                "embedding": {"type": "dense_vector", "dims": 32, "similarity": "dot_product"},
                "thumb": {"type": "dense_vector", "dims": 2, "similarity": "l2_norm"},
            }
        },
    )
    for d, v in zip(CORPUS, vectors):
        source = {"sku": f"SKU-{d.id}", "title": d.text.split()[-1], "body": d.text, "photos": d.images()}
        source |= {"meta": {"brand": "Acme" if d.id % 2 else "Zenith"}, "embedding": v, "thumb": [d.id, 1.0]}
        es_client.index(index="catalogue", id=f"SKU-{d.id}", document=source)
    es_client.indices.refresh(index="catalogue")
    return es_client


def test_user_index_with_custom_names(catalogue, sidecar):
    from connectors.elasticsearch import ElasticsearchConnector

    with pytest.raises(ValueError, match="several dense_vector fields .*'embedding'.*'thumb'"):
        ElasticsearchConnector(catalogue, "catalogue", FieldMapping(text_fields=("title", "body")))
    mapping = FieldMapping(
        id_field="sku", text_fields=("title", "body", "meta.brand"), image_fields="photos", dense_vector="embedding"
    )
    connector = ElasticsearchConnector(catalogue, "catalogue", mapping)
    assert connector.supported_modes == {"dense", "bm25", "hybrid"} and connector.vector_size == 32
    assert connector.bm25_fields == ["title", "body"]  # the mapped text fields; meta.brand is a keyword
    results = search_and_rerank(connector, QUERY, top_k=8, top_n=None, mode="hybrid", rerank_client=sidecar)
    by_sku = {f"SKU-{d.id}": d for d in CORPUS}
    assert results and all(r.reranked for r in results)
    for r in results:
        doc = by_sku[r.id]
        assert (
            r.text == f"{doc.text.split()[-1]}\n{doc.text}\n{'Acme' if doc.id % 2 else 'Zenith'}"
        )  # a dotted field too
        assert r.image_refs == doc.images()
    acme = search_and_rerank(
        connector, "shoes", mode="bm25", filter={"term": {"meta.brand": "Acme"}}, rerank_client=sidecar
    )
    assert {r.id for r in acme} == {"SKU-1", "SKU-7"}


def test_bm25_fields_with_boosts(catalogue):
    from connectors.elasticsearch import ElasticsearchConnector

    mapping = FieldMapping(id_field="sku", text_fields=("body",), dense_vector="embedding")
    by_body = ElasticsearchConnector(catalogue, "catalogue", mapping)
    by_title = ElasticsearchConnector(catalogue, "catalogue", mapping, bm25_fields=["title^5", "body"])
    # a title is its document's last word: "shoes" for doc 1, "office" for doc 7
    assert [h.id for h in by_body.search("shoes", None, 3, "bm25")] == ["SKU-1", "SKU-7", "SKU-0"]
    assert by_title.search("shoes", None, 3, "bm25")[0].id == "SKU-1"
    assert by_title.search("office", None, 3, "bm25")[0].score > by_body.search("office", None, 3, "bm25")[0].score * 2


def test_engine_connectors_load_only_their_client():
    def loaded(statement: str) -> list[str]:
        code = f"import json, sys\n{statement}\nprint(json.dumps([m for m in ('elasticsearch', 'opensearchpy', 'torch') if m in sys.modules]))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    assert loaded("import connectors, connectors.querydsl, connectors.fusion") == []
    assert loaded("from connectors import ElasticsearchConnector") == ["elasticsearch"]
    assert loaded("from connectors import OpenSearchConnector") == ["opensearchpy"]
