"""Fixtures for the Weaviate and Solr connector tests (imported by tests/connectors/conftest.py).

Real servers, started once per session by their tests/engines scripts on loopback ports (a node
already answering there is reused and left running, as in engines_fixtures.py): Weaviate 1.35,
built from the Go module proxy, and a standalone Solr 9.10 node from Maven Central artifacts. A
server that cannot start fails the tests: nothing is skipped.

Environment:
    RERANK_TEST_WEAVIATE_PORT  REST port of the test Weaviate (default 9260; gRPC on the next
                               port, cluster ports up to +5)
    RERANK_TEST_SOLR_PORT      HTTP port of the test Solr (default 9256)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.connectors.corpus import CORPUS, FILTERS
from tests.connectors.engines_fixtures import INDEX, EngineNode, run_node

# The corpus filters as Solr filter queries (Weaviate's Filter objects are added by weaviate_client).
for _name, _fq in {"red": "color:red", "cheap": "price:[* TO 100}", "none": "color:purple"}.items():
    FILTERS[_name].setdefault("solr", _fq)


@pytest.fixture(scope="session")
def weaviate_node() -> Iterator[EngineNode]:
    yield from run_node("weaviate", 9260)


@pytest.fixture(scope="session")
def weaviate_client(weaviate_node):
    import weaviate
    from weaviate.classes.query import Filter

    for name, flt in {
        "red": Filter.by_property("color").equal("red"),
        "cheap": Filter.by_property("price").less_than(100),
        "none": Filter.by_property("color").equal("purple"),
    }.items():
        FILTERS[name].setdefault("weaviate", flt)
    client = weaviate.connect_to_local(port=weaviate_node.port, grpc_port=weaviate_node.port + 1)
    yield client
    client.close()


@pytest.fixture(scope="session")
def weaviate_products(weaviate_client, sidecar):
    """The corpus in Weaviate (self-provided named vector "dense", cosine HNSW), made by the index helper."""
    from connectors.weaviate import index_documents

    return index_documents(weaviate_client, INDEX, CORPUS, embed_client=sidecar, recreate=True, progress=False)


@pytest.fixture(scope="session")
def solr_node() -> Iterator[EngineNode]:
    yield from run_node("solr", 9256)


@pytest.fixture(scope="session")
def solr_url(solr_node) -> str:
    """The node's base URL (…/solr), what SolrConnector and the index helper take."""
    return solr_node.url


@pytest.fixture(scope="session")
def solr_products(solr_url, sidecar):
    """The corpus in a Solr core (DenseVectorField "dense", cosine), made by the index helper."""
    from connectors.solr import index_documents

    return index_documents(solr_url, INDEX, CORPUS, embed_client=sidecar, recreate=True, progress=False)
