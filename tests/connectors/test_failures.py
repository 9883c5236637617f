"""Failure policy and typed errors: sidecar down or late, engine errors, bad arguments (bad mappings: shared scenarios)."""

from __future__ import annotations

import grpc
import pytest

from connectors import (
    EmbedUnavailableError,
    EngineError,
    RerankUnavailableError,
    asearch_and_rerank,
    search_and_rerank,
)
from tests.connectors.corpus import CORPUS, QUERY, engine_filter

# --- sidecar down, late, or refusing -----------------------------------------------------------


def scenario_sidecar_down_raises_a_typed_error_naming_the_target(products, down_client, down_target):
    with pytest.raises(RerankUnavailableError) as caught:
        search_and_rerank(products, QUERY, mode="bm25", rerank_client=down_client)
    assert caught.value.target == down_target and down_target in str(caught.value)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.operation == "rerank"


def scenario_sidecar_down_can_fall_back_to_the_first_stage(products, down_client):
    first_stage = products.search(QUERY, None, 10, "bm25")
    results = search_and_rerank(
        products, QUERY, top_k=10, top_n=3, mode="bm25", rerank_client=down_client, on_rerank_failure="first_stage"
    )
    assert [r.id for r in results] == [h.id for h in first_stage[:3]]
    assert [r.rank for r in results] == [1, 2, 3] == [r.first_stage_rank for r in results]
    assert not any(r.reranked for r in results)
    assert all(r.rerank_score is None and r.rerank_logit is None for r in results)


async def scenario_async_sidecar_down_both_policies(products, down_target):
    from sidecar.client import AsyncRerankerClient

    async with AsyncRerankerClient(down_target, timeout=2, retries=0) as client:
        with pytest.raises(RerankUnavailableError, match=down_target):
            await asearch_and_rerank(products, QUERY, mode="bm25", rerank_client=client)
        results = await asearch_and_rerank(
            products, QUERY, top_n=2, mode="bm25", rerank_client=client, on_rerank_failure="first_stage"
        )
    assert len(results) == 2 and not any(r.reranked for r in results)


def scenario_deadline_exceeded_is_unavailable_too(products, sidecar, sidecar_server):
    from sidecar.client import RerankerClient

    with RerankerClient(sidecar_server.target, timeout=0.0005, retries=0) as late:
        with pytest.raises(RerankUnavailableError) as caught:
            search_and_rerank(products, QUERY, top_k=8, mode="bm25", rerank_client=late)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        results = search_and_rerank(
            products, QUERY, top_k=8, mode="bm25", rerank_client=late, on_rerank_failure="first_stage"
        )
    assert results and not any(r.reranked for r in results)


def scenario_separate_embed_client_serves_the_query_when_the_reranker_is_down(products, sidecar, down_client):
    results = search_and_rerank(
        products, QUERY, top_k=3, mode="dense", embed_client=sidecar, rerank_client=down_client,
        on_rerank_failure="first_stage",
    )  # fmt: skip
    assert len(results) == 3 and not any(r.reranked for r in results)


def scenario_query_embedding_needs_the_sidecar(products, down_client, down_target):
    with pytest.raises(EmbedUnavailableError, match=down_target):
        search_and_rerank(products, QUERY, mode="dense", rerank_client=down_client, on_rerank_failure="first_stage")


def scenario_empty_first_stage_never_calls_the_sidecar(products, down_client):
    flt = engine_filter(products, "none")
    assert search_and_rerank(products, QUERY, mode="bm25", filter=flt, rerank_client=down_client) == []


# --- bad arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="fuzzy"), "mode must be one of"),
        (dict(top_k=0), "top_k and top_n must be at least 1"),
        (dict(on_rerank_failure="ignore"), "on_rerank_failure"),
    ],
)
def scenario_bad_arguments_fail_before_any_call(products, down_client, kwargs, message):
    with pytest.raises(ValueError, match=message):
        search_and_rerank(products, QUERY, rerank_client=down_client, **kwargs)


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def scenario_lexical_modes_need_query_text(products, down_client, mode):
    with pytest.raises(ValueError, match="needs query text"):
        search_and_rerank(products, "https://example.com/shoe.png", mode=mode, rerank_client=down_client)


def test_mode_the_collection_cannot_serve(qdrant_local, down_client):
    from connectors.qdrant import index_documents

    lexical_only = index_documents(qdrant_local, "lexical-only", CORPUS, progress=False)
    assert lexical_only.supported_modes == {"bm25"}
    with pytest.raises(ValueError, match="cannot serve mode 'dense'; it supports bm25"):
        search_and_rerank(lexical_only, QUERY, mode="dense", rerank_client=down_client)


# Field mappings validated against the collection: test_shared_scenarios.py, on all four engines.


# --- engine errors ------------------------------------------------------------------------------------


def test_qdrant_missing_collection_is_an_engine_error(qdrant_local):
    from connectors.qdrant import QdrantConnector

    with pytest.raises(EngineError) as caught:
        QdrantConnector(qdrant_local, "no-such-collection")
    assert caught.value.engine == "qdrant" and "get_collection" in caught.value.operation


def test_qdrant_malformed_filter_is_a_value_error(qdrant_products):
    bad = {"must": [{"key": "price", "range": {"lt": "cheap"}}]}
    with pytest.raises(ValueError, match="range"):
        qdrant_products.search(QUERY, None, 5, "bm25", bad)


def test_milvus_missing_collection_is_an_engine_error(milvus_lite):
    from connectors.milvus import MilvusConnector

    with pytest.raises(EngineError) as caught:
        MilvusConnector(milvus_lite, "no_such_collection")
    assert caught.value.engine == "milvus" and "describe_collection" in caught.value.operation


def test_milvus_bad_filter_expression_is_an_engine_error(milvus_products, sidecar):
    with pytest.raises(EngineError) as caught:
        search_and_rerank(milvus_products, QUERY, mode="bm25", filter="price <<< 3", rerank_client=sidecar)
    assert caught.value.engine == "milvus" and caught.value.operation.startswith("search")
