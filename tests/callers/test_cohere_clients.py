"""Cohere's SDK (v1 and v2, sync and async) and the frameworks' Cohere rerankers, pointed at the sidecar.

Each is the real package from PyPI with only its base URL (and a dummy key) changed.
"""

from __future__ import annotations

import cohere
import pytest

from tests.callers.conftest import DOCUMENTS, MAX_DOCUMENTS, QUERY, f32, grpc_scores
from tests.conftest import same_scores

KEY = "unused-the-sidecar-has-no-auth"


def by_index(results) -> dict[int, float]:
    return {r.index: f32(r.relevance_score) for r in results}


def test_v1_client(sidecar, scorer):
    client = cohere.Client(api_key=KEY, base_url=sidecar.url)
    response = client.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCUMENTS, top_n=3)
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [r.index for r in response.results] == sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])[:3]
    assert by_index(response.results) == same_scores({i: expected[i] for i in by_index(response.results)})
    assert response.meta.api_version.version == "1"


def test_v1_client_rank_fields(sidecar, scorer):
    documents = [{"title": "Red bike", "text": d} for d in DOCUMENTS]
    client = cohere.Client(api_key=KEY, base_url=sidecar.url)
    response = client.rerank(
        model="rerank-english-v3.0",
        query=QUERY,
        documents=documents,
        rank_fields=["title", "text"],
        return_documents=True,
    )
    expected = grpc_scores(scorer, QUERY, [f"title: Red bike\ntext: {d}" for d in DOCUMENTS])
    assert by_index(response.results) == same_scores(dict(enumerate(expected)))
    assert {r.index: r.document.text for r in response.results} == dict(enumerate(DOCUMENTS))


async def test_v1_async_client(sidecar, scorer):
    client = cohere.AsyncClient(api_key=KEY, base_url=sidecar.url)
    response = await client.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCUMENTS)
    assert by_index(response.results) == same_scores(dict(enumerate(grpc_scores(scorer, QUERY, DOCUMENTS))))


def test_v2_client(sidecar, scorer):
    client = cohere.ClientV2(api_key=KEY, base_url=sidecar.url)
    response = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS, top_n=2, max_tokens_per_doc=4096)
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert len(response.results) == 2
    assert by_index(response.results) == same_scores({i: expected[i] for i in by_index(response.results)})


async def test_v2_async_client(sidecar, scorer):
    client = cohere.AsyncClientV2(api_key=KEY, base_url=sidecar.url)
    response = await client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS)
    assert by_index(response.results) == same_scores(dict(enumerate(grpc_scores(scorer, QUERY, DOCUMENTS))))


def test_sdk_errors_carry_the_message(sidecar):
    client = cohere.ClientV2(api_key=KEY, base_url=sidecar.url)
    with pytest.raises(cohere.errors.UnprocessableEntityError) as error:
        client.rerank(model="rerank-v3.5", query=QUERY, documents=["d"] * (MAX_DOCUMENTS + 1))
    assert error.value.status_code == 422
    assert (
        error.value.body["message"]
        == f"documents has {MAX_DOCUMENTS + 1} entries; this server accepts at most {MAX_DOCUMENTS}"
    )


def test_langchain_cohere_rerank(sidecar, scorer):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    documents = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCUMENTS)]
    reranker = CohereRerank(cohere_api_key=KEY, base_url=sidecar.url, model="rerank-v3.5", top_n=3)
    ranked = reranker.compress_documents(documents, QUERY)
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [d.metadata["n"] for d in ranked] == sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])[:3]
    assert all(f32(d.metadata["relevance_score"]) == same_scores(expected[d.metadata["n"]]) for d in ranked)


def test_llamaindex_cohere_rerank(sidecar, scorer):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCUMENTS)]
    reranker = CohereRerank(api_key=KEY, base_url=sidecar.url, model="rerank-v3.5", top_n=2)
    ranked = reranker.postprocess_nodes(nodes, QueryBundle(QUERY))
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [n.node.id_ for n in ranked] == [
        str(i) for i in sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])[:2]
    ]
    assert all(f32(n.score) == same_scores(expected[int(n.node.id_)]) for n in ranked)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_haystack_cohere_ranker(sidecar, scorer, mode):
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.cohere import CohereRanker

    documents = [Document(content=d, meta={"n": i}) for i, d in enumerate(DOCUMENTS)]
    ranker = CohereRanker(api_key=Secret.from_token(KEY), api_base_url=sidecar.url, model="rerank-v3.5", top_k=3)
    if mode == "sync":
        ranked = ranker.run(query=QUERY, documents=documents)["documents"]
    else:
        ranked = (await ranker.run_async(query=QUERY, documents=documents))["documents"]
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [d.meta["n"] for d in ranked] == sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])[:3]
    assert all(f32(d.score) == same_scores(expected[d.meta["n"]]) for d in ranked)
