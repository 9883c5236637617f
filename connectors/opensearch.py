"""OpenSearch 2.x: BM25 (`multi_match`), kNN on a `knn_vector`, hybrid through a normalization search pipeline.

    from connectors import Document, search_and_rerank
    from connectors.opensearch import OpenSearchConnector, connect, index_documents

    client = connect("https://search.example.com:9200", basic_auth=("user", "secret"), ca_certs="root-ca.pem")
    products = OpenSearchConnector(client, "products", FieldMapping(text_fields=("title", "body"), image_fields="image"))
    # or build the index: products = index_documents(client, "products", docs, embed_client=sidecar)
    hits = search_and_rerank(products, "red shoes", mode="hybrid", filter={"term": {"color": "red"}},
                             rerank_client=sidecar)

Modes: "bm25" is a `multi_match` over the mapped text fields; "dense" a `knn` query (the filter goes
inside it, so lucene and faiss indices filter during the search); "hybrid" is the neural-search
`hybrid` query [bm25, knn] run through a search pipeline whose `normalization-processor`
rescales each sub-query's scores (min_max by default) and combines them (arithmetic_mean with
weights, default 0.5/0.5). The pipeline is created on the first hybrid search when missing or
different (its default name encodes its settings, so connectors with other settings never
overwrite it); with `create_pipeline=False` a pipeline you manage is used as it is. Hybrid needs
OpenSearch >= 2.10 with the neural-search plugin. Only the mapped fields come back (`_source`).
Requires `pip install "opensearch-py>=2.8"` (the `connectors` extra).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import quote

from connectors.base import Document, FieldMapping, Hit, SearchMode
from connectors.engine_errors import EngineUnavailableError, EngineVersionError, http_error, translated
from connectors.errors import EngineError
from connectors.indexing import document_vectors
from connectors.querydsl import (
    MAX_WINDOW,
    IndexFields,
    QueryDslConnector,
    as_floats,
    filter_clauses,
    index_corpus,
    one_clause,
)

try:
    from opensearchpy import OpenSearch
    from opensearchpy.exceptions import (
        AuthorizationException,
        ConnectionTimeout,
        NotFoundError,
        SSLError,
        TransportError,
    )
    from opensearchpy.exceptions import (
        ConnectionError as ClientConnectionError,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("connectors.opensearch needs opensearch-py: pip install 'rerank-sidecar[connectors]'") from exc

ENGINE = "opensearch"
HYBRID_SINCE = (2, 10)


def connect(
    url: str | Sequence[str],
    *,
    basic_auth: tuple[str, str] | None = None,
    verify_certs: bool = True,
    ca_certs: str | None = None,
    request_timeout: float = 30.0,
    **options: Any,
) -> OpenSearch:
    """An `OpenSearch` client for `url` (or several node URLs).

    Args:
        basic_auth: (user, password) for the security plugin's internal users or LDAP.
        verify_certs: check the server's TLS certificate (https only).
        ca_certs: CA bundle that signed the server's certificate, e.g. the demo `root-ca.pem`.
        request_timeout: seconds per request.
        options: anything else `OpenSearch(...)` accepts (e.g. `http_auth=AWSV4SignerAuth(...)`
            with `connection_class=RequestsHttpConnection` for Amazon OpenSearch Service).
    """
    hosts = [url] if isinstance(url, str) else list(url)
    kwargs: dict[str, Any] = {"timeout": request_timeout, **options}
    if basic_auth is not None:
        kwargs["http_auth"] = tuple(basic_auth)
    if any(str(h).startswith("https") for h in hosts):
        kwargs.update(verify_certs=verify_certs, ca_certs=ca_certs, ssl_show_warn=verify_certs)
    return OpenSearch(hosts=hosts, **kwargs)


def urls(client: OpenSearch) -> str:
    """The node URLs a client talks to, for error messages."""
    try:
        return ", ".join(c.host for c in client.transport.connection_pool.connections) or "?"
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def translate(client: OpenSearch, exc: BaseException, operation: str, index: str) -> EngineError | None:
    """The typed `EngineError` for an opensearch-py exception (None: not one of its errors)."""
    url = urls(client)
    if isinstance(exc, ConnectionTimeout):
        return EngineUnavailableError(ENGINE, operation, url, f"no answer within the request timeout ({exc.error})")
    if isinstance(exc, SSLError):
        return EngineUnavailableError(ENGINE, operation, url, f"TLS failed, check verify_certs/ca_certs ({exc.error})")
    if isinstance(exc, ClientConnectionError):
        return EngineUnavailableError(ENGINE, operation, url, str(exc.error))
    if isinstance(exc, TransportError):
        status = exc.status_code if isinstance(exc.status_code, int) else None
        return http_error(ENGINE, operation, url, index, status, exc.info if exc.info else exc.error)
    return None


def make_client(client: OpenSearch | str, **connection: Any) -> OpenSearch:
    """`client` itself, or `connect(client, **connection)` when it is a URL."""
    if isinstance(client, str):
        return connect(client, **{k: v for k, v in connection.items() if v is not None})
    if any(v is not None for v in connection.values()):
        raise ValueError("credentials and TLS options go with a URL; configure the OpenSearch client you pass instead")
    return client


class OpenSearchConnector(QueryDslConnector):
    """First-stage search over one OpenSearch index (or alias, or pattern).

    Args:
        client: an `opensearchpy.OpenSearch` client, or a URL (then `basic_auth`, `verify_certs`
            and `ca_certs` configure the connection, as in `connect`).
        index: index name, alias or pattern.
        mapping: where text, images and the vector live; the vector defaults to the index's only
            `knn_vector` field. "bm25" searches the mapped text fields that are `text` fields.
        search_pipeline: name of the hybrid search pipeline (default: one named after its settings).
        create_pipeline: create or update that pipeline to match these settings (needs the
            cluster privilege to manage search pipelines); False uses it as it exists.
        normalization: "min_max" or "l2"; combination: "arithmetic_mean", "geometric_mean" or
            "harmonic_mean"; weights: (bm25, dense), summing to 1.
        bm25_fields: fields for `multi_match`, boosts allowed ("title^2"); default: the mapped
            text fields of type text.
        source_fields: stored fields to return besides the mapped ones.

    Raises:
        EngineUnavailableError, EngineAuthError, EngineVersionError (the server is not
            OpenSearch), IndexNotFoundError: see `connectors.engine_errors`.
        FieldMappingError: the mapping names a field or vector the index lacks.
    """

    name = ENGINE
    vector_type = "knn_vector"
    dims_key = "dimension"

    def __init__(
        self,
        client: OpenSearch | str,
        index: str,
        mapping: FieldMapping | None = None,
        *,
        search_pipeline: str | None = None,
        create_pipeline: bool = True,
        normalization: Literal["min_max", "l2"] = "min_max",
        combination: Literal["arithmetic_mean", "geometric_mean", "harmonic_mean"] = "arithmetic_mean",
        weights: tuple[float, float] = (0.5, 0.5),
        bm25_fields: Sequence[str] | None = None,
        source_fields: Sequence[str] = (),
        basic_auth: tuple[str, str] | None = None,
        verify_certs: bool | None = None,
        ca_certs: str | None = None,
    ) -> None:
        if len(weights) != 2 or min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"weights are (bm25, dense), non-negative and summing to 1; got {weights}")
        self.client = make_client(client, basic_auth=basic_auth, verify_certs=verify_certs, ca_certs=ca_certs)
        self.collection = self.index = index
        self.mapping = mapping or FieldMapping()
        self.pipeline_body = {
            "description": "rerank-sidecar hybrid: normalise BM25 and kNN scores, then combine them",
            "phase_results_processors": [
                {"normalization-processor": {
                    "normalization": {"technique": normalization},
                    "combination": {"technique": combination, "parameters": {"weights": [float(w) for w in weights]}},
                }}
            ],
        }  # fmt: skip
        self.search_pipeline = (
            search_pipeline or f"rerank-sidecar-hybrid-{normalization}-{combination}-{weights[0]:g}-{weights[1]:g}"
        )
        self.create_pipeline, self._pipeline_ready, self._lock = create_pipeline, False, threading.Lock()
        self.server_version = self._check_server()
        with self._call("get_mapping"):
            response = self.client.indices.get_mapping(index=index)
        fields = IndexFields.read(response, self.vector_type)
        self.configure(fields, bm25_fields, source_fields)
        method = fields.vectors.get(self.dense_name or "", {}).get("method") or {}
        self._filter_inside_knn = method.get("engine") != "nmslib"  # nmslib cannot filter during the search

    def _call(self, operation: str) -> Any:
        return translated(lambda exc: translate(self.client, exc, f"{operation} on {self.index!r}", self.index))

    def _check_server(self) -> tuple[int, ...] | None:
        """The server's version; EngineVersionError when it is not OpenSearch (None: not allowed to ask)."""
        try:
            with self._call("info"):
                info = self.client.info()
        except EngineError as exc:
            if isinstance(exc.__cause__, AuthorizationException):
                return None  # a user without cluster:monitor/main may still search
            raise
        version = info.get("version", {})
        number = str(version.get("number", "?"))
        if version.get("distribution") != "opensearch":
            product = "Elasticsearch" if "You Know, for Search" in str(info.get("tagline")) else "a server"
            raise EngineVersionError(
                ENGINE, f"connect to {urls(self.client)}",
                f"the server is {product} {number}, not OpenSearch: use connectors.elasticsearch.ElasticsearchConnector",
            )  # fmt: skip
        return tuple(int(p) for p in number.split("-")[0].split(".") if p.isdigit())

    @property
    def supported_modes(self) -> frozenset[SearchMode]:
        modes = super().supported_modes
        if self.server_version is not None and self.server_version < HYBRID_SINCE:
            return modes - {"hybrid"}
        return modes

    def knn_query(self, vector: Sequence[float], k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        """A `knn` query for the top k, with the filters inside it (or around it for nmslib)."""
        spec: dict[str, Any] = {"vector": as_floats(vector), "k": k}
        flt = one_clause(clauses)
        if flt and self._filter_inside_knn:
            spec["filter"] = flt
        query = {"knn": {self.dense_name: spec}}
        return {"bool": {"must": [query], "filter": clauses}} if flt and not self._filter_inside_knn else query

    def search(
        self,
        query_text: str | None,
        query_vector: Sequence[float] | None,
        top_k: int,
        mode: SearchMode,
        filter: dict[str, Any] | list[dict[str, Any]] | None = None,
    ) -> list[Hit]:
        """BM25, kNN or hybrid search; `filter` is a query DSL clause such as {"term": {"color": "red"}}.

        `top_k` above 10,000 (the engine's result window and kNN limit) returns 10,000 hits.
        """
        self.check_request(query_text, query_vector, top_k, mode)
        clauses = filter_clauses(filter)
        size = min(top_k, MAX_WINDOW)
        params: dict[str, Any] = {}
        if mode == "bm25":
            query = self.bm25_query(query_text or "", clauses)
        elif mode == "dense":
            query = self.knn_query(as_floats(query_vector), size, clauses)
        else:
            self.ensure_pipeline()
            lexical = self.bm25_query(query_text or "", clauses)
            query = {"hybrid": {"queries": [lexical, self.knn_query(as_floats(query_vector), size, clauses)]}}
            params["search_pipeline"] = self.search_pipeline
        body = {"size": size, "query": query, "_source": self.source_fields}
        with self._call("search"):
            response = self.client.search(index=self.index, body=body, params=params)
        return self.hits(response["hits"]["hits"])

    def ensure_pipeline(self) -> None:
        """Create or update the hybrid search pipeline once (or check that a managed one exists)."""
        if self._pipeline_ready:
            return
        path = f"/_search/pipeline/{quote(self.search_pipeline, safe='')}"
        with self._lock, self._call(f"search pipeline {self.search_pipeline!r}"):
            if self._pipeline_ready:  # another thread did it while this one waited
                return
            try:
                current = self.client.transport.perform_request("GET", path).get(self.search_pipeline)
            except NotFoundError:
                current = None
            if self.create_pipeline and current != self.pipeline_body:
                self.client.transport.perform_request("PUT", path, body=self.pipeline_body)
            elif current is None:
                raise EngineError(
                    ENGINE,
                    f"hybrid search on {self.index!r}",
                    f"search pipeline {self.search_pipeline!r} does not exist (create_pipeline=False)",
                )
            self._pipeline_ready = True


def index_documents(
    client: OpenSearch | str,
    index: str,
    documents: Sequence[Document],
    *,
    embed_client: Any = None,
    vectors: Sequence[Sequence[float]] | None = None,
    space_type: str = "cosinesimil",
    engine: str = "lucene",
    method_parameters: dict[str, Any] | None = None,
    analyzer: str | None = None,
    settings: dict[str, Any] | None = None,
    recreate: bool = False,
    batch_size: int = 200,
    embed_batch_size: int = 16,
    dimensions: int = 0,
    embed_instruction: str | None = None,
    image_uri: Callable[[str], str] | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> OpenSearchConnector:
    """Create (or reuse) an index holding `documents` and return a connector for it.

    Mapping: "doc_id" and "image" keyword, "text" text (`analyzer`, default standard), typed
    extra fields (strings as keyword), and "dense": `knn_vector` with `dimension` and an HNSW
    `method` (`engine` lucene, the one that needs no native library; `space_type` cosinesimil),
    with `index.knn: true`, when vectors are given or embedded. Documents are indexed with their
    id as `_id`, so indexing again overwrites them.

    Args:
        client: an OpenSearch client, or a URL (see `connect` for credentials and TLS).
        embed_client: sidecar client whose Embed RPC gives the dense vectors (text and images
            together), in batches of `embed_batch_size`, with a progress bar.
        vectors: precomputed dense vectors instead (one per document).
        method_parameters: HNSW parameters (e.g. {"m": 16, "ef_construction": 128}).
        settings: index-level settings (e.g. {"number_of_replicas": 0}).
        recreate: delete an existing index first; otherwise documents are upserted into it.

    Raises:
        ValueError: bad vectors or extra fields, or an existing index that cannot take the vectors.
        EngineError (and subclasses) / SidecarCallError: OpenSearch or the sidecar failed.
    """
    os_client = make_client(client)
    dense = document_vectors(
        documents, vectors, embed_client, batch_size=embed_batch_size, dimensions=dimensions,
        instruction=embed_instruction, image_uri=image_uri, timeout=timeout, progress=progress,
    )  # fmt: skip

    def create_body(properties: dict[str, Any], size: int | None) -> dict[str, Any]:
        if size is not None:
            method = {"name": "hnsw", "engine": engine, "space_type": space_type, "parameters": method_parameters or {}}
            properties = {**properties, "dense": {"type": "knn_vector", "dimension": size, "method": method}}
        index_settings = {**({"knn": True} if size is not None else {}), **(settings or {})}
        return {"mappings": {"properties": properties}, "settings": {"index": index_settings}}

    index_corpus(
        os_client, ENGINE, index, documents, dense, create_body=create_body, vector_type="knn_vector",
        dims_key="dimension", analyzer=analyzer, recreate=recreate, batch_size=batch_size, progress=progress,
        translate=lambda exc, operation: translate(os_client, exc, operation, index),
    )  # fmt: skip
    mapping = FieldMapping(
        id_field="doc_id", text_fields=("text",), image_fields=("image",), image_uri=image_uri,
        dense_vector="dense" if dense is not None else None,
    )  # fmt: skip
    extras = list(dict.fromkeys(name for doc in documents for name in doc.fields))
    return OpenSearchConnector(os_client, index, mapping, source_fields=extras)
