"""Index helpers of Elasticsearch and OpenSearch, on the real nodes: mappings, idempotence, vectors, ids.

Each test runs on both engines (the `dsl` fixture).
"""

from __future__ import annotations

import math

import pytest

from connectors import Document, search_and_rerank
from tests.connectors.corpus import CORPUS

ANGLES = [[math.cos(math.radians(10 * d.id)), math.sin(math.radians(10 * d.id)), 0.0] for d in CORPUS]


def test_helper_mapping(dsl, request):
    request.getfixturevalue("es_products" if dsl.name == "elasticsearch" else "os_products")
    properties = dsl.properties("products")
    assert {n: properties[n]["type"] for n in ("doc_id", "text", "image", "color", "price")} == {
        "doc_id": "keyword", "text": "text", "image": "keyword", "color": "keyword", "price": "long",
    }  # fmt: skip
    dense = properties["dense"]
    if dsl.name == "elasticsearch":
        assert (dense["type"], dense["dims"], dense["similarity"], dense["index"]) == (
            "dense_vector",
            32,
            "cosine",
            True,
        )
        assert dense["index_options"]["type"] == "hnsw"  # the fixture asks for float HNSW
    else:
        assert (dense["type"], dense["dimension"]) == ("knn_vector", 32)
        assert (dense["method"]["engine"], dense["method"]["space_type"]) == ("lucene", "cosinesimil")
        settings = dsl.client.indices.get_settings(index="products")["products"]["settings"]["index"]
        assert settings["knn"] == "true"


def test_indexing_again_is_idempotent_and_recreate_starts_over(dsl, sidecar):
    first = dsl.index("again", CORPUS, embed_client=sidecar, recreate=True)
    before = [h.id for h in first.search("red shoes", None, 10, "bm25")]
    again = dsl.index("again", CORPUS, embed_client=sidecar)
    assert dsl.count("again") == len(CORPUS)
    assert [h.id for h in again.search("red shoes", None, 10, "bm25")] == before
    fresh = dsl.index("again", CORPUS[:3], embed_client=sidecar, recreate=True)
    assert dsl.count("again") == 3 and fresh.supported_modes == {"dense", "bm25", "hybrid"}


def test_precomputed_vectors_and_exact_knn(dsl):
    # unit vectors 10 degrees apart: the order from the x axis is the id order
    connector = dsl.index("handmade", CORPUS, vectors=ANGLES, recreate=True)
    assert connector.vector_size == 3 and connector.supported_modes == {"dense", "bm25", "hybrid"}
    assert [h.id for h in connector.search(None, [1.0, 0.0, 0.0], 5, "dense")] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="8 documents but 2 vectors"):
        dsl.index("handmade", CORPUS, vectors=ANGLES[:2])


def test_an_existing_index_must_fit_the_vectors(dsl):
    dsl.index("fits", CORPUS, vectors=ANGLES, recreate=True)
    with pytest.raises(ValueError, match="dimension 3; the documents have 2-dimensional vectors: pass recreate=True"):
        dsl.index("fits", CORPUS, vectors=[v[:2] for v in ANGLES])
    dsl.index("lexical-first", CORPUS, recreate=True)
    with pytest.raises(ValueError, match="no 'dense' vector field"):
        dsl.index("lexical-first", CORPUS, vectors=ANGLES)


def test_lexical_only_index(dsl, down_client):
    connector = dsl.index("lexical", CORPUS, recreate=True)
    assert connector.supported_modes == {"bm25"} and connector.vector_size is None
    with pytest.raises(ValueError, match="cannot serve mode 'dense'; it supports bm25"):
        search_and_rerank(connector, "shoes", mode="dense", rerank_client=down_client)


def test_string_ids_and_new_extra_fields_on_reuse(dsl):
    documents = [Document("sku-1", "red shoes"), Document("6f1c4a8e-2b7d-4c57-9a0e-3d5b8f1e2a90", "blue shoes")]
    connector = dsl.index("strings", documents, recreate=True)
    assert {h.id for h in connector.search("shoes", None, 5, "bm25")} == {d.id for d in documents}
    more = [Document("sku-2", "green shoes", fields={"size": 42, "brand": "Acme", "ratio": 0.5, "eco": True})]
    connector = dsl.index("strings", more)  # reused: the new fields are added to the mapping, typed
    assert dsl.count("strings") == 3
    types = {n: p["type"] for n, p in dsl.properties("strings").items()}
    assert (types["size"], types["brand"], types["ratio"], types["eco"]) == ("long", "keyword", "double", "boolean")
    hits = connector.search("shoes", None, 5, "bm25", {"term": {"brand": "Acme"}})
    assert [(h.id, h.fields["size"]) for h in hits] == [("sku-2", 42)]


def test_extra_fields_may_not_reuse_reserved_names(dsl):
    with pytest.raises(ValueError, match="extra field 'text' clashes"):
        dsl.index("reserved", [Document(1, "a", fields={"text": "b"})])


def test_progress_is_reported_on_stderr(dsl, sidecar, capfd):
    dsl.module.index_documents(dsl.client, "progress", CORPUS, embed_client=sidecar, embed_batch_size=3, recreate=True)
    err = capfd.readouterr().err
    assert "embedding" in err and "indexing" in err and "8/8" in err


def test_a_url_works_in_place_of_a_client(dsl):
    connector = dsl.module.index_documents(dsl.url, "by-url", CORPUS[:2], recreate=True, progress=False)
    assert {h.id for h in connector.search("shoes", None, 5, "bm25")} == {0, 1}
    with pytest.raises(ValueError, match="credentials and TLS options go with a URL"):
        dsl.connector("by-url", basic_auth=("user", "secret"))
