"""`rerank-sidecar load-catalogue`: index the bundled catalogue into running engines, embedding through a sidecar.

The docker-compose `loader` service runs this once the engines are healthy; `tests/test_compose.py`
runs the same code path, with the arguments parsed from docker-compose.yml, against engines started
on this machine. Each engine is optional; every one given is waited for (with a deadline and a clear
error) and filled by its connector's `index_documents` helper with vectors the sidecar computed once (text
and image of each item together), then counted.

    rerank-sidecar load-catalogue --sidecar sidecar:50051 --elasticsearch http://elasticsearch:9200 \\
        --opensearch http://opensearch:9200 --qdrant http://qdrant:6333 --milvus http://milvus:19530 \\
        --weaviate http://weaviate:8080 --solr http://solr:8983/solr

`--qdrant` also takes a directory (qdrant-client local mode) or `:memory:`; `--milvus` also takes a Milvus
Lite file (`./catalogue.db`). Image references stay as stored (`images/<name>.jpg`, relative to
`sidecar/apps/demo_data`); the loader and the web page rewrite them into data: URIs when they send them to the
sidecar, so the sidecar needs no shared media directory.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import mimetypes
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.apps.demo_data import DATA_DIR, load_catalogue
from sidecar.apps.sidecar_flags import add_sidecar_arguments, client_options, sidecar_target

log = logging.getLogger("sidecar.apps.loader")
ENGINES = ("elasticsearch", "opensearch", "qdrant", "milvus", "weaviate", "solr")
WEAVIATE_GRPC_PORT = 50051  # Weaviate's default gRPC port (weaviate-client v4 searches over gRPC)
DEFAULT_COLLECTION = "catalogue"
EXTRA_FIELDS = ("title", "category")


class LoaderError(Exception):
    """A failure explained in one message (exit status 2)."""


@dataclass(frozen=True)
class Targets:
    """Where to load: the sidecar's gRPC target and each engine's URL/URI/path (None: skip that engine)."""

    sidecar: str | list[str]
    engines: dict[str, str] = field(default_factory=dict)
    collection: str = DEFAULT_COLLECTION
    wait_timeout: float = 600.0
    recreate: bool = True
    milvus_full_text: bool = True
    weaviate_grpc_port: int = WEAVIATE_GRPC_PORT
    weaviate_reranker_url: str | None = None  # the sidecar's HTTP URL as Weaviate reaches it
    sidecar_options: dict[str, Any] = field(default_factory=dict)  # RerankerClient's api_key and TLS arguments


def inline_image(ref: str) -> str:
    """A catalogue reference (`images/x.jpg` under `sidecar/apps/demo_data`) as a data: URI; anything else unchanged."""
    if ref.startswith(("http://", "https://", "data:")):
        return ref
    path = (DATA_DIR / ref).resolve()
    if not path.is_file() or not path.is_relative_to(DATA_DIR):
        return ref
    kind = mimetypes.guess_type(path.name)[0] or "image/jpeg"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def catalogue_documents() -> list[Any]:
    """The bundled catalogue's items as `connectors.Document`s: text, image reference, title and category."""
    from connectors import Document

    return [
        Document(it.id, it.text, image=it.file, fields={"title": it.title, "category": it.category})
        for it in load_catalogue().items
    ]


def _until(what: str, timeout: float, probe: Callable[[], object]) -> Any:
    """Call `probe` until it returns without raising; after `timeout` seconds raise LoaderError with the last error."""
    deadline, last = time.monotonic() + timeout, "no attempt"
    while True:
        try:
            return probe()
        except Exception as exc:  # noqa: BLE001 - any failure to answer means "not up yet"; reported at the deadline
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise LoaderError(f"{what} was not healthy after {timeout:.0f}s (last error: {last})")
        time.sleep(2.0)


def _http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read() or b"null")


def wait_sidecar(target: str | list[str], timeout: float, **options: Any) -> Any:
    """A `RerankerClient` on `target` (`options`: api_key, TLS) once it reports SERVING (models loaded, warm)."""
    from sidecar.client import RerankerClient

    client = RerankerClient(target, timeout=600, retries=0, **options)
    try:
        _until(f"the sidecar at {target}", timeout, lambda: client.wait_until_ready(timeout=5))
    except BaseException:
        client.close()
        raise
    return client


def wait_engine(engine: str, location: str, timeout: float) -> None:
    """Block until `engine` at `location` answers its health endpoint (local paths need no wait)."""
    if engine in ("elasticsearch", "opensearch"):
        url = location.rstrip("/") + "/_cluster/health?wait_for_status=yellow&timeout=5s"
        _until(f"{engine} at {location}", timeout, lambda: _http_json(url))
    elif engine == "qdrant" and location.startswith(("http://", "https://")):
        _until(
            f"qdrant at {location}",
            timeout,
            lambda: urllib.request.urlopen(location.rstrip("/") + "/readyz", timeout=10),
        )
    elif engine == "milvus" and location.startswith(("http://", "https://", "tcp://")):
        from pymilvus import MilvusClient

        _until(f"milvus at {location}", timeout, lambda: MilvusClient(location, timeout=10).list_collections())
    elif engine == "weaviate":
        _until(f"weaviate at {location}", timeout, lambda: _http_json(location.rstrip("/") + "/v1/.well-known/ready"))
    elif engine == "solr":
        _until(f"solr at {location}", timeout, lambda: _http_json(location.rstrip("/") + "/admin/info/system?wt=json"))


def open_client(engine: str, location: str, weaviate_grpc_port: int = WEAVIATE_GRPC_PORT) -> Any:
    """The engine's own client for a URL (or, for Qdrant and Milvus, a local path); Solr's is its base URL."""
    if engine == "elasticsearch":
        from connectors.elasticsearch import connect

        return connect(location, request_timeout=120)
    if engine == "opensearch":
        from connectors.opensearch import connect as os_connect

        return os_connect(location, request_timeout=120)
    if engine == "qdrant":
        from qdrant_client import QdrantClient

        if location == ":memory:":
            return QdrantClient(":memory:")
        if location.startswith(("http://", "https://")):
            return QdrantClient(url=location, timeout=120)
        return QdrantClient(path=location)
    if engine == "milvus":
        from pymilvus import MilvusClient

        return MilvusClient(location)
    if engine == "weaviate":
        from connectors.weaviate import connect as weaviate_connect

        return weaviate_connect(location, grpc_port=weaviate_grpc_port)
    if engine == "solr":
        return location.rstrip("/")
    raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")


def count(engine: str, client: Any, collection: str) -> int:
    """How many documents the engine holds in `collection` (after a refresh/flush)."""
    if engine in ("elasticsearch", "opensearch"):
        client.indices.refresh(index=collection)
        return int(client.count(index=collection)["count"])
    if engine == "qdrant":
        return int(client.count(collection, exact=True).count)
    if engine == "weaviate":
        return int(client.collections.get(collection).aggregate.over_all(total_count=True).total_count)
    if engine == "solr":
        return int(_http_json(f"{client}/{collection}/select?q=*:*&rows=0&wt=json")["response"]["numFound"])
    rows = client.query(collection, filter="", output_fields=["count(*)"])
    return int(rows[0]["count(*)"])


def index_into(engine: str, client: Any, vectors: list[list[float]], targets: Targets, documents: list[Any]) -> Any:
    """Index `documents` with their sidecar `vectors` into one engine through its connector's helper."""
    common: dict[str, Any] = {
        "vectors": vectors, "recreate": targets.recreate, "image_uri": inline_image, "progress": False,
    }  # fmt: skip
    if engine == "elasticsearch":
        from connectors.elasticsearch import index_documents as es_index

        settings = {"number_of_replicas": 0}
        return es_index(
            client, targets.collection, documents, index_options={"type": "hnsw"}, settings=settings, **common
        )
    if engine == "opensearch":
        from connectors.opensearch import index_documents as os_index

        return os_index(client, targets.collection, documents, settings={"number_of_replicas": 0}, **common)
    if engine == "qdrant":
        from connectors.qdrant import index_documents as qdrant_index

        return qdrant_index(client, targets.collection, documents, **common)
    if engine == "weaviate":
        from connectors.weaviate import index_documents as weaviate_index
        from connectors.weaviate import sidecar_reranker

        url = targets.weaviate_reranker_url
        reranker = sidecar_reranker(url) if url else None
        return weaviate_index(client, targets.collection, documents, reranker=reranker, **common)
    if engine == "solr":
        from connectors.solr import index_documents as solr_index

        return solr_index(client, targets.collection, documents, **common)
    from connectors.milvus import index_documents as milvus_index

    return milvus_index(client, targets.collection, documents, full_text=targets.milvus_full_text, **common)


def load(targets: Targets, *, close: bool = True) -> dict[str, int]:
    """Wait for the sidecar and each engine, index the catalogue into each, and return engine -> document count.

    Raises:
        LoaderError: a service did not become healthy in time, or an engine holds the wrong count afterwards.
        ConnectorError: an engine or the sidecar failed while indexing.
    """
    if unknown := sorted(set(targets.engines) - set(ENGINES)):
        raise LoaderError(f"unknown engines {unknown}; use {', '.join(ENGINES)}")
    if not targets.engines:
        raise LoaderError(f"give at least one of --{' --'.join(ENGINES)}")
    documents = catalogue_documents()
    log.info("waiting for the sidecar at %s (up to %.0fs)", targets.sidecar, targets.wait_timeout)
    sidecar = wait_sidecar(targets.sidecar, targets.wait_timeout, **targets.sidecar_options)
    counts: dict[str, int] = {}
    try:
        from connectors.indexing import embed_documents

        start = time.perf_counter()  # embedded once (text + image together), then written into each engine
        vectors = embed_documents(sidecar, documents, batch_size=6, image_uri=inline_image, progress=False)
        log.info(
            "embedded %d catalogue items through the sidecar in %.1fs", len(documents), time.perf_counter() - start
        )
        for engine, location in targets.engines.items():
            log.info("waiting for %s at %s", engine, location)
            wait_engine(engine, location, targets.wait_timeout)
            client = open_client(engine, location, targets.weaviate_grpc_port)
            try:
                start = time.perf_counter()
                index_into(engine, client, vectors, targets, documents)
                counts[engine] = count(engine, client, targets.collection)
                log.info("%s: %d documents in %r (%.1fs)", engine, counts[engine], targets.collection,
                         time.perf_counter() - start)  # fmt: skip
            finally:
                if close and hasattr(client, "close"):
                    client.close()
            if counts[engine] != len(documents):
                raise LoaderError(f"{engine} holds {counts[engine]} documents after indexing {len(documents)}")
    finally:
        sidecar.close()
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `load-catalogue` subcommand's flags."""
    parser.description = "Index the bundled demo catalogue into the given engines (embedding through the sidecar)."
    add_sidecar_arguments(parser)
    parser.add_argument("--elasticsearch", metavar="URL", help="Elasticsearch 9 URL, e.g. http://elasticsearch:9200")
    parser.add_argument("--opensearch", metavar="URL", help="OpenSearch 2.x URL, e.g. http://opensearch:9200")
    parser.add_argument(
        "--qdrant", metavar="URL", help="Qdrant URL (http://qdrant:6333), a local-mode directory, or :memory:"
    )
    parser.add_argument("--milvus", metavar="URI", help="Milvus URI (http://milvus:19530) or a Milvus Lite file (x.db)")
    add_engine_arguments(parser)
    parser.add_argument(
        "--collection", default=DEFAULT_COLLECTION, help=f"index/collection name (default: {DEFAULT_COLLECTION})"
    )
    parser.add_argument(
        "--wait-timeout", type=float, default=600.0, help="seconds to wait for each service (default: 600)"
    )
    parser.add_argument("--no-recreate", dest="recreate", action="store_false", help="upsert into existing collections")
    parser.add_argument("--no-milvus-full-text", dest="milvus_full_text", action="store_false",
                        help="no BM25 function in Milvus (servers before 2.5, e.g. the 2.3.5 CI tests)")  # fmt: skip


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The Weaviate and Solr flags, shared with the `web` command."""
    parser.add_argument("--weaviate", metavar="URL", help="Weaviate REST URL, e.g. http://weaviate:8080")
    parser.add_argument("--weaviate-grpc-port", type=int, default=WEAVIATE_GRPC_PORT,
                        help=f"Weaviate's gRPC port on the same host (default: {WEAVIATE_GRPC_PORT})")  # fmt: skip
    parser.add_argument("--solr", metavar="URL", help="Solr base URL, e.g. http://solr:8983/solr")
    parser.add_argument("--weaviate-reranker-url", metavar="URL",
                        help="load-catalogue: the sidecar's HTTP URL as Weaviate reaches it; the collection's "
                             "reranker module (reranker-cohere) then calls it for Weaviate's own rerank= queries")  # fmt: skip


def targets_from_args(args: argparse.Namespace) -> Targets:
    """`Targets` from parsed `load-catalogue` flags."""
    engines = {name: getattr(args, name) for name in ENGINES if getattr(args, name)}
    return Targets(
        sidecar_target(args.sidecar), engines, args.collection, args.wait_timeout, args.recreate,
        args.milvus_full_text, args.weaviate_grpc_port, args.weaviate_reranker_url, client_options(args),
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Entry point of `rerank-sidecar load-catalogue`; returns the exit status."""
    from connectors.errors import ConnectorError

    try:
        counts = load(targets_from_args(args))
    except (LoaderError, ConnectorError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    for engine, n in counts.items():
        print(f"{engine}: {n} documents in {args.collection!r}", flush=True)
    return 0
