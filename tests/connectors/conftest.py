"""Fixtures for the connector tests: a real sidecar (reranker + embedding model), real engines, one corpus.

Engines: Qdrant's embedded local mode, Milvus Lite, and the real Milvus server started by
tests/engines/milvus.sh (dense only); real OpenSearch and Elasticsearch nodes come from
engines_fixtures.py. A missing engine fails the tests; nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerProcess, free_port
from tests.connectors.corpus import CORPUS, item_of
from tests.connectors.engines_fixtures import (  # noqa: F401 - Elasticsearch/OpenSearch nodes, clients, indices
    dsl,
    elasticsearch_node,
    es_client,
    es_products,
    fake_engine,
    opensearch_node,
    os_client,
    os_products,
)
from tests.connectors.server_engines import (  # noqa: F401 - Weaviate and Solr nodes, clients, collections
    solr_node,
    solr_products,
    solr_url,
    weaviate_client,
    weaviate_node,
    weaviate_products,
)

REPO = Path(__file__).resolve().parents[2]
MILVUS_SCRIPT = REPO / "tests" / "engines" / "milvus.sh"


@pytest.fixture(scope="session")
def sidecar_server(tiny_model_dir, embedding_model_dir, media_root, tmp_path_factory):
    """`rerank-sidecar serve --model ... --embedding-model ...` with the shared media root."""
    args = ["--model", str(tiny_model_dir), "--embedding-model", str(embedding_model_dir)]
    args += ["--media-root", str(media_root), "--max-documents", "60"]
    with ServerProcess(args, tmp_path_factory.mktemp("logs") / "connectors-sidecar.log") as proc:
        yield proc


@pytest.fixture(scope="session")
def sidecar(sidecar_server):
    from sidecar.client import RerankerClient

    with RerankerClient(sidecar_server.target, timeout=60, retries=0) as client:
        yield client


@pytest.fixture
def down_target() -> str:
    """A loopback address nothing listens on."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def down_client(down_target):
    from sidecar.client import RerankerClient

    with RerankerClient(down_target, timeout=2, retries=0) as client:
        yield client


@pytest.fixture(scope="session")
def doc_vectors(sidecar) -> dict[int, np.ndarray]:
    """Each document's embedding, straight from the sidecar (what the index helpers store)."""
    response = sidecar.embed([item_of(d) for d in CORPUS])
    return {d.id: np.array(e.values) for d, e in zip(CORPUS, response.embeddings)}


@pytest.fixture(scope="session")
def embed_query(sidecar):
    def embed(query) -> np.ndarray:
        return np.array(sidecar.embed([query]).embeddings[0].values)

    return embed


@pytest.fixture(scope="session")
def qdrant_local():
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    yield client
    client.close()


@pytest.fixture(scope="session")
def qdrant_products(qdrant_local, sidecar):
    from connectors.qdrant import index_documents

    return index_documents(qdrant_local, "products", CORPUS, embed_client=sidecar, progress=False)


@pytest.fixture(scope="session")
def milvus_lite(tmp_path_factory):
    from pymilvus import MilvusClient

    client = MilvusClient(str(tmp_path_factory.mktemp("milvus-lite") / "lite.db"))
    yield client
    client.close()


@pytest.fixture(scope="session")
def milvus_products(milvus_lite, sidecar):
    from connectors.milvus import index_documents

    return index_documents(milvus_lite, "products", CORPUS, embed_client=sidecar, index_type="FLAT", progress=False)


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory) -> str:
    """The real Milvus server (PyPI `milvus`) on a free loopback port, via tests/engines/milvus.sh."""
    if not MILVUS_SCRIPT.exists():
        pytest.fail(f"{MILVUS_SCRIPT} is missing: it starts the Milvus server these tests need")
    env = dict(os.environ, MILVUS_PORT=str(free_port()), RERANK_ENGINE_RUN=str(tmp_path_factory.mktemp("engines")))

    def script(command: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(MILVUS_SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout
        )

    started = script("start", 600)
    if started.returncode != 0:
        script("stop", 120)
        pytest.fail(f"tests/engines/milvus.sh start failed:\n{started.stdout}\n{started.stderr}")
    try:
        yield script("url", 10).stdout.strip()
    finally:
        script("stop", 120)
