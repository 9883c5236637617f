"""Fixtures for the Elasticsearch and OpenSearch connector tests (imported by tests/connectors/conftest.py).

Real nodes: OpenSearch 2.19 and Elasticsearch 9, started by tests/engines/{opensearch,elasticsearch}.sh
on dedicated loopback ports, once per session. A node already answering on its port (e.g. left
running for a faster edit-test loop) is reused and left running; a node this session started is
stopped at its end. A node that cannot start fails the tests: nothing is skipped.

Environment:
    RERANK_TEST_OPENSEARCH_PORT     HTTP port of the test OpenSearch (default 9250)
    RERANK_TEST_ELASTICSEARCH_PORT  HTTP port of the test Elasticsearch (default 9251)
    RERANK_TEST_ENGINE_RUN          RERANK_ENGINE_RUN for the scripts: data, logs, pid files
                                    (default /tmp/rerank-connector-engines)
plus what the scripts read (RERANK_ENGINE_CACHE, heap sizes, Java homes; see tests/engines/lib.sh).

Also here: the corpus filters in the query DSL, and `fake_engine`, a loopback HTTP server with canned
answers for the failures a local node cannot produce (401/403, an Elasticsearch 8 refusing
`compatible-with=9`).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.connectors.corpus import CORPUS, FILTERS

REPO = Path(__file__).resolve().parents[2]
ENGINE_RUN = os.environ.get("RERANK_TEST_ENGINE_RUN", "/tmp/rerank-connector-engines")
INDEX = "products"

# The corpus filters in the query DSL both engines speak (registered beside Qdrant's and Milvus').
DSL_FILTERS = {
    "red": {"term": {"color": "red"}},
    "cheap": {"range": {"price": {"lt": 100}}},
    "none": {"term": {"color": "purple"}},
}
for _name, _clause in DSL_FILTERS.items():
    FILTERS[_name].setdefault("elasticsearch", _clause)
    FILTERS[_name].setdefault("opensearch", _clause)


# Per engine: its script's port variable, the path that identifies it, and how to recognise it there.
NODES: dict[str, tuple[str, str, Callable[[dict, Any], bool]]] = {
    "opensearch": ("OPENSEARCH_PORT", "/", lambda info, headers: info.get("version", {}).get("distribution") == "opensearch"),
    "elasticsearch": ("ELASTICSEARCH_PORT", "/", lambda info, headers: headers.get("X-Elastic-Product") == "Elasticsearch"),
    "weaviate": ("WEAVIATE_PORT", "/v1/meta", lambda info, headers: "version" in info and "modules" in info),
    "solr": ("SOLR_PORT", "/solr/admin/info/system", lambda info, headers: "solr-spec-version" in info.get("lucene", {})),
}  # fmt: skip


@dataclass
class EngineNode:
    """One engine server run by its tests/engines script on a fixed loopback port."""

    engine: str  # a key of NODES: the script name and the product
    port: int
    started: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" + ("/solr" if self.engine == "solr" else "")

    def script(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        env = dict(os.environ, RERANK_ENGINE_RUN=ENGINE_RUN, **{NODES[self.engine][0]: str(self.port)})
        script = REPO / "tests" / "engines" / f"{self.engine}.sh"
        return subprocess.run(["bash", str(script), command], env=env, capture_output=True, text=True, timeout=timeout)

    def answering(self) -> bool:
        """Whether the right product already answers on the port (another product there is a failure)."""
        _, path, is_it = NODES[self.engine]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as response:
                info, headers = json.load(response), response.headers
        except OSError:
            return False  # nothing listens (or not HTTP): start it
        except ValueError:
            info, headers = {}, {}  # answers, but not with JSON
        if is_it(info, headers):
            return True
        pytest.fail(
            f"port {self.port} answers, but not as {self.engine}: {str(info)[:300]}; set RERANK_TEST_{self.engine.upper()}_PORT"
        )

    def start(self) -> None:
        if self.answering():
            return
        result = self.script("start", 1800)  # installs first when the cache is cold (Maven downloads, a Go build)
        if result.returncode != 0:
            pytest.fail(
                f"tests/engines/{self.engine}.sh start failed (port {self.port}):\n{result.stdout}\n{result.stderr}"
            )
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.script("stop", 180)


def run_node(engine: str, default_port: int) -> Iterator[EngineNode]:
    """The engine's node on RERANK_TEST_<ENGINE>_PORT (default `default_port`), stopped at the end if started here."""
    node = EngineNode(engine, int(os.environ.get(f"RERANK_TEST_{engine.upper()}_PORT", default_port)))
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def opensearch_node() -> Iterator[EngineNode]:
    yield from run_node("opensearch", 9250)


@pytest.fixture(scope="session")
def elasticsearch_node() -> Iterator[EngineNode]:
    yield from run_node("elasticsearch", 9251)


@pytest.fixture(scope="session")
def es_client(elasticsearch_node):
    from elasticsearch import Elasticsearch

    client = Elasticsearch(elasticsearch_node.url, request_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def os_client(opensearch_node):
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[opensearch_node.url], timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def es_products(es_client, sidecar):
    """The corpus in Elasticsearch, float HNSW (exact scores), made by the index helper."""
    from connectors.elasticsearch import index_documents

    return index_documents(
        es_client, INDEX, CORPUS, embed_client=sidecar, index_options={"type": "hnsw"}, recreate=True, progress=False
    )


@pytest.fixture(scope="session")
def os_products(os_client, sidecar):
    """The corpus in OpenSearch (knn_vector, lucene HNSW, cosinesimil), made by the index helper."""
    from connectors.opensearch import index_documents

    return index_documents(os_client, INDEX, CORPUS, embed_client=sidecar, recreate=True, progress=False)


# --- a fake engine for failures a real local node cannot produce ----------------------------------


@dataclass
class FakeEngine:
    """A loopback HTTP server giving every request the same canned answer; records what it received."""

    url: str
    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # header names lower-cased

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, dict(headers or {})
        self.requests.clear()


ES_HEADERS = {"X-Elastic-Product": "Elasticsearch"}
ES_401 = {
    "error": {
        "root_cause": [{"type": "security_exception", "reason": "missing authentication credentials for REST request [/products/_mapping]"}],
        "type": "security_exception",
        "reason": "missing authentication credentials for REST request [/products/_mapping]",
        "header": {"WWW-Authenticate": ['Basic realm="security" charset="UTF-8"', "ApiKey"]},
    },
    "status": 401,
}  # fmt: skip
ES_403 = {
    "error": {
        "type": "security_exception",
        "reason": "action [indices:admin/mappings/get] is unauthorized for user [reader] with effective roles [none]",
    },
    "status": 403,
}
ES8_REFUSES_V9 = {
    "error": {
        "type": "media_type_header_exception",
        "reason": "Invalid media-type value on headers [Accept, Content-Type]",
        "root_cause": [{"type": "media_type_header_exception", "reason": "Invalid media-type value on headers [Accept, Content-Type]"}],
        "caused_by": {
            "type": "status_exception",
            "reason": "Accept version must be either version 8 or 7, but found 9. Accept=application/vnd.elasticsearch+json; compatible-with=9",
        },
    },
    "status": 400,
}  # fmt: skip


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    """A `FakeEngine` on a free loopback port, stopped after the test."""
    fake = FakeEngine("")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            fake.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            data = fake.body if isinstance(fake.body, bytes) else json.dumps(fake.body).encode()
            self.send_response(fake.status)
            content_type = "text/plain" if isinstance(fake.body, bytes) else "application/json"
            for name, value in {"Content-Type": content_type, **fake.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


# Per engine: (connector module, connector class, client fixture, corpus fixture).
CONNECTORS = {
    "qdrant": ("connectors.qdrant", "QdrantConnector", "qdrant_local", "qdrant_products"),
    "milvus-lite": ("connectors.milvus", "MilvusConnector", "milvus_lite", "milvus_products"),
    "elasticsearch": ("connectors.elasticsearch", "ElasticsearchConnector", "es_client", "es_products"),
    "opensearch": ("connectors.opensearch", "OpenSearchConnector", "os_client", "os_products"),
    "weaviate": ("connectors.weaviate", "WeaviateConnector", "weaviate_client", "weaviate_products"),
    "solr": ("connectors.solr", "SolrConnector", "solr_url", "solr_products"),
}


def connector_factories(request: pytest.FixtureRequest) -> dict[str, Callable[..., Any]]:
    """Per engine: `build(mapping, **options)` -> a connector on that engine's corpus collection."""
    import importlib

    def factory(module: str, cls: str, client: str, corpus: str) -> Callable[..., Any]:
        def build(mapping, **options):
            request.getfixturevalue(corpus)  # the collection exists
            connector = getattr(importlib.import_module(module), cls)
            return connector(request.getfixturevalue(client), INDEX, mapping, **options)

        return build

    return {engine: factory(*spec) for engine, spec in CONNECTORS.items()}


@dataclass
class DslEngine:
    """One of the two query-DSL engines, for tests that run the same way on both."""

    name: str  # "elasticsearch" or "opensearch"
    client: Any
    url: str

    @property
    def module(self) -> Any:
        import importlib

        return importlib.import_module(f"connectors.{self.name}")

    def connector(self, index: str = INDEX, mapping: Any = None, **options: Any) -> Any:
        cls = self.module.ElasticsearchConnector if self.name == "elasticsearch" else self.module.OpenSearchConnector
        return cls(self.client, index, mapping, **options)

    def index(self, index: str, documents: Any, **options: Any) -> Any:
        return self.module.index_documents(self.client, index, documents, progress=False, **options)

    def count(self, index: str) -> int:
        return int(self.client.count(index=index)["count"])

    def properties(self, index: str) -> dict[str, Any]:
        return dict(self.client.indices.get_mapping(index=index)[index]["mappings"]["properties"])


@pytest.fixture(params=["elasticsearch", "opensearch"])
def dsl(request) -> DslEngine:
    """Elasticsearch, then OpenSearch: the real node's client and URL."""
    if request.param == "elasticsearch":
        return DslEngine(
            "elasticsearch", request.getfixturevalue("es_client"), request.getfixturevalue("elasticsearch_node").url
        )
    return DslEngine("opensearch", request.getfixturevalue("os_client"), request.getfixturevalue("opensearch_node").url)
