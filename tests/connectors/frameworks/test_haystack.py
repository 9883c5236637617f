"""SidecarRanker inside a real Haystack pipeline (run and run_async): an in-memory BM25 retriever, then the
ranker; text-only and image documents (meta references and an image blob)."""

from __future__ import annotations

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.dataclasses import ByteStream
from haystack.document_stores.in_memory import InMemoryDocumentStore

from connectors.frameworks.haystack import SidecarRanker
from sidecar.client import AsyncRerankerClient
from tests.conftest import same_scores
from tests.connectors.frameworks.conftest import PNG, QUERY, TOP, best


@pytest.fixture(scope="module")
def store(corpus):
    store = InMemoryDocumentStore()
    documents = []
    for entry in corpus:
        if entry.metadata["sku"] == "r-5":  # its image as the document's blob instead of a meta reference
            meta = {k: v for k, v in entry.metadata.items() if k != "image"}
            documents.append(Document(content=entry.text, meta=meta, blob=ByteStream(PNG, mime_type="image/png")))
        else:
            documents.append(Document(content=entry.text, meta=entry.metadata))
    store.write_documents(documents)
    return store


@pytest.fixture(scope="module")
def retrieved_expected(store, sidecar, corpus) -> dict[str, float]:
    """What the gRPC client scores for the documents BM25 hands the ranker (those without a query
    term are not retrieved; a request's scores depend on its set of documents in the last bits)."""
    retrieved = InMemoryBM25Retriever(document_store=store, top_k=len(corpus)).run(query=QUERY)["documents"]
    entries = {e.metadata["sku"]: e for e in corpus}
    skus = [d.meta["sku"] for d in retrieved]
    response = sidecar.rerank(QUERY, [entries[sku].item() for sku in skus])
    return {skus[r.index]: r.score for r in response.results}


def build(pipeline, store, ranker, corpus):
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=len(corpus)))
    pipeline.add_component("ranker", ranker)
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def check(result, corpus, expected) -> None:
    ranked = result["ranker"]["documents"]
    assert [d.meta["sku"] for d in ranked] == best(expected)
    assert all(d.score == same_scores(expected[d.meta["sku"]]) for d in ranked)  # the gRPC client's scores
    texts = {e.metadata["sku"]: e.text for e in corpus}
    assert all(d.content == texts[d.meta["sku"]] for d in ranked)


def test_pipeline(store, sidecar, corpus, retrieved_expected):
    pipeline = build(Pipeline(), store, SidecarRanker(client=sidecar, top_k=TOP), corpus)
    result = pipeline.run({"retriever": {"query": QUERY}, "ranker": {"query": QUERY}})
    check(result, corpus, retrieved_expected)


async def test_async_pipeline(store, sidecar_server, corpus, retrieved_expected):
    async with AsyncRerankerClient(sidecar_server.target, timeout=60) as client:
        pipeline = build(Pipeline(), store, SidecarRanker(async_client=client, top_k=TOP), corpus)
        check(
            await pipeline.run_async({"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}),
            corpus,
            retrieved_expected,
        )


def test_serialises_and_opens_its_own_client(store, sidecar_server, corpus, retrieved_expected):
    ranker = SidecarRanker.from_dict(SidecarRanker(target=sidecar_server.target, top_k=TOP).to_dict())
    pipeline = build(Pipeline(), store, ranker, corpus)
    check(
        pipeline.run({"retriever": {"query": QUERY}, "ranker": {"query": QUERY, "top_k": TOP}}),
        corpus,
        retrieved_expected,
    )
    with pytest.raises(ValueError, match="top_k must be > 0, but got 0"):
        ranker.run(query=QUERY, documents=[Document(content="x")], top_k=0)
