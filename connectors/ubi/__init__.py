"""Experiment logs in the engine itself: `sidecar.experiments.EventStore`s over the engines' official clients.

    from connectors.opensearch import connect
    from connectors.ubi import OpenSearchUbiStore
    log = ExperimentLog(OpenSearchUbiStore(connect("http://127.0.0.1:9200")))

OpenSearch keeps the log in the User Behavior Insights indexes `ubi_queries` and `ubi_events` (created with
the UBI 1.x mappings when the UBI plugin has not made them already); Elasticsearch gets indexes of the same
names and shape. Each record's id is the document id, so a query id is stored once and a retried event
is stored once; writes return after `refresh=wait_for` with the translog synced per request (the default
`index.translog.durability: request`), so an acknowledged record survives a crash.
"""

from __future__ import annotations

from typing import Any

from connectors.ubi.dsl import DslUbiStore, ElasticsearchUbiStore, OpenSearchUbiStore

__all__ = ["DslUbiStore", "ElasticsearchUbiStore", "OpenSearchUbiStore", "open_engine_store"]


def open_engine_store(engine: str, url: str, **options: Any) -> DslUbiStore:
    """A store on `engine` ("opensearch" or "elasticsearch") at `url`, connecting with its official client."""
    if engine == "opensearch":
        from connectors.opensearch import connect

        return OpenSearchUbiStore(connect(url, **options))
    if engine == "elasticsearch":
        from connectors.elasticsearch import connect as connect_es

        return ElasticsearchUbiStore(connect_es(url, **options))
    raise ValueError(f"no UBI store for engine {engine!r}; use opensearch, elasticsearch, or the embedded sqlite store")
