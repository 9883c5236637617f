"""Serving the search page: `rerank-sidecar web` (running engines + sidecar) and `rerank-sidecar demo --web`.

    rerank-sidecar web --sidecar 127.0.0.1:50051 --milvus http://127.0.0.1:19530 --port 8000
    rerank-sidecar demo --web --tiny --port 8000      # embedded: sidecar subprocess + Milvus Lite + Qdrant local

`web` builds one connector per engine given, on `--collection` (default: the catalogue the compose loader
indexed); `--text-field`, `--image-field` and `--title-field` point it at an index of your own.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from sidecar.apps.loader import (
    DEFAULT_COLLECTION,
    ENGINES,
    LoaderError,
    add_engine_arguments,
    inline_image,
    open_client,
    wait_engine,
)
from sidecar.apps.sidecar_flags import add_sidecar_arguments, client_options, sidecar_target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `web` subcommand's flags."""
    parser.description = "Serve the search page (first-stage vs reranked results) against running engines."
    add_sidecar_arguments(parser)
    for engine in ("elasticsearch", "opensearch", "qdrant", "milvus"):
        parser.add_argument(f"--{engine}", metavar="URL", help=f"{engine} URL (Qdrant/Milvus also a local path)")
    add_engine_arguments(parser)
    parser.add_argument(
        "--collection", default=DEFAULT_COLLECTION, help=f"index/collection (default: {DEFAULT_COLLECTION})"
    )
    parser.add_argument(
        "--text-field", action="append", help="stored text field(s) sent to the reranker (default: text)"
    )
    parser.add_argument("--image-field", default="image", help="stored image reference field (default: image)")
    parser.add_argument("--title-field", default="title", help="field shown as each hit's title (default: title)")
    add_experiment_argument(parser)
    add_server_arguments(parser)
    parser.add_argument(
        "--wait-timeout", type=float, default=600.0, help="seconds to wait for each service (default: 600)"
    )


def add_experiment_argument(parser: argparse.ArgumentParser, default: str = "off") -> None:
    """--experiment-db: the page's experiment mode (interleaved first stage and reranked, clicks logged)."""
    parser.add_argument(
        "--experiment-db", type=Path, metavar="FILE",
        help="turn on the page's experiment mode, logging served lists and clicks (UBI) into this SQLite file; "
        f"read it with `rerank-sidecar experiment report --store sqlite:FILE` (default: {default})",
    )  # fmt: skip


def web_experiment(path: Path | None) -> Any:
    """The page's experiment over an SQLite log at `path`, or None."""
    if path is None:
        return None
    from sidecar.apps.web.experiment import WebExperiment
    from sidecar.experiments.log import ExperimentLog
    from sidecar.experiments.store import SqliteStore

    return WebExperiment(ExperimentLog(SqliteStore(path)))


def add_server_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--host and --port for the page (the compose service binds 0.0.0.0 inside its container)."""
    parser.add_argument(f"--{prefix}host", default="127.0.0.1", help="address the page binds (default: 127.0.0.1)")
    parser.add_argument(f"--{prefix}port", type=int, default=8000, help="port the page binds (default: 8000)")


def make_connector(engine: str, client: Any, collection: str, mapping: Any, title_field: str | None) -> Any:
    """A connector on an existing collection of `engine`, reading `mapping` (plus the title field, if any)."""
    extra = (title_field,) if title_field else ()
    if engine == "elasticsearch":
        from connectors.elasticsearch import ElasticsearchConnector

        return ElasticsearchConnector(client, collection, mapping, source_fields=extra)
    if engine == "opensearch":
        from connectors.opensearch import OpenSearchConnector

        return OpenSearchConnector(client, collection, mapping, source_fields=extra)
    if engine == "qdrant":
        from connectors.qdrant import QdrantConnector

        return QdrantConnector(client, collection, mapping)
    if engine == "weaviate":
        from connectors.weaviate import WeaviateConnector

        return WeaviateConnector(client, collection, mapping)
    if engine == "solr":
        from connectors.solr import SolrConnector

        return SolrConnector(client, collection, mapping)
    from connectors.milvus import MilvusConnector

    return MilvusConnector(client, collection, mapping)


def stack_backend(args: argparse.Namespace) -> Any:
    """A `WebBackend` on running engines: waits for each (and the sidecar), then opens their collections."""
    from connectors import FieldMapping
    from sidecar.apps.loader import wait_sidecar
    from sidecar.apps.web.app import WebBackend, catalogue_examples

    engines = {name: getattr(args, name) for name in ENGINES if getattr(args, name)}
    if not engines:
        raise LoaderError(f"give at least one of --{' --'.join(ENGINES)}")
    mapping = FieldMapping(
        text_fields=tuple(args.text_field or ["text"]), image_fields=(args.image_field,), image_uri=inline_image
    )
    client = wait_sidecar(sidecar_target(args.sidecar), args.wait_timeout, **client_options(args))
    connectors = {}
    for engine, location in engines.items():
        wait_engine(engine, location, args.wait_timeout)
        connectors[engine] = make_connector(
            engine, open_client(engine, location, args.weaviate_grpc_port), args.collection, mapping, args.title_field
        )
    label = f"{', '.join(engines)} · collection {args.collection!r} · sidecar {args.sidecar}"
    examples = catalogue_examples() if args.collection == DEFAULT_COLLECTION else []
    return WebBackend(client, connectors, args.title_field, label, examples, web_experiment(args.experiment_db))


def serve_app(app: Any, host: str, port: int) -> None:
    """Serve `app` with uvicorn until interrupted."""
    import uvicorn

    print(f"search page on http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def run(args: argparse.Namespace) -> int:
    """Entry point of `rerank-sidecar web`."""
    from connectors.errors import ConnectorError
    from sidecar.apps.web.app import create_app

    try:
        backend = stack_backend(args)
    except (LoaderError, ConnectorError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    serve_app(create_app(backend), args.host, args.port)
    return 0


def run_embedded(args: argparse.Namespace) -> int:
    """`rerank-sidecar demo --web`: a sidecar subprocess, the catalogue in Milvus Lite and Qdrant local, the page."""
    import tempfile

    from connectors.indexing import embed_documents
    from connectors.milvus import index_documents as milvus_index
    from connectors.qdrant import index_documents as qdrant_index
    from sidecar.apps.demo_data import DATA_DIR
    from sidecar.apps.embedded import Sidecar, open_milvus_lite, resolve_models, say
    from sidecar.apps.loader import catalogue_documents
    from sidecar.apps.web.app import WebBackend, catalogue_examples, create_app
    from sidecar.client import RerankerClient

    reranker, embedder = resolve_models(args)
    with contextlib.ExitStack() as stack:
        serve_args = ["--model", reranker, "--embedding-model", embedder, "--media-root", str(DATA_DIR), "--no-http"]
        sidecar = Sidecar([*serve_args, "--device", args.device, "--drain-seconds", "5"], args.verbose)
        say(f"starting the sidecar (reranker {reranker}, embedding {embedder}) ...")
        sidecar.start()
        stack.callback(sidecar.stop)
        client = stack.enter_context(RerankerClient(sidecar.wait_ready(args.startup_timeout), timeout=600))
        documents = catalogue_documents()
        start = time.perf_counter()
        vectors = embed_documents(client, documents, batch_size=6, image_uri=inline_image, progress=False)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rerank-sidecar-web-")))
        options: dict[str, Any] = {"vectors": vectors, "image_uri": inline_image, "progress": False}
        milvus = milvus_index(open_milvus_lite(workdir / "web.db", stack), DEFAULT_COLLECTION, documents, **options)
        from qdrant_client import QdrantClient

        qdrant_client = QdrantClient(":memory:")
        stack.callback(qdrant_client.close)
        qdrant = qdrant_index(qdrant_client, DEFAULT_COLLECTION, documents, **options)
        say(f"indexed {len(documents)} catalogue items into Milvus Lite and Qdrant (local) in "
            f"{time.perf_counter() - start:.1f}s")  # fmt: skip
        label = "embedded: Milvus Lite + Qdrant local mode" + (
            " · TINY RANDOM models (meaningless ranks)" if args.tiny else ""
        )
        experiment = web_experiment(getattr(args, "experiment_db", None) or workdir / "experiment.db")
        backend = WebBackend(
            client, {"milvus": milvus, "qdrant": qdrant}, "title", label, catalogue_examples(), experiment
        )
        serve_app(create_app(backend), args.web_host, args.web_port)
    return 0
