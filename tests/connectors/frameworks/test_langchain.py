"""SidecarRerank inside a real LangChain retrieval pipeline: an in-memory vector store's retriever,
then ContextualCompressionRetriever with the adapter; text-only and image documents."""

from __future__ import annotations

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore

from connectors.frameworks.langchain import SidecarRerank
from sidecar.client import AsyncRerankerClient
from tests.conftest import same_scores
from tests.connectors.frameworks.conftest import QUERY, TOP, best


@pytest.fixture(scope="module")
def retriever(corpus):
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document(page_content=e.text, metadata=e.metadata) for e in corpus])
    return store.as_retriever(search_kwargs={"k": len(corpus)})


def check(ranked, corpus, expected) -> None:
    assert [d.metadata["sku"] for d in ranked] == best(expected)
    by_sku = {e.metadata["sku"]: e for e in corpus}
    for doc in ranked:
        assert doc.metadata["relevance_score"] == same_scores(expected[doc.metadata["sku"]])  # the gRPC client's score
        source = by_sku[doc.metadata["sku"]]
        assert doc.page_content == source.text
        assert {k: v for k, v in doc.metadata.items() if k != "relevance_score"} == source.metadata


def test_pipeline(retriever, sidecar, corpus, expected):
    pipeline = ContextualCompressionRetriever(
        base_compressor=SidecarRerank(client=sidecar, top_n=TOP), base_retriever=retriever
    )
    check(pipeline.invoke(QUERY), corpus, expected)


async def test_pipeline_async(retriever, sidecar_server, corpus, expected):
    async with AsyncRerankerClient(sidecar_server.target, timeout=60) as client:
        rerank = SidecarRerank(async_client=client, top_n=TOP)
        pipeline = ContextualCompressionRetriever(base_compressor=rerank, base_retriever=retriever)
        check(await pipeline.ainvoke(QUERY), corpus, expected)


def test_text_only_through_its_own_client(sidecar_server, sidecar, corpus):
    # image_key=None scores the text alone; top_n=None keeps every document; the adapter opens its own client.
    documents = [Document(page_content=e.text, metadata=e.metadata) for e in corpus]
    ranked = SidecarRerank(target=sidecar_server.target, image_key=None, top_n=None).compress_documents(
        documents, QUERY
    )
    text_only = {
        corpus[r.index].metadata["sku"]: r.score for r in sidecar.rerank(QUERY, [e.text for e in corpus]).results
    }
    assert [d.metadata["sku"] for d in ranked] == sorted(text_only, key=lambda sku: -text_only[sku])
    assert {d.metadata["sku"]: d.metadata["relevance_score"] for d in ranked} == text_only


def test_bad_image_value_names_the_document(sidecar):
    documents = [Document(page_content="x"), Document(page_content="y", metadata={"image": 3})]
    with pytest.raises(
        TypeError, match=r"documents\[1\]\.metadata\.image: an image must be a str, bytes or Path, not int"
    ):
        SidecarRerank(client=sidecar).compress_documents(documents, QUERY)
