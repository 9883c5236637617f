"""Indexing helpers: schema creation, sidecar embeddings, idempotent re-creation, ids, progress."""

from __future__ import annotations

import pytest

from connectors import Document, search_and_rerank
from tests.connectors.corpus import CORPUS


def qdrant_count(connector) -> int:
    return connector.client.count(connector.collection).count


def milvus_count(connector) -> int:
    return connector.client.query(connector.collection, filter="", output_fields=["count(*)"])[0]["count(*)"]


def index(engine: str, request, name: str, documents, **options):
    if engine == "qdrant":
        from connectors.qdrant import index_documents

        return index_documents(request.getfixturevalue("qdrant_local"), name, documents, progress=False, **options)
    from connectors.milvus import index_documents

    return index_documents(request.getfixturevalue("milvus_lite"), name, documents, progress=False, **options)


COUNT = {"qdrant": qdrant_count, "milvus": milvus_count}


@pytest.mark.parametrize("engine", ["qdrant", "milvus"])
def test_indexing_again_is_idempotent_and_recreate_starts_over(request, engine, sidecar):
    first = index(engine, request, "again", CORPUS, embed_client=sidecar)
    before = [h.id for h in first.search("red shoes", None, 10, "bm25")]
    again = index(engine, request, "again", CORPUS, embed_client=sidecar)
    assert COUNT[engine](again) == len(CORPUS)
    assert [h.id for h in again.search("red shoes", None, 10, "bm25")] == before
    fresh = index(engine, request, "again", CORPUS[:3], embed_client=sidecar, recreate=True)
    assert COUNT[engine](fresh) == 3


@pytest.mark.parametrize("engine", ["qdrant", "milvus"])
def test_precomputed_vectors_and_exact_knn(request, engine):
    # unit vectors 10 degrees apart: the order from the x axis is the id order
    import math

    vectors = [[math.cos(math.radians(10 * d.id)), math.sin(math.radians(10 * d.id)), 0.0] for d in CORPUS]
    connector = index(engine, request, "handmade", CORPUS, vectors=vectors, recreate=True)
    assert connector.vector_size == 3 and connector.supported_modes == {"dense", "bm25", "hybrid"}
    assert [h.id for h in connector.search(None, [1.0, 0.0, 0.0], 5, "dense")] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="8 documents but 2 vectors"):
        index(engine, request, "handmade", CORPUS, vectors=vectors[:2])


@pytest.mark.parametrize("engine", ["qdrant", "milvus"])
def test_lexical_only_collection(request, engine):
    connector = index(engine, request, "lexical", CORPUS, recreate=True)
    assert connector.supported_modes == {"bm25"} and connector.vector_size is None


def test_milvus_dense_only_collection(request, sidecar):
    connector = index("milvus", request, "dense_only", CORPUS, embed_client=sidecar, full_text=False, recreate=True)
    assert connector.supported_modes == {"dense"}


@pytest.mark.parametrize("engine", ["qdrant", "milvus"])
def test_string_ids_come_back_unchanged(request, engine):
    documents = [Document("sku-1", "red shoes"), Document("6f1c4a8e-2b7d-4c57-9a0e-3d5b8f1e2a90", "blue shoes")]
    connector = index(engine, request, "strings", documents, recreate=True)
    assert {h.id for h in connector.search("shoes", None, 5, "bm25")} == {d.id for d in documents}


def test_milvus_extra_fields_must_have_one_scalar_type(request):
    documents = [Document(1, "a", fields={"size": 1}), Document(2, "b", fields={"size": "XL"})]
    with pytest.raises(ValueError, match="'size' must hold only bool, int, float or str"):
        index("milvus", request, "mixed", documents)


def test_documents_need_something_to_embed(qdrant_local, sidecar):
    from connectors.qdrant import index_documents

    with pytest.raises(ValueError, match="document 9 has neither text nor image"):
        index_documents(qdrant_local, "blank", [Document(9)], embed_client=sidecar, progress=False)


def test_progress_is_reported_on_stderr(qdrant_local, sidecar, capfd):
    from connectors.qdrant import index_documents

    index_documents(qdrant_local, "progress", CORPUS, embed_client=sidecar, embed_batch_size=3, recreate=True)
    err = capfd.readouterr().err
    assert "embedding" in err and "indexing" in err and "8/8" in err


def test_qdrant_on_disk_local_mode_survives_a_reopen(tmp_path, sidecar):
    from qdrant_client import QdrantClient

    from connectors.qdrant import QdrantConnector, index_documents

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    created = index_documents(client, "disk", CORPUS, embed_client=sidecar, progress=False)
    expected = [h.id for h in created.search("red shoes", None, 5, "bm25")]
    client.close()
    reopened = QdrantClient(path=str(tmp_path / "qdrant"))
    connector = QdrantConnector(reopened, "disk", created.mapping)
    assert [h.id for h in connector.search("red shoes", None, 5, "bm25")] == expected
    results = search_and_rerank(connector, "red shoes", top_k=5, mode="hybrid", rerank_client=sidecar)
    assert len(results) == 5 and all(r.reranked for r in results)
    reopened.close()


def test_rerank_requests_are_split_at_the_sidecars_max_documents(qdrant_local, sidecar):
    from connectors.qdrant import index_documents

    documents = [Document(i, f"item {i} shoes " + "size " * (i % 7)) for i in range(70)]  # server accepts 60
    connector = index_documents(qdrant_local, "seventy", documents, recreate=True, progress=False)
    results = search_and_rerank(connector, "shoes", top_k=100, top_n=None, mode="bm25", rerank_client=sidecar)
    assert len(results) == 70 and all(r.reranked for r in results)
    logits = [r.rerank_logit for r in results]
    assert logits == sorted(logits, reverse=True)
    hits = connector.search("shoes", None, 100, "bm25")
    direct = {}
    for chunk in (hits[:60], hits[60:]):
        response = sidecar.rerank("shoes", [{"id": str(h.id), "text": h.text} for h in chunk])
        direct.update({int(r.id): r.logit for r in response.results})
    # Within fp32 rounding: streamed preparation lets batch make-up differ between the two calls.
    assert {r.id: r.rerank_logit for r in results} == pytest.approx(direct, abs=1e-5)
