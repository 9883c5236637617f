"""Jina's clients, pointed at the sidecar's `/v1/rerank`: results with documents, and errors in `detail`.

pymilvus's JinaRerankFunction and langchain-community's JinaRerank keep the URL in a module
constant; the tests set it, as a user must. The others take a base URL.
"""

from __future__ import annotations

import pytest

from tests.callers.conftest import DOCUMENTS, MAX_DOCUMENTS, QUERY, f32, grpc_scores
from tests.conftest import same_scores

KEY = "unused-the-sidecar-has-no-auth"
TOO_MANY = ["d"] * (MAX_DOCUMENTS + 1)
TOO_MANY_MESSAGE = f"documents has {MAX_DOCUMENTS + 1} entries; this server accepts at most {MAX_DOCUMENTS}"


def best(expected: list[float], n: int) -> list[int]:
    return sorted(range(len(expected)), key=lambda i: -expected[i])[:n]


def test_pymilvus_jina_rerank_function(sidecar, scorer, monkeypatch):
    from pymilvus.model.reranker import jinaai

    monkeypatch.setattr(jinaai, "API_URL", f"{sidecar.url}/v1/rerank")
    function = jinaai.JinaRerankFunction(model_name="jina-reranker-v2-base-multilingual", api_key=KEY)
    results = function(QUERY, DOCUMENTS, top_k=3)  # reads results[].document.text
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [r.index for r in results] == best(expected, 3)
    assert all(r.text == DOCUMENTS[r.index] and f32(r.score) == same_scores(expected[r.index]) for r in results)
    with pytest.raises(RuntimeError, match=f"^{TOO_MANY_MESSAGE}$"):
        function(QUERY, TOO_MANY)


def test_langchain_community_jina_rerank(sidecar, scorer, monkeypatch):
    from langchain_community.document_compressors import jina_rerank
    from langchain_core.documents import Document

    monkeypatch.setattr(jina_rerank, "JINA_API_URL", f"{sidecar.url}/v1/rerank")
    reranker = jina_rerank.JinaRerank(jina_api_key=KEY, top_n=3)
    documents = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCUMENTS)]
    ranked = reranker.compress_documents(documents, QUERY)
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [d.metadata["n"] for d in ranked] == best(expected, 3)
    assert all(f32(d.metadata["relevance_score"]) == same_scores(expected[d.metadata["n"]]) for d in ranked)
    every = reranker.rerank(DOCUMENTS, QUERY, top_n=None)  # sends "top_n": null
    assert len(every) == len(DOCUMENTS)
    with pytest.raises(RuntimeError, match=f"^{TOO_MANY_MESSAGE}$"):
        reranker.rerank(TOO_MANY, QUERY)


def test_llamaindex_jina_rerank(sidecar, scorer):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.jinaai_rerank import JinaRerank

    reranker = JinaRerank(api_key=KEY, base_url=f"{sidecar.url}/v1", top_n=2)
    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCUMENTS)]
    ranked = reranker.postprocess_nodes(nodes, QueryBundle(QUERY))
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [int(n.node.id_) for n in ranked] == best(expected, 2)
    assert all(f32(n.score) == same_scores(expected[int(n.node.id_)]) for n in ranked)
    too_many = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in TOO_MANY]
    with pytest.raises(RuntimeError, match=f"^{TOO_MANY_MESSAGE}$"):
        reranker.postprocess_nodes(too_many, QueryBundle(QUERY))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_jina_haystack_ranker(sidecar, scorer, mode):
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.jina import JinaRanker

    ranker = JinaRanker(api_key=Secret.from_token(KEY), top_k=3, base_url=f"{sidecar.url}/v1/rerank")
    documents = [Document(content=d, meta={"n": i}) for i, d in enumerate(DOCUMENTS)]

    async def run(docs):
        return (
            ranker.run(query=QUERY, documents=docs)
            if mode == "sync"
            else await ranker.run_async(query=QUERY, documents=docs)
        )

    answer = await run(documents)
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [d.meta["n"] for d in answer["documents"]] == best(expected, 3)
    assert all(f32(d.score) == same_scores(expected[d.meta["n"]]) for d in answer["documents"])
    assert answer["meta"]["usage"]["total_tokens"] > 0 and answer["meta"]["model"]
    with pytest.raises(RuntimeError, match=f"^{TOO_MANY_MESSAGE}$"):
        await run([Document(content=t) for t in TOO_MANY])
