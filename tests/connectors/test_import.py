"""`import connectors` loads neither torch nor any engine client (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "transformers", "torchvision", "qdrant_client", "pymilvus", "weaviate", "pysolr"]


def loaded_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_connectors_loads_no_torch_and_no_engine_client():
    assert loaded_after("import connectors") == []


def test_public_api_is_importable_without_torch():
    statement = "from connectors import search_and_rerank, asearch_and_rerank, FieldMapping, RerankUnavailableError"
    assert loaded_after(statement) == []


def test_engine_connectors_load_only_their_client():
    assert loaded_after("from connectors import QdrantConnector") == ["qdrant_client"]
    assert loaded_after("from connectors.milvus import MilvusConnector") == ["pymilvus"]
    assert loaded_after("from connectors import WeaviateConnector") == ["weaviate"]
    assert loaded_after("from connectors.solr import SolrConnector") == ["pysolr"]
