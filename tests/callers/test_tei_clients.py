"""TEI's clients against the sidecar: Haystack's HuggingFaceTEIRanker over HTTP and gRPC, pymilvus's TEI function."""

from __future__ import annotations

import pytest

from tests.callers.conftest import DOCUMENTS, MAX_DOCUMENTS, QUERY, f32, grpc_scores
from tests.conftest import same_scores


def best(expected: list[float], n: int) -> list[int]:
    return sorted(range(len(expected)), key=lambda i: -expected[i])[:n]


def tei_ranker(sidecar, transport: str, **options):
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker

    url = sidecar.target if transport == "grpc" else sidecar.url
    return HuggingFaceTEIRanker(url=url, token=None, use_grpc=transport == "grpc", **options)


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_haystack_tei_ranker(sidecar, scorer, transport, mode):
    from haystack import Document
    from haystack_integrations.components.rankers.huggingface_api import TruncationDirection

    ranker = tei_ranker(sidecar, transport, top_k=3)
    documents = [Document(content=d, meta={"n": i}) for i, d in enumerate(DOCUMENTS)]
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    for direction in (None, TruncationDirection.LEFT):  # LEFT also sends truncate: true
        if mode == "sync":
            ranked = ranker.run(query=QUERY, documents=documents, truncation_direction=direction)["documents"]
        else:
            ranked = (await ranker.run_async(query=QUERY, documents=documents, truncation_direction=direction))[
                "documents"
            ]
        assert [d.meta["n"] for d in ranked] == best(expected, 3), direction
        assert all(f32(d.score) == same_scores(expected[d.meta["n"]]) for d in ranked)
    if mode == "sync":
        ranker.close()
    else:
        await ranker.close_async()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_haystack_tei_ranker_raw_scores(sidecar, scorer, transport):
    from haystack import Document

    ranker = tei_ranker(sidecar, transport, top_k=10, raw_scores=True)
    ranked = ranker.run(query=QUERY, documents=[Document(content=d, meta={"n": i}) for i, d in enumerate(DOCUMENTS)])
    logits = {r.index: r.logit for r in scorer.rerank(QUERY, DOCUMENTS).results}
    assert {d.meta["n"]: f32(d.score) for d in ranked["documents"]} == logits


def test_haystack_tei_ranker_errors(sidecar):
    from haystack import Document

    documents = [Document(content=f"d{i}") for i in range(MAX_DOCUMENTS + 1)]
    message = f"texts has {MAX_DOCUMENTS + 1} entries; this server accepts at most {MAX_DOCUMENTS}"
    with pytest.raises(RuntimeError, match="Response: .*" + message):
        tei_ranker(sidecar, "http", max_retries=1).run(query=QUERY, documents=documents)
    with pytest.raises(Exception, match=message):
        tei_ranker(sidecar, "grpc").run(query=QUERY, documents=documents)


def test_pymilvus_tei_rerank_function(sidecar, scorer):
    from pymilvus.model.reranker import TEIRerankFunction

    results = TEIRerankFunction(api_url=sidecar.url)(QUERY, DOCUMENTS)  # sends return_text: true
    expected = grpc_scores(scorer, QUERY, DOCUMENTS)
    assert [r.index for r in results] == best(expected, 5)
    assert all(r.text == DOCUMENTS[r.index] and f32(r.score) == same_scores(expected[r.index]) for r in results)
