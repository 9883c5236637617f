"""Qdrant specifics: collections not made by our helper (unnamed vector, own payload names), DBSF fusion."""

from __future__ import annotations

import pytest

from connectors import EngineError, FieldMapping, search_and_rerank
from tests.connectors.corpus import CORPUS, QUERY, item_of


@pytest.fixture(scope="module")
def catalogue(qdrant_local, sidecar):
    """A user's own collection: one unnamed vector, payload "title"/"body"/"photos"/"sku", no sparse vector."""
    from qdrant_client import models

    vectors = [e.values for e in sidecar.embed([item_of(d) for d in CORPUS]).embeddings]
    if qdrant_local.collection_exists("catalogue"):
        qdrant_local.delete_collection("catalogue")
    qdrant_local.create_collection(
        "catalogue", vectors_config=models.VectorParams(size=32, distance=models.Distance.DOT)
    )
    points = [
        models.PointStruct(
            id=d.id,
            vector=v,
            payload={"sku": f"SKU-{d.id}", "title": d.text.split()[-1], "body": d.text, "photos": d.images()},
        )
        for d, v in zip(CORPUS, vectors)
    ]
    qdrant_local.upsert("catalogue", points)
    return qdrant_local


def test_unnamed_vector_and_custom_payload_names(catalogue, sidecar, media_root):
    from connectors.qdrant import QdrantConnector

    mapping = FieldMapping(id_field="sku", text_template="{title}: {body}", image_fields="photos")
    connector = QdrantConnector(catalogue, "catalogue", mapping)
    assert connector.supported_modes == {"dense"} and connector.dense_name == ""
    results = search_and_rerank(connector, QUERY, top_k=8, top_n=3, mode="dense", rerank_client=sidecar)
    assert len(results) == 3 and all(r.id.startswith("SKU-") for r in results)
    by_sku = {f"SKU-{d.id}": d for d in CORPUS}
    for r in results:
        assert r.text == f"{by_sku[r.id].text.split()[-1]}: {by_sku[r.id].text}"
        assert r.image_refs == by_sku[r.id].images()


def test_fusion_dbsf(qdrant_local, qdrant_products, embed_query):
    """Distribution-based fusion reaches Qdrant: its scores are not reciprocal ranks."""
    from connectors.qdrant import QdrantConnector

    connector = QdrantConnector(qdrant_local, "products", qdrant_products.mapping, fusion="dbsf")
    rrf = QdrantConnector(qdrant_local, "products", qdrant_products.mapping, fusion="rrf")
    vector = embed_query(QUERY)
    hits = connector.search(QUERY, vector, 4, "hybrid")
    union = {h.id for h in connector.search(None, vector, 4, "dense")} | {
        h.id for h in connector.search(QUERY, None, 4, "bm25")
    }
    assert len(hits) == 4 and {h.id for h in hits} <= union
    reciprocal = {round(h.score, 6) for h in rrf.search(QUERY, vector, 4, "hybrid")}
    assert {round(h.score, 6) for h in hits}.isdisjoint(reciprocal)


def test_wrong_vector_size_is_an_engine_error(qdrant_products):
    with pytest.raises(EngineError) as caught:
        qdrant_products.search(None, [0.1, 0.2], 3, "dense")
    assert caught.value.engine == "qdrant" and "search on 'products'" in str(caught.value)


def test_filter_object_passes_through(qdrant_products):
    from qdrant_client import models

    only_blue = models.Filter(must=[models.FieldCondition(key="color", match=models.MatchValue(value="blue"))])
    assert {h.id for h in qdrant_products.search("shoes jacket", None, 10, "bm25", only_blue)} == {1, 6}
