"""Connectors: first-stage search in Elasticsearch, OpenSearch, Qdrant, Milvus, Weaviate or Solr, then rerank.

This package talks to the sidecar through `sidecar.client` only and never imports torch. Engine
clients load only with their module: `connectors.qdrant` (qdrant-client), `connectors.milvus`
(pymilvus), `connectors.elasticsearch` (elasticsearch-py 9), `connectors.opensearch` (opensearch-py),
`connectors.weaviate` (weaviate-client v4), `connectors.solr` (pysolr); their connector classes are
also reachable from here, lazily.

    from connectors import FieldMapping, search_and_rerank
    from connectors.qdrant import QdrantConnector

    hits = search_and_rerank(QdrantConnector(qdrant, "products", FieldMapping(image_fields="image")),
                             "red running shoes", mode="hybrid", rerank_client=sidecar)
"""

from __future__ import annotations

from typing import Any

from connectors.base import Connector, Document, FieldMapping, Hit, SearchMode
from connectors.errors import (
    ConnectorError,
    EmbedUnavailableError,
    EngineError,
    FieldMappingError,
    RerankUnavailableError,
    SidecarCallError,
)
from connectors.experiment import Arm, Experiment, ExperimentResult
from connectors.pipeline import Query, RerankedHit, asearch_and_rerank, parse_query, search_and_rerank

__all__ = [
    "Arm",
    "Experiment",
    "ExperimentResult",
    "Connector",
    "ConnectorError",
    "Document",
    "EmbedUnavailableError",
    "EngineError",
    "FieldMapping",
    "FieldMappingError",
    "Hit",
    "Query",
    "RerankUnavailableError",
    "RerankedHit",
    "SearchMode",
    "SidecarCallError",
    "asearch_and_rerank",
    "parse_query",
    "search_and_rerank",
]

_LAZY = {
    "QdrantConnector": "connectors.qdrant",
    "MilvusConnector": "connectors.milvus",
    "ElasticsearchConnector": "connectors.elasticsearch",
    "OpenSearchConnector": "connectors.opensearch",
    "WeaviateConnector": "connectors.weaviate",
    "SolrConnector": "connectors.solr",
}


def __getattr__(name: str) -> Any:
    """Import engine connectors on first use, so `import connectors` needs no engine client.

    (They are left out of `__all__`, so `from connectors import *` needs none either.)
    """
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'connectors' has no attribute {name!r}")
