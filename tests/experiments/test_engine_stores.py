"""The experiment log in the engines: OpenSearch's real UBI indexes, and collections of the same shape in
Elasticsearch, Qdrant (local mode), Milvus Lite, Weaviate and Solr (real nodes)."""

from __future__ import annotations

import pytest

from connectors.ubi import ElasticsearchUbiStore, OpenSearchUbiStore
from sidecar.experiments.errors import ExperimentError
from sidecar.experiments.log import ExperimentLog, record_event
from sidecar.experiments.records import UbiEvent, UbiQuery
from tests.connectors.engines_fixtures import elasticsearch_node, opensearch_node  # noqa: F401 - the real nodes
from tests.connectors.server_engines import solr_node, weaviate_node  # noqa: F401 - the real nodes

NAMES = {"queries": "test_ubi_queries", "events": "test_ubi_events"}


@pytest.fixture(params=["opensearch", "elasticsearch", "qdrant", "milvus-lite", "weaviate", "solr"])
def store(request, tmp_path):
    if request.param in ("qdrant", "milvus-lite", "weaviate", "solr"):
        store = _collection_store(request, tmp_path)
        yield store
        store.close()
        return
    if request.param == "opensearch":
        from opensearchpy import OpenSearch

        node = request.getfixturevalue("opensearch_node")
        client = OpenSearch(node.url)
        make = OpenSearchUbiStore
    else:
        from elasticsearch import Elasticsearch

        node = request.getfixturevalue("elasticsearch_node")
        client = Elasticsearch(node.url)
        make = ElasticsearchUbiStore
    for index in ("test_ubi_queries", "test_ubi_events"):
        client.indices.delete(index=index, ignore_unavailable=True)
    store = make(client, queries_index="test_ubi_queries", events_index="test_ubi_events")
    yield store
    store.close()


def _collection_store(request, tmp_path):
    import connectors.ubi as ubi

    if request.param == "qdrant":
        from qdrant_client import QdrantClient

        return ubi.QdrantUbiStore(QdrantClient(":memory:"), **NAMES)
    if request.param == "milvus-lite":
        from pymilvus import MilvusClient

        return ubi.MilvusUbiStore(MilvusClient(str(tmp_path / "milvus.db")), **NAMES)
    if request.param == "weaviate":
        import weaviate

        node = request.getfixturevalue("weaviate_node")
        client = weaviate.connect_to_local(port=node.port, grpc_port=node.port + 1)
        request.addfinalizer(client.close)
        for name in ("TestUbiQueries", "TestUbiEvents"):
            client.collections.delete(name)
        return ubi.WeaviateUbiStore(client, **NAMES)
    from connectors.solr import ensure_collection

    store = ubi.SolrUbiStore(request.getfixturevalue("solr_node").url, **NAMES)
    for name in NAMES.values():  # anew for this test
        ensure_collection(store.client, name, "_default", recreate=True)
    return store


def query(qid: str) -> UbiQuery:
    return UbiQuery(query_id=qid, client_id="c1", user_query="red shoes", query_response_hit_ids=("d1", "d2"),
                    query_attributes={"experiment": "e1", "design": "interleave", "arms": ["a", "b"],
                                      "teams": ["a", "b"]})  # fmt: skip


def test_round_trip_duplicates_and_idempotent_events(store) -> None:
    first, click = query("q1"), UbiEvent(action_name="click", query_id="q1", object_id="d2", position=2)
    store.write([first], [click])
    store.write([], [click])  # a retried event is stored once
    assert list(store.read_queries("e1")) == [first] and list(store.read_events(["q1"])) == [click]
    assert store.counts() == (1, 1) and list(store.read_queries("other")) == []
    with pytest.raises(ExperimentError, match="'q1' is already logged"):
        store.write([query("q2"), query("q1")], [])
    assert store.counts() == (1, 1)  # nothing of the refused batch


def test_log_on_the_engine_and_the_ubi_mapping(store) -> None:
    with ExperimentLog(store) as log:
        log.log_query(query("q7"))
        record_event(log, "click", "q7", object_id="d1", position=1, session_id="s1").wait(30)
        with pytest.raises(ExperimentError, match="not a logged query"):
            record_event(log, "click", "unknown")
        (stored,) = list(store.read_events())
        assert stored.session_id == "s1" and stored.position == 1
        if not hasattr(store, "queries_index"):
            return
        mapping = store.client.indices.get_mapping(index="test_ubi_events")["test_ubi_events"]["mappings"]
        attributes = mapping["properties"]["event_attributes"]["properties"]
        assert attributes["position"]["properties"]["ordinal"]["type"] == "integer"
        assert attributes["object"]["properties"]["object_id"]["type"] == "keyword"
        query_mapping = store.client.indices.get_mapping(index="test_ubi_queries")["test_ubi_queries"]["mappings"]
        assert query_mapping["properties"]["query_response_hit_ids"]["type"] == "keyword"
