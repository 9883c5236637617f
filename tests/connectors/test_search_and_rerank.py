"""search_and_rerank against real engines (Qdrant local mode, Milvus Lite) and a real sidecar over gRPC.

Every test runs on both engines (the `products` fixture): the same operations must give the
same kind of answer, whichever engine holds the corpus.
"""

from __future__ import annotations

import numpy as np
import pytest

from connectors import asearch_and_rerank, search_and_rerank
from tests.connectors.corpus import BY_ID, CORPUS, MATCHES, QUERY, engine_filter


def brute_force(doc_vectors, query_vector, ids=None) -> list[int]:
    """Document ids by cosine similarity to the query, best first (embeddings are L2-normalised)."""
    ids = list(doc_vectors) if ids is None else ids
    return sorted(ids, key=lambda i: -float(doc_vectors[i] @ query_vector))


def containing(*words: str) -> set[int]:
    return {d.id for d in CORPUS if set(d.text.split()) & set(words)}


def sidecar_order(sidecar, query, hits) -> tuple[list, list[float]]:
    """Ids and scores of `hits` as the sidecar itself ranks them, asked directly."""
    documents = [{"id": str(h.id), "text": h.text, "images": h.image_refs} for h in hits]
    response = sidecar.rerank(query, documents)
    return [hits[r.index].id for r in response.results], [r.score for r in response.results]


# --- first stage -------------------------------------------------------------------------------


def scenario_dense_returns_the_nearest_documents(products, doc_vectors, embed_query):
    vector = embed_query(QUERY)
    hits = products.search(None, vector, 4, "dense")
    assert [h.id for h in hits] == brute_force(doc_vectors, vector)[:4]
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert hits[0].score >= hits[-1].score


def scenario_bm25_returns_the_documents_with_the_terms(products):
    hits = products.search(QUERY, None, 10, "bm25")
    assert {h.id for h in hits} == containing("red", "shoes")
    assert all(h.score > 0 for h in hits)  # Milvus may negate BM25 distances; hits never are
    # one term, equal frequency: BM25 prefers the shorter document
    assert [h.id for h in products.search("shoes", None, 10, "bm25")] == [1, 7, 0]


def scenario_hybrid_fuses_dense_and_bm25(products, embed_query):
    vector = embed_query(QUERY)
    dense = [h.id for h in products.search(None, vector, 4, "dense")]
    lexical = [h.id for h in products.search(QUERY, None, 4, "bm25")]
    ids = [h.id for h in products.search(QUERY, vector, 4, "hybrid")]
    assert len(ids) == 4 and set(ids) <= set(dense) | set(lexical)
    # under reciprocal rank fusion the winner leads one list or appears in both
    assert ids[0] in {dense[0], lexical[0]} | (set(dense) & set(lexical))


def scenario_hybrid_winner_of_both_lists_comes_first(products, doc_vectors):
    # doc 0 is its own nearest neighbour and the only document with "running" or "sole"
    hits = products.search("running sole", doc_vectors[0], 3, "hybrid")
    assert [h.id for h in hits] == [h.id for h in products.search(None, doc_vectors[0], 3, "dense")]
    assert hits[0].id == 0


def scenario_hit_carries_fields_text_and_image_references(products):
    hits = {h.id: h for h in products.search(QUERY, None, 10, "bm25")}
    assert hits[0].fields["color"] == "red" and hits[0].fields["price"] == 60
    assert hits[0].text == BY_ID[0].text and hits[0].image_refs == ["red.png"]
    assert hits[4].image_refs == ["red.png", "nested/blue.png"]  # a field holding a list
    assert hits[7].image_refs == []


# --- reranking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def scenario_rerank_order_is_the_sidecars_own_order(products, sidecar, mode):
    results = search_and_rerank(products, QUERY, top_k=5, top_n=None, mode=mode, rerank_client=sidecar)
    vector = sidecar_vector(sidecar, products) if mode != "bm25" else None
    hits = products.search(QUERY, vector, 5, mode)
    expected_ids, expected_scores = sidecar_order(sidecar, QUERY, hits)
    assert [r.id for r in results] == expected_ids
    assert [r.rerank_score for r in results] == pytest.approx(expected_scores, abs=1e-6)
    assert [r.rank for r in results] == list(range(1, len(hits) + 1))
    assert all(r.reranked for r in results)
    first_stage = {h.id: (h.rank, h.score) for h in hits}
    assert all((r.first_stage_rank, r.first_stage_score) == pytest.approx(first_stage[r.id]) for r in results)


def scenario_chunked_hits_keep_their_best_window(products, sidecar):
    """Windows of 4 tokens make several per corpus text: each hit scores as its best window, and says which."""
    windows = {"long_documents": "chunk", "max_tokens_per_doc": 4, "chunk_overlap": 1}
    results = search_and_rerank(products, QUERY, top_k=5, top_n=None, mode="bm25", rerank_client=sidecar, **windows)
    hits = products.search(QUERY, None, 5, "bm25")
    documents = [{"id": str(h.id), "text": h.text, "images": h.image_refs} for h in hits]
    direct = {hits[r.index].id: r for r in sidecar.rerank(QUERY, documents, **windows).results}
    assert {r.id: r.rerank_score for r in results} == pytest.approx({i: r.score for i, r in direct.items()}, abs=1e-6)
    assert {r.id: r.chunk_span for r in results} == {i: (r.chunk.start, r.chunk.end) for i, r in direct.items()}
    assert any(r.chunk.count > 1 for r in direct.values())
    assert all(0 <= r.chunk_span[0] < r.chunk_span[1] <= len(r.text) for r in results)
    truncated = search_and_rerank(products, QUERY, top_k=5, top_n=None, mode="bm25", rerank_client=sidecar)
    assert {r.id: r.rerank_score for r in truncated} != pytest.approx({r.id: r.rerank_score for r in results})
    assert all(r.chunk_span is None for r in truncated)


def sidecar_vector(sidecar, connector) -> list[float]:
    return list(sidecar.embed([QUERY], dimensions=connector.vector_size or 0).embeddings[0].values)


def scenario_top_n_keeps_the_best(products, sidecar):
    everything = search_and_rerank(products, QUERY, top_k=8, top_n=None, mode="bm25", rerank_client=sidecar)
    best = search_and_rerank(products, QUERY, top_k=8, top_n=2, mode="bm25", rerank_client=sidecar)
    assert [r.id for r in best] == [r.id for r in everything[:2]]


def scenario_stored_image_references_reach_the_sidecar(products, sidecar, media_root):
    results = search_and_rerank(products, QUERY, top_k=8, top_n=None, mode="bm25", rerank_client=sidecar)
    assert any(r.image_refs for r in results)
    order = sorted(results, key=lambda r: r.first_stage_rank)  # the request the pipeline sent

    def logits(images_of) -> dict:
        documents = [{"id": str(r.id), "text": r.text, "images": images_of(r)} for r in order]
        return {int(x.id): x.logit for x in sidecar.rerank(QUERY, documents).results}

    inline = logits(lambda r: [(media_root / ref).read_bytes() for ref in r.image_refs])
    without = logits(lambda r: [])
    for r in results:
        assert r.rerank_logit == pytest.approx(inline[r.id], abs=1e-5), r.id  # same pixels as sending the bytes
        if r.image_refs:
            assert abs(r.rerank_logit - without[r.id]) > 1e-5, r.id  # and the pixels mattered


def scenario_image_and_text_plus_image_queries(products, sidecar, media_root):
    by_path = search_and_rerank(products, media_root / "red.png", top_k=3, mode="dense", rerank_client=sidecar)
    by_ref = search_and_rerank(products, "file://red.png", top_k=3, mode="dense", rerank_client=sidecar)
    assert [r.id for r in by_path] == [r.id for r in by_ref] and len(by_path) == 3
    assert [r.rerank_score for r in by_path] == pytest.approx([r.rerank_score for r in by_ref], abs=1e-5)
    mixed = search_and_rerank(
        products, {"text": "red", "images": ["red.png"]}, top_k=4, mode="hybrid", rerank_client=sidecar
    )
    assert len(mixed) == 4 and all(r.reranked for r in mixed)


def scenario_query_vector_skips_the_embedding(products, sidecar, doc_vectors):
    vector = doc_vectors[5]  # the document's own embedding: it is its own nearest neighbour
    results = search_and_rerank(
        products, QUERY, top_k=3, top_n=None, mode="dense", query_vector=vector, rerank_client=sidecar
    )
    assert {r.id for r in results} == set(brute_force(doc_vectors, vector)[:3])
    assert next(r for r in results if r.first_stage_rank == 1).id == 5


# --- filters, sizes, empty results ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def scenario_filters_pass_through(products, sidecar, mode, doc_vectors, embed_query):
    flt = engine_filter(products, "red")
    results = search_and_rerank(products, QUERY, top_k=10, top_n=None, mode=mode, filter=flt, rerank_client=sidecar)
    allowed = {d.id for d in CORPUS if MATCHES["red"](d)}
    assert results and {r.id for r in results} <= allowed
    if mode == "dense":
        first_stage = sorted(results, key=lambda r: r.first_stage_rank)
        assert [r.id for r in first_stage] == brute_force(doc_vectors, embed_query(QUERY), sorted(allowed))


def scenario_numeric_filter(products, sidecar):
    results = search_and_rerank(
        products, "shoes", top_k=10, mode="bm25", filter=engine_filter(products, "cheap"), rerank_client=sidecar
    )
    assert sorted(results, key=lambda r: r.first_stage_rank)[0].id == 1
    assert {r.id for r in results} == {0, 1}  # shoes under 100 (7 costs 150)


def scenario_top_k_larger_than_the_collection(products, sidecar):
    results = search_and_rerank(products, QUERY, top_k=500, top_n=None, mode="dense", rerank_client=sidecar)
    assert sorted(r.id for r in results) == [d.id for d in CORPUS]
    assert all(r.reranked for r in results)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def scenario_no_candidates_gives_an_empty_list(products, sidecar, mode):
    flt = engine_filter(products, "none")
    assert search_and_rerank(products, QUERY, mode=mode, filter=flt, rerank_client=sidecar) == []


def scenario_unknown_words_give_no_bm25_candidates(products, sidecar):
    assert search_and_rerank(products, "zebra", mode="bm25", rerank_client=sidecar) == []


# --- asyncio twin ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
async def scenario_async_twin_gives_the_same_results(products, sidecar, sidecar_server, mode):
    from sidecar.client import AsyncRerankerClient

    expected = search_and_rerank(products, QUERY, top_k=6, top_n=4, mode=mode, rerank_client=sidecar)
    async with AsyncRerankerClient(sidecar_server.target, timeout=60, retries=0) as client:
        results = await asearch_and_rerank(products, QUERY, top_k=6, top_n=4, mode=mode, rerank_client=client)
    assert [r.id for r in results] == [r.id for r in expected]
    assert np.allclose([r.rerank_logit for r in results], [r.rerank_logit for r in expected], atol=1e-6)
