"""Connectors: first-stage search in Elasticsearch, OpenSearch, Qdrant or Milvus, then rerank.

This package talks to the sidecar through `sidecar.client` only and never imports torch.
"""
