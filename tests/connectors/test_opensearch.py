"""OpenSearch specifics on the real OpenSearch 2.19 node: the hybrid search pipeline, weights, a user's own index.

The shared scenarios (candidates, reranked order, images, filters, empty results) run on this
engine in test_shared_scenarios.py; errors in test_elasticsearch_and_opensearch_errors.py.
"""

from __future__ import annotations

import pytest

from connectors import EngineError, FieldMapping, search_and_rerank
from tests.connectors.corpus import CORPUS, QUERY, item_of

DEFAULT_PIPELINE = "rerank-sidecar-hybrid-min_max-arithmetic_mean-0.5-0.5"


def pipeline(client, name: str) -> dict | None:
    from opensearchpy import NotFoundError

    try:
        return client.transport.perform_request("GET", f"/_search/pipeline/{name}")[name]
    except NotFoundError:
        return None


def test_server_version_and_source_filtering(os_client, os_products):
    from connectors.opensearch import OpenSearchConnector

    assert os_products.server_version[:2] == (2, 19)
    lean = OpenSearchConnector(os_client, "products", FieldMapping(image_fields="image"))
    hit = lean.search("hose", None, 1, "bm25")[0]
    assert hit.id == "3" and set(hit.fields) == {"text", "image"}  # no doc_id: the id is OpenSearch's _id
    assert "dense" not in os_products.search(None, [0.1] * 32, 1, "dense")[0].fields  # never the vector


def test_hybrid_creates_its_normalization_pipeline_once(os_client, os_products, embed_query):
    from connectors.opensearch import OpenSearchConnector

    os_client.transport.perform_request("DELETE", f"/_search/pipeline/{DEFAULT_PIPELINE}", params={"ignore": 404})
    connector = OpenSearchConnector(os_client, "products", os_products.mapping)
    assert connector.search_pipeline == DEFAULT_PIPELINE and pipeline(os_client, DEFAULT_PIPELINE) is None
    connector.search("red", None, 3, "bm25")
    assert pipeline(os_client, DEFAULT_PIPELINE) is None  # only hybrid needs it
    hits = connector.search(QUERY, embed_query(QUERY), 4, "hybrid")
    processor = pipeline(os_client, DEFAULT_PIPELINE)["phase_results_processors"][0]["normalization-processor"]
    assert processor["normalization"] == {"technique": "min_max"}
    assert processor["combination"] == {"technique": "arithmetic_mean", "parameters": {"weights": [0.5, 0.5]}}
    assert len(hits) == 4 and all(0 < h.score <= 1 for h in hits)  # normalised and combined scores
    # someone changes it: a new connector puts it back on its first hybrid search, an old one does not look again
    changed = {"phase_results_processors": [{"normalization-processor": {"normalization": {"technique": "l2"}}}]}
    os_client.transport.perform_request("PUT", f"/_search/pipeline/{DEFAULT_PIPELINE}", body=changed)
    connector.search(QUERY, embed_query(QUERY), 4, "hybrid")
    assert pipeline(os_client, DEFAULT_PIPELINE)["phase_results_processors"] == changed["phase_results_processors"]
    OpenSearchConnector(os_client, "products", os_products.mapping).search(QUERY, embed_query(QUERY), 4, "hybrid")
    assert pipeline(os_client, DEFAULT_PIPELINE) == connector.pipeline_body


@pytest.mark.parametrize("weights, follows", [((0.0, 1.0), "dense"), ((1.0, 0.0), "bm25")])
def test_weights_choose_the_side(os_client, os_products, embed_query, weights, follows):
    from connectors.opensearch import OpenSearchConnector

    connector = OpenSearchConnector(os_client, "products", os_products.mapping, weights=weights)
    assert connector.search_pipeline.endswith(f"-{weights[0]:g}-{weights[1]:g}")
    vector = embed_query(QUERY)
    side = [h.id for h in connector.search(QUERY, vector, 3, follows)]
    assert [h.id for h in connector.search(QUERY, vector, 3, "hybrid")][:2] == side[:2]


def test_a_pipeline_you_manage(os_client, os_products, embed_query):
    from connectors.opensearch import OpenSearchConnector

    os_client.transport.perform_request("DELETE", "/_search/pipeline/my-hybrid", params={"ignore": 404})
    mine = OpenSearchConnector(
        os_client, "products", os_products.mapping, search_pipeline="my-hybrid", create_pipeline=False
    )
    with pytest.raises(EngineError, match="search pipeline 'my-hybrid' does not exist"):
        mine.search(QUERY, embed_query(QUERY), 3, "hybrid")
    body = {"phase_results_processors": [{"normalization-processor": {"normalization": {"technique": "l2"}, "combination": {"technique": "harmonic_mean"}}}]}  # fmt: skip
    os_client.transport.perform_request("PUT", "/_search/pipeline/my-hybrid", body=body)
    assert len(mine.search(QUERY, embed_query(QUERY), 3, "hybrid")) == 3
    assert pipeline(os_client, "my-hybrid")["phase_results_processors"] == body["phase_results_processors"]  # untouched


def test_bad_settings_are_refused_before_any_call():
    from connectors.opensearch import OpenSearchConnector

    with pytest.raises(ValueError, match="summing to 1"):
        OpenSearchConnector("http://127.0.0.1:1", "products", weights=(0.7, 0.7))


@pytest.fixture(scope="module")
def catalogue(os_client, sidecar):
    """A user's own index: keyword "sku", "title"/"body" text, keyword "photos", knn_vector "embedding" (innerproduct)."""
    vectors = [list(e.values) for e in sidecar.embed([item_of(d) for d in CORPUS]).embeddings]
    if os_client.indices.exists(index="catalogue"):
        os_client.indices.delete(index="catalogue")
    method = {"name": "hnsw", "engine": "lucene", "space_type": "innerproduct"}
    properties = {
        "sku": {"type": "keyword"},
        "title": {"type": "text"},
        "body": {"type": "text"},
        "photos": {"type": "keyword"},
        "embedding": {"type": "knn_vector", "dimension": 32, "method": method},
    }
    body = {"settings": {"index": {"knn": True}}, "mappings": {"properties": properties}}
    os_client.indices.create(index="catalogue", body=body)
    for d, v in zip(CORPUS, vectors):
        source = {
            "sku": f"SKU-{d.id}",
            "title": d.text.split()[-1],
            "body": d.text,
            "photos": d.images(),
            "embedding": v,
        }
        os_client.index(index="catalogue", id=source["sku"], body=source)
    os_client.indices.refresh(index="catalogue")
    return os_client


def test_user_index_with_custom_names(catalogue, sidecar):
    from connectors.opensearch import OpenSearchConnector

    mapping = FieldMapping(id_field="sku", text_template="{title}: {body}", image_fields="photos")
    connector = OpenSearchConnector(catalogue, "catalogue", mapping)
    assert connector.supported_modes == {"dense", "bm25", "hybrid"} and connector.dense_name == "embedding"
    results = search_and_rerank(connector, QUERY, top_k=8, top_n=None, mode="hybrid", rerank_client=sidecar)
    by_sku = {f"SKU-{d.id}": d for d in CORPUS}
    assert results and all(r.reranked for r in results)
    for r in results:
        assert r.text == f"{by_sku[r.id].text.split()[-1]}: {by_sku[r.id].text}"
        assert r.image_refs == by_sku[r.id].images()
    only_photos = {"exists": {"field": "photos"}}
    for mode in ("dense", "bm25", "hybrid"):
        hits = search_and_rerank(
            connector, QUERY, top_k=8, top_n=None, mode=mode, filter=only_photos, rerank_client=sidecar
        )
        assert {r.id for r in hits} <= {s for s, d in by_sku.items() if d.images()}, mode
