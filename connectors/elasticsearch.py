"""Elasticsearch 9: BM25 (`multi_match`), kNN on a `dense_vector`, hybrid by reciprocal rank fusion.

    from connectors import Document, search_and_rerank
    from connectors.elasticsearch import ElasticsearchConnector, connect, index_documents

    es = connect("https://es.example.com:9200", api_key="...", ca_certs="ca.pem")
    products = ElasticsearchConnector(es, "products", FieldMapping(text_fields=("title", "body"), image_fields="image"))
    # or build the index: products = index_documents(es, "products", docs, embed_client=sidecar)
    hits = search_and_rerank(products, "red shoes", mode="hybrid", filter={"term": {"color": "red"}},
                             rerank_client=sidecar)

Modes: "bm25" is a `multi_match` over the mapped text fields; "dense" a top-level `knn` search;
"hybrid" runs both in one `_msearch` and fuses them in the client by RRF (k=60, see
`connectors.fusion`), because the `rrf` retriever needs the rank-rrf module and an Enterprise
(or trial) licence. `fusion="auto"` tries the server's `rrf` retriever first and falls back to the
client for good when the server refuses it. Filters are query DSL clauses (a dict or a list),
applied to the BM25 query (`bool.filter`) and to kNN (`knn.filter`, so filtering happens during
the vector search, not after it). Only the mapped fields come back (`_source` filtering).

The client is elasticsearch-py 9, which talks to Elasticsearch 9 only: it sends
`compatible-with=9` and checks the `X-Elastic-Product` header of every answer. Another server
(Elasticsearch 8, OpenSearch) raises `EngineVersionError`. Requires
`pip install "elasticsearch>=9,<10"` (the `connectors` extra).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from connectors.base import Document, FieldMapping, Hit, SearchMode
from connectors.engine_errors import EngineUnavailableError, EngineVersionError, error_reason, http_error, translated
from connectors.errors import EngineError
from connectors.fusion import RRF_K, rrf
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
    from elasticsearch import (
        ApiError,
        ConnectionTimeout,
        Elasticsearch,
        SSLError,
        TransportError,
        UnsupportedProductError,
    )
    from elasticsearch import ConnectionError as ClientConnectionError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "connectors.elasticsearch needs elasticsearch-py 9: pip install 'rerank-sidecar[connectors]'"
    ) from exc

log = logging.getLogger("connectors")
ENGINE = "elasticsearch"


def connect(
    url: str | Sequence[str],
    *,
    basic_auth: tuple[str, str] | None = None,
    api_key: str | tuple[str, str] | None = None,
    verify_certs: bool = True,
    ca_certs: str | None = None,
    request_timeout: float = 30.0,
    **options: Any,
) -> Elasticsearch:
    """An `Elasticsearch` client for `url` (or several node URLs).

    Args:
        basic_auth: (user, password).
        api_key: an encoded API key, or (id, api_key).
        verify_certs: check the server's TLS certificate (https only).
        ca_certs: CA bundle that signed the server's certificate (https only), e.g. the
            `http_ca.crt` a secured Elasticsearch generates.
        request_timeout: seconds per request.
        options: anything else `Elasticsearch(...)` accepts (cloud_id, ssl_assert_fingerprint, ...).
    """
    kwargs: dict[str, Any] = {"request_timeout": request_timeout, **options}
    if basic_auth is not None:
        kwargs["basic_auth"] = basic_auth
    if api_key is not None:
        kwargs["api_key"] = api_key
    if str(url).startswith("https") or ca_certs is not None:
        kwargs.update(verify_certs=verify_certs, ca_certs=ca_certs)
    return Elasticsearch(url, **kwargs)


def urls(client: Elasticsearch) -> str:
    """The node URLs a client talks to, for error messages."""
    try:
        return ", ".join(node.base_url for node in client.transport.node_pool.all()) or "?"
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def translate(client: Elasticsearch, exc: BaseException, operation: str, index: str) -> EngineError | None:
    """The typed `EngineError` for an elasticsearch-py exception (None: not one of its errors)."""
    url = urls(client)
    if isinstance(exc, UnsupportedProductError):
        return EngineVersionError(ENGINE, operation, not_elasticsearch(client, url))
    if isinstance(exc, ApiError):
        return http_error(ENGINE, operation, url, index, exc.meta.status, exc.body)
    if isinstance(exc, ConnectionTimeout):
        return EngineUnavailableError(ENGINE, operation, url, f"no answer within the request timeout ({exc.message})")
    if isinstance(exc, SSLError):
        return EngineUnavailableError(
            ENGINE, operation, url, f"TLS failed, check verify_certs/ca_certs ({exc.message})"
        )
    if isinstance(exc, ClientConnectionError):
        return EngineUnavailableError(ENGINE, operation, url, str(exc.message))
    if isinstance(exc, TransportError):  # serialization, sniffing
        return EngineError(ENGINE, operation, f"{type(exc).__name__}: {exc.message}")
    return None


def not_elasticsearch(client: Elasticsearch, url: str) -> str:
    """Why the product check failed, naming the server when it says what it is."""
    advice = "elasticsearch-py 9 talks to Elasticsearch 9 only"
    try:
        info = client.transport.perform_request("GET", "/", headers={"accept": "application/json"}).body
        version = info.get("version", {})
        if version.get("distribution") == "opensearch":
            return (
                f"the server at {url} is OpenSearch {version.get('number')}, not Elasticsearch: "
                f"use connectors.opensearch.OpenSearchConnector ({advice})"
            )
        return f"the server at {url} (version {version.get('number', '?')}) is not Elasticsearch 9 ({advice})"
    except Exception:  # noqa: BLE001 - only for a message
        return f"the server at {url} did not identify itself as Elasticsearch ({advice})"


def make_client(client: Elasticsearch | str, **connection: Any) -> Elasticsearch:
    """`client` itself, or `connect(client, **connection)` when it is a URL."""
    if isinstance(client, str):
        return connect(client, **{k: v for k, v in connection.items() if v is not None})
    if any(v is not None for v in connection.values()):
        raise ValueError(
            "credentials and TLS options go with a URL; configure the Elasticsearch client you pass instead"
        )
    return client


class ElasticsearchConnector(QueryDslConnector):
    """First-stage search over one Elasticsearch 9 index (or alias, or pattern).

    Args:
        client: an `elasticsearch.Elasticsearch` client, or a URL (then `basic_auth`, `api_key`,
            `verify_certs`, `ca_certs` configure the connection, as in `connect`).
        index: index name, alias or pattern.
        mapping: where text, images and the vector live; the vector defaults to the index's only
            `dense_vector` field. "bm25" searches the mapped text fields that are `text` fields.
        fusion: hybrid fusion: "client" (RRF in the client, default) or "auto" (the server's
            `rrf` retriever when it has one, else the client).
        rrf_k: RRF rank constant.
        num_candidates: kNN candidates per shard = max(k, num_candidates * k), at most 10,000.
        bm25_fields: fields for `multi_match`, boosts allowed ("title^2"); default: the mapped
            text fields of type text.
        source_fields: stored fields to return besides the mapped ones.

    Raises:
        EngineUnavailableError, EngineAuthError, EngineVersionError, IndexNotFoundError: see
            `connectors.engine_errors`.
        FieldMappingError: the mapping names a field or vector the index lacks.
    """

    name = ENGINE
    vector_type = "dense_vector"
    dims_key = "dims"

    def __init__(
        self,
        client: Elasticsearch | str,
        index: str,
        mapping: FieldMapping | None = None,
        *,
        fusion: Literal["client", "auto"] = "client",
        rrf_k: int = RRF_K,
        num_candidates: float = 1.5,
        bm25_fields: Sequence[str] | None = None,
        source_fields: Sequence[str] = (),
        basic_auth: tuple[str, str] | None = None,
        api_key: str | tuple[str, str] | None = None,
        verify_certs: bool | None = None,
        ca_certs: str | None = None,
    ) -> None:
        if fusion not in ("client", "auto"):
            raise ValueError(f"fusion must be 'client' or 'auto'; got {fusion!r}")
        if rrf_k < 1 or num_candidates < 1:
            raise ValueError("rrf_k and num_candidates must be at least 1")
        self.client = make_client(
            client, basic_auth=basic_auth, api_key=api_key, verify_certs=verify_certs, ca_certs=ca_certs
        )
        self.collection = self.index = index
        self.mapping = mapping or FieldMapping()
        self.fusion, self.rrf_k, self.num_candidates = fusion, rrf_k, num_candidates
        self._server_rrf: bool | None = None if fusion == "auto" else False
        with self._call("get_mapping"):
            response = self.client.indices.get_mapping(index=index)
        self.configure(IndexFields.read(response.body, self.vector_type), bm25_fields, source_fields)

    def _call(self, operation: str) -> Any:
        return translated(lambda exc: translate(self.client, exc, f"{operation} on {self.index!r}", self.index))

    def knn(self, vector: Sequence[float], k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        """A `knn` section: top k by the vector's similarity, with the filters applied during the search."""
        candidates = min(MAX_WINDOW, max(k, int(k * self.num_candidates)))
        section = {
            "field": self.dense_name,
            "query_vector": as_floats(vector),
            "k": k,
            "num_candidates": candidates,
        }
        flt = one_clause(clauses)
        return {**section, "filter": flt} if flt else section

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
        common: dict[str, Any] = {"size": size, "_source": self.source_fields, "track_total_hits": False}
        with self._call("search"):
            if mode == "bm25":
                response = self.client.search(
                    index=self.index, body={"query": self.bm25_query(query_text or "", clauses), **common}
                )
            elif mode == "dense":
                response = self.client.search(
                    index=self.index, body={"knn": self.knn(as_floats(query_vector), size, clauses), **common}
                )
            else:
                return self._hybrid(query_text or "", as_floats(query_vector), size, clauses, common)
        return self.hits(response["hits"]["hits"])

    def _hybrid(
        self, text: str, vector: Sequence[float], size: int, clauses: list[dict[str, Any]], common: dict[str, Any]
    ) -> list[Hit]:
        lexical, knn = self.bm25_query(text, clauses), self.knn(vector, size, clauses)
        if self._server_rrf is not False:
            standard = {"query": lexical}
            body = {
                "retriever": {"rrf": {"retrievers": [{"standard": standard}, {"knn": knn}], "rank_constant": self.rrf_k, "rank_window_size": size}},
                **common,
            }  # fmt: skip
            try:
                response = self.client.search(index=self.index, body=body)
                self._server_rrf = True
                return self.hits(response["hits"]["hits"])
            except ApiError as exc:
                if self._server_rrf or not _rrf_refused(exc):
                    raise
                log.info(
                    "%s: the server has no rrf retriever (%s); fusing hybrid results in the client",
                    self.index,
                    exc.message,
                )
                self._server_rrf = False
        searches = [{"index": self.index}, {"query": lexical, **common}, {"index": self.index}, {"knn": knn, **common}]
        responses = self.client.msearch(searches=searches)["responses"]
        for item, part in zip(responses, ("bm25", "knn")):
            if "error" in item:
                url = urls(self.client)
                raise http_error(
                    ENGINE, f"hybrid search ({part}) on {self.index!r}", url, self.index, item.get("status"), item
                )
        ranked = [[((h["_index"], h["_id"]), h) for h in item["hits"]["hits"]] for item in responses]
        fused = rrf(ranked, k=self.rrf_k, limit=size)
        return self.hits([f.item for f in fused], [f.score for f in fused])


def _rrf_refused(exc: ApiError) -> bool:
    """Whether the server refused the rrf retriever itself (unknown, or not licensed)."""
    kind, reason = error_reason(exc.body)
    text = f"{kind} {reason}".lower()
    return (exc.meta.status == 400 and "rrf" in text) or (exc.meta.status == 403 and "licen" in text)


def index_documents(
    client: Elasticsearch | str,
    index: str,
    documents: Sequence[Document],
    *,
    embed_client: Any = None,
    vectors: Sequence[Sequence[float]] | None = None,
    similarity: str = "cosine",
    index_options: dict[str, Any] | None = None,
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
) -> ElasticsearchConnector:
    """Create (or reuse) an index holding `documents` and return a connector for it.

    Mapping: "doc_id" and "image" keyword, "text" text (`analyzer`, default standard), typed
    extra fields (strings as keyword), and "dense": `dense_vector` with `dims`, `similarity`
    (cosine) and `index: true` (HNSW; `index_options` overrides Elasticsearch's default, which
    quantises to int8, e.g. {"type": "hnsw"} for float vectors) when vectors are given or
    embedded. Documents are indexed with their id as `_id`, so indexing again overwrites them.

    Args:
        client: an Elasticsearch client, or a URL (see `connect` for credentials and TLS).
        embed_client: sidecar client whose Embed RPC gives the dense vectors (text and images
            together), in batches of `embed_batch_size`, with a progress bar.
        vectors: precomputed dense vectors instead (one per document).
        settings: index settings (e.g. {"number_of_replicas": 0}).
        recreate: delete an existing index first; otherwise documents are upserted into it.

    Raises:
        ValueError: bad vectors or extra fields, or an existing index that cannot take the vectors.
        EngineError (and subclasses) / SidecarCallError: Elasticsearch or the sidecar failed.
    """
    es = make_client(client)
    dense = document_vectors(
        documents, vectors, embed_client, batch_size=embed_batch_size, dimensions=dimensions,
        instruction=embed_instruction, image_uri=image_uri, timeout=timeout, progress=progress,
    )  # fmt: skip

    def create_body(properties: dict[str, Any], size: int | None) -> dict[str, Any]:
        if size is not None:
            vector = {"type": "dense_vector", "dims": size, "index": True, "similarity": similarity}
            properties = {
                **properties,
                "dense": {**vector, **({"index_options": index_options} if index_options else {})},
            }
        return {"mappings": {"properties": properties}, **({"settings": settings} if settings else {})}

    index_corpus(
        es, ENGINE, index, documents, dense, create_body=create_body, vector_type="dense_vector", dims_key="dims",
        analyzer=analyzer, recreate=recreate, batch_size=batch_size, progress=progress,
        translate=lambda exc, operation: translate(es, exc, operation, index),
    )  # fmt: skip
    mapping = FieldMapping(
        id_field="doc_id", text_fields=("text",), image_fields=("image",), image_uri=image_uri,
        dense_vector="dense" if dense is not None else None,
    )  # fmt: skip
    extras = list(dict.fromkeys(name for doc in documents for name in doc.fields))
    return ElasticsearchConnector(es, index, mapping, source_fields=extras)
