"""Experiment logs in the engine itself: `sidecar.experiments.EventStore`s over the engines' official clients.

    from connectors.opensearch import connect
    from connectors.ubi import OpenSearchUbiStore
    log = ExperimentLog(OpenSearchUbiStore(connect("http://127.0.0.1:9200")))

OpenSearch keeps the log in the User Behavior Insights indexes `ubi_queries` and `ubi_events` (created with
the UBI 1.x mappings when the UBI plugin has not made them already); Elasticsearch gets indexes of the same
names and shape; Qdrant, Milvus, Weaviate and Solr get two collections of that shape (`connectors.ubi.collections`:
one row per record with its UBI document as JSON). Each record's id is the document id, so a query id is stored once and a retried event
is stored once; writes return after `refresh=wait_for` with the translog synced per request (the default
`index.translog.durability: request`), so an acknowledged record survives a crash.
"""

from __future__ import annotations

from typing import Any

from connectors.ubi.collections import CollectionUbiStore
from connectors.ubi.dsl import DslUbiStore, ElasticsearchUbiStore, OpenSearchUbiStore

__all__ = [
    "CollectionUbiStore",
    "DslUbiStore",
    "ElasticsearchUbiStore",
    "MilvusUbiStore",
    "OpenSearchUbiStore",
    "QdrantUbiStore",
    "SolrUbiStore",
    "WeaviateUbiStore",
    "store_for",
]
_LAZY = {"QdrantUbiStore": "qdrant", "MilvusUbiStore": "milvus", "WeaviateUbiStore": "weaviate", "SolrUbiStore": "solr"}


def __getattr__(name: str) -> Any:
    """The other engines' stores load with their module (and so their client) on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"connectors.ubi.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'connectors.ubi' has no attribute {name!r}")


def store_for(engine: str, client: Any, **names: str) -> Any:
    """The experiment log on `engine` through its client (Solr: its base URL), in the UBI collections."""
    classes = {"opensearch": OpenSearchUbiStore, "elasticsearch": ElasticsearchUbiStore}
    if engine in classes:
        return classes[engine](client, **{f"{k}_index": v for k, v in names.items()})
    lazy = {
        "qdrant": "QdrantUbiStore",
        "milvus": "MilvusUbiStore",
        "weaviate": "WeaviateUbiStore",
        "solr": "SolrUbiStore",
    }
    if engine not in lazy:
        raise ValueError(f"no UBI store for engine {engine!r}; use one of {', '.join([*classes, *lazy])} or sqlite")
    return __getattr__(lazy[engine])(client, **names)
