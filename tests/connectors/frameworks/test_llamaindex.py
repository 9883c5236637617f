"""SidecarRerank inside a real LlamaIndex query engine: a vector index over text and image nodes,
its retriever, then the adapter as node postprocessor; and an image query."""

from __future__ import annotations

import base64

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode

from connectors.frameworks.llamaindex import SidecarRerank
from sidecar.client import AsyncRerankerClient
from tests.conftest import same_scores
from tests.connectors.frameworks.conftest import PNG, QUERY, TOP, best


@pytest.fixture(scope="module")
def nodes(corpus, media_root):
    """The corpus as nodes: images by reference in metadata, or as ImageNodes (a file, base64 bytes)."""
    by_sku = {e.metadata["sku"]: e for e in corpus}
    made = [TextNode(text=by_sku[s].text, metadata=by_sku[s].metadata, id_=s) for s in ("b-1", "c-2", "a-3", "w-6")]
    made.append(
        ImageNode(text=by_sku["s-4"].text, image_path=str(media_root / "red.png"), metadata={"sku": "s-4"}, id_="s-4")
    )
    made.append(
        ImageNode(text=by_sku["r-5"].text, image=base64.b64encode(PNG).decode(), metadata={"sku": "r-5"}, id_="r-5")
    )
    return made


@pytest.fixture(scope="module")
def index(nodes):
    return VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=8))


def check(source_nodes, nodes, expected) -> None:
    assert [n.node.node_id for n in source_nodes] == best(expected)
    assert all(n.score == same_scores(expected[n.node.node_id]) for n in source_nodes)  # the gRPC client's scores
    originals = {n.node_id: n for n in nodes}
    assert all(n.node.metadata == originals[n.node.node_id].metadata for n in source_nodes)


def test_query_engine(index, nodes, sidecar, expected):
    rerank = SidecarRerank(client=sidecar, top_n=TOP)
    engine = index.as_query_engine(similarity_top_k=len(nodes), node_postprocessors=[rerank], llm=MockLLM())
    check(engine.query(QUERY).source_nodes, nodes, expected)


async def test_query_engine_async(index, nodes, sidecar_server, expected):
    async with AsyncRerankerClient(sidecar_server.target, timeout=60) as client:
        rerank = SidecarRerank(async_client=client, top_n=TOP)
        engine = index.as_query_engine(similarity_top_k=len(nodes), node_postprocessors=[rerank], llm=MockLLM())
        check((await engine.aquery(QUERY)).source_nodes, nodes, expected)


def test_image_query(nodes, sidecar_server, sidecar, media_root, corpus):
    rerank = SidecarRerank(target=sidecar_server.target, top_n=len(nodes))
    query = QueryBundle(query_str="this picture", image_path=str(media_root / "nested" / "blue.png"))
    ranked = rerank.postprocess_nodes([NodeWithScore(node=n, score=0.0) for n in nodes], query)
    by_sku = {e.metadata["sku"]: e for e in corpus}
    skus = [n.node_id for n in nodes]
    direct = sidecar.rerank(
        {"text": "this picture", "images": [media_root / "nested" / "blue.png"]}, [by_sku[s].item() for s in skus]
    )
    assert {n.node.node_id: n.score for n in ranked} == same_scores({skus[r.index]: r.score for r in direct.results})
