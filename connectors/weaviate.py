"""Weaviate: dense (`near_vector`), BM25 on text properties, hybrid by Weaviate's own fusion (`alpha`).

    import weaviate
    from weaviate.classes.query import Filter
    from connectors import Document, search_and_rerank
    from connectors.weaviate import WeaviateConnector, index_documents

    client = weaviate.connect_to_local()                 # or connect_to_custom / connect_to_weaviate_cloud
    products = index_documents(client, "Products", docs, embed_client=sidecar)
    # or an existing collection: WeaviateConnector(client, "Products", FieldMapping(text_fields=("title", "body")))
    hits = search_and_rerank(products, "red shoes", mode="hybrid", filter=Filter.by_property("color").equal("red"),
                             rerank_client=sidecar)

Modes: "dense" is `near_vector` on the collection's self-provided vector (a named vector, or the
collection's only one); "bm25" searches the mapped text properties; "hybrid" is Weaviate's
`hybrid` query (relative-score fusion by default, `alpha` weights the vector side; each side contributes at least the server's
QUERY_HYBRID_MAXIMUM_RESULTS candidates, 100 by default, so a hybrid top-k may hold a document
outside both top-k lists). Filters are
`weaviate.classes.query.Filter` objects, applied inside each search. Weaviate capitalises
collection names ("products" is the collection "Products").

Requires `pip install weaviate-client` (v4, the `connectors` extra).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from connectors.base import Connector, Document, FieldMapping, Hit, SearchMode, modes_for
from connectors.engine_errors import EngineAuthError, EngineUnavailableError, IndexNotFoundError, translated
from connectors.errors import EngineError, FieldMappingError
from connectors.indexing import Progress, batches, document_vectors, extra_field_types

try:
    import weaviate
    from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
    from weaviate.classes.query import HybridFusion, MetadataQuery
    from weaviate.exceptions import (
        UnexpectedStatusCodeError,
        WeaviateBaseError,
        WeaviateConnectionError,
        WeaviateGRPCUnavailableError,
        WeaviateStartUpError,
        WeaviateTimeoutError,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("connectors.weaviate needs weaviate-client v4: pip install 'rerank-sidecar[connectors]'") from exc

ENGINE = "weaviate"
TEXT_TYPES = frozenset({"text", "text[]"})
FUSIONS = {"relative_score": HybridFusion.RELATIVE_SCORE, "ranked": HybridFusion.RANKED}
DEFAULT_VECTOR = "default"  # Weaviate's name for a collection's unnamed vector


def connect(
    url: str, *, grpc_port: int = 50051, api_key: str | None = None, headers: dict[str, str] | None = None
) -> weaviate.WeaviateClient:
    """A connected `WeaviateClient` for an http(s) URL (REST) and its gRPC port on the same host."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    auth = weaviate.classes.init.Auth.api_key(api_key) if api_key else None
    return weaviate.connect_to_custom(
        http_host=parts.hostname or "localhost", http_port=parts.port or (443 if secure else 80), http_secure=secure,
        grpc_host=parts.hostname or "localhost", grpc_port=grpc_port, grpc_secure=secure,
        auth_credentials=auth, headers=headers,
    )  # fmt: skip


def sidecar_reranker(sidecar_url: str) -> Any:
    """Weaviate's `reranker-cohere` module pointed at the sidecar's HTTP face (its Cohere route `/v1/rerank`).

    Give it as `reranker_config` when creating a collection; the Weaviate server needs
    `ENABLE_MODULES=reranker-cohere` and a key, either `COHERE_APIKEY` in its environment or the
    `X-Cohere-Api-Key` header on the client (the sidecar's API key, or any string when it has none).
    """
    return Configure.Reranker.custom("reranker-cohere", module_config={"baseURL": sidecar_url.rstrip("/")})


def client_url(client: Any) -> str:
    """The REST URL a client talks to, for error messages."""
    try:
        return str(client._connection.url)
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def translate(exc: BaseException, operation: str, collection: str, url: str) -> EngineError | None:
    """The typed `EngineError` for a weaviate-client exception (None: not one of its errors)."""
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, (WeaviateStartUpError, WeaviateConnectionError, WeaviateGRPCUnavailableError)):
        return EngineUnavailableError(ENGINE, operation, url, message.strip())
    if isinstance(exc, WeaviateTimeoutError):
        return EngineUnavailableError(ENGINE, operation, url, f"no answer within the timeout ({message.strip()})")
    if isinstance(exc, UnexpectedStatusCodeError):
        if exc.status_code in (401, 403):
            return EngineAuthError(ENGINE, operation, url, exc.status_code, message.strip())
        if exc.status_code == 404:
            return IndexNotFoundError(ENGINE, operation, collection, url, message.strip())
    if isinstance(exc, WeaviateBaseError):
        if "could not find class" in message:
            return IndexNotFoundError(ENGINE, operation, collection, url, message.strip())
        return EngineError(ENGINE, operation, f"{type(exc).__name__}: {message.strip()}")
    return None


class WeaviateConnector(Connector):
    """First-stage search over one Weaviate collection.

    Args:
        client: a connected `weaviate.WeaviateClient`, or an http(s) URL (then `grpc_port`,
            `api_key` and `headers` configure the connection, as in `connect`).
        collection: collection name (Weaviate capitalises the first letter).
        mapping: where text and images live; `dense_vector` names a named vector (default: the
            collection's only vector). "bm25" searches the mapped text properties.
        alpha: hybrid weight of the vector search (0 = BM25 only, 1 = vector only).
        fusion: hybrid fusion, "relative_score" (Weaviate's default) or "ranked" (RRF).

    Raises:
        EngineUnavailableError, EngineAuthError, IndexNotFoundError: see `connectors.engine_errors`.
        FieldMappingError: the mapping names a property or vector the collection lacks.
    """

    name = ENGINE

    def __init__(
        self,
        client: weaviate.WeaviateClient | str,
        collection: str,
        mapping: FieldMapping | None = None,
        *,
        alpha: float = 0.5,
        fusion: Literal["relative_score", "ranked"] = "relative_score",
        grpc_port: int = 50051,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1; got {alpha}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be 'relative_score' or 'ranked'; got {fusion!r}")
        self.collection, self.mapping = collection, mapping or FieldMapping()
        self.alpha, self.fusion = alpha, FUSIONS[fusion]
        self.url = client if isinstance(client, str) else client_url(client)
        with self._call("connect"):
            self.client = (
                connect(client, grpc_port=grpc_port, api_key=api_key, headers=headers)
                if isinstance(client, str)
                else client
            )
        with self._call("get config"):
            self.handle = self.client.collections.get(collection)
            config = self.handle.config.get()
        self._configure(config)
        self._size = self._stored_vector_size()

    def _call(self, operation: str) -> Any:
        return translated(lambda exc: translate(exc, f"{operation} on {self.collection!r}", self.collection, self.url))

    def _configure(self, config: Any) -> None:
        properties = {p.name: str(p.data_type.value) for p in config.properties}
        searchable = {p.name for p in config.properties if p.index_searchable is not False}
        vectors = dict(config.vector_config or {})
        if not vectors and config.vector_index_config is not None:
            vectors = {DEFAULT_VECTOR: config}  # a collection with one unnamed vector
        self.dense_name = self.pick_vector("named vector", list(vectors), self.mapping.dense_vector)
        index_config = vectors[self.dense_name].vector_index_config if self.dense_name else None
        self.distance = index_config.distance_metric if index_config is not None else None
        missing: list[str] = []
        if self.mapping.sparse_vector is not None:
            if self.mapping.sparse_vector not in properties:
                missing.append(f"sparse vector {self.mapping.sparse_vector!r}")
            else:
                raise ValueError("weaviate runs 'bm25' on text properties; FieldMapping.sparse_vector is not used")
        missing += [f"field {n!r}" for n in self.mapping.stored_fields() if n not in properties]
        if missing:
            available = [*(f"field {n!r}" for n in sorted(properties)), *(f"vector {v!r}" for v in vectors)]
            raise FieldMappingError(ENGINE, self.collection, missing, available)
        candidates = self.mapping.template_fields() or list(self.mapping.text_fields)
        self.bm25_fields = [n for n in candidates if properties.get(n) in TEXT_TYPES and n in searchable]
        self.return_properties = list(properties)

    def _stored_vector_size(self) -> int | None:
        """Weaviate's schema has no vector dimension: read it from one stored object (None when empty)."""
        if self.dense_name is None:
            return None
        with self._call("fetch a vector"):
            objects = self.handle.query.fetch_objects(limit=1, include_vector=True, return_properties=[]).objects
        vector = objects[0].vector.get(self.dense_name) if objects else None
        return len(vector) if vector else None

    @property
    def supported_modes(self) -> frozenset[SearchMode]:
        return modes_for(self.dense_name is not None, bool(self.bm25_fields))

    @property
    def vector_size(self) -> int | None:
        return self._size

    def search(
        self,
        query_text: str | None,
        query_vector: Sequence[float] | None,
        top_k: int,
        mode: SearchMode,
        filter: Any = None,
    ) -> list[Hit]:
        """Dense, BM25 or hybrid search; `filter` is a `weaviate.classes.query.Filter` (or None)."""
        self.check_request(query_text, query_vector, top_k, mode)
        if filter is not None and not hasattr(filter, "operator") and not hasattr(filter, "filters"):
            raise TypeError(
                "a Weaviate filter is a weaviate.classes.query.Filter, e.g. Filter.by_property('color').equal('red'); "
                f"got {type(filter).__name__}"
            )
        vector = [float(v) for v in query_vector] if query_vector is not None else None
        target = None if self.dense_name == DEFAULT_VECTOR else self.dense_name
        common: dict[str, Any] = {"limit": top_k, "filters": filter, "return_properties": self.return_properties}
        with self._call("search"):
            if mode == "dense":
                response = self.handle.query.near_vector(
                    vector, target_vector=target, return_metadata=MetadataQuery(distance=True), **common
                )
            elif mode == "bm25":
                response = self.handle.query.bm25(
                    query_text or "", query_properties=self.bm25_fields, return_metadata=MetadataQuery(score=True),
                    **common,
                )  # fmt: skip
            else:
                response = self.handle.query.hybrid(
                    query_text or "", vector=vector, alpha=self.alpha, fusion_type=self.fusion, target_vector=target,
                    query_properties=self.bm25_fields, return_metadata=MetadataQuery(score=True), **common,
                )  # fmt: skip
        return [
            self.make_hit(str(o.uuid), dict(o.properties), self._score(o.metadata, mode), rank)
            for rank, o in enumerate(response.objects, 1)
        ]

    def _score(self, metadata: Any, mode: SearchMode) -> float:
        if mode != "dense":
            return float(metadata.score or 0.0)
        distance = float(metadata.distance or 0.0)  # cosine: 1 - similarity; dot: -product; l2: squared distance
        return 1.0 - distance if self.distance == VectorDistances.COSINE else -distance


_DATA_TYPES = {bool: DataType.BOOL, int: DataType.INT, float: DataType.NUMBER, str: DataType.TEXT}
RESERVED = frozenset({"doc_id", "text", "image"})


def document_properties(documents: Sequence[Document], analyzer: Tokenization) -> list[Property]:
    """doc_id/image (exact text), text (BM25, `analyzer` tokenization) and one typed property per extra field."""
    ids = {type(d.id) for d in documents}
    properties = [
        Property(name="doc_id", data_type=DataType.INT if ids == {int} else DataType.TEXT,
                 tokenization=None if ids == {int} else Tokenization.FIELD, index_searchable=False),
        Property(name="text", data_type=DataType.TEXT, tokenization=analyzer),
        Property(name="image", data_type=DataType.TEXT_ARRAY, tokenization=Tokenization.FIELD, index_searchable=False),
    ]  # fmt: skip
    for name, kind in extra_field_types(documents, set(RESERVED)).items():
        exact = Tokenization.FIELD if kind is str else None  # strings filter exactly, like a keyword
        properties.append(Property(name=name, data_type=_DATA_TYPES[kind], tokenization=exact, index_searchable=False))
    return properties


def object_id(doc_id: str | int) -> str:
    """A stable Weaviate object UUID for a document id (indexing again overwrites the object)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rerank-sidecar:{doc_id}"))


def index_documents(
    client: weaviate.WeaviateClient,
    collection: str,
    documents: Sequence[Document],
    *,
    embed_client: Any = None,
    vectors: Sequence[Sequence[float]] | None = None,
    distance: VectorDistances = VectorDistances.COSINE,
    tokenization: Tokenization = Tokenization.WORD,
    dense_vector: str = "dense",
    reranker: Any = None,
    recreate: bool = False,
    batch_size: int = 100,
    embed_batch_size: int = 16,
    dimensions: int = 0,
    embed_instruction: str | None = None,
    image_uri: Callable[[str], str] | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> WeaviateConnector:
    """Create (or reuse) a collection holding `documents` and return a connector for it.

    Properties: "doc_id", "text" (BM25, `tokenization`), "image" (a list of references) and one
    typed property per extra field (strings tokenised as a whole, for exact filters); a self-provided
    named vector `dense_vector` (HNSW, `distance`) when vectors are given or embedded. Object UUIDs
    derive from the document ids, so indexing again overwrites.

    Args:
        embed_client: sidecar client whose Embed RPC gives the dense vectors, in batches.
        vectors: precomputed dense vectors instead (one per document).
        reranker: a reranker module config for a new collection, e.g. `sidecar_reranker("http://sidecar:8080")`:
            then Weaviate's own `rerank=` queries score through the sidecar.
        recreate: delete an existing collection first; otherwise objects are upserted into it.

    Raises:
        ValueError: unusable extra fields or vectors.
        EngineError (and subclasses) / SidecarCallError: Weaviate or the sidecar failed.
    """
    dense = document_vectors(
        documents, vectors, embed_client, batch_size=embed_batch_size, dimensions=dimensions,
        instruction=embed_instruction, image_uri=image_uri, timeout=timeout, progress=progress,
    )  # fmt: skip
    properties = document_properties(documents, tokenization)
    url = client_url(client)

    def call(operation: str) -> Any:
        return translated(lambda exc: translate(exc, f"{operation} {collection!r}", collection, url))

    with call("create collection"):
        exists = client.collections.exists(collection)
        if exists and recreate:
            client.collections.delete(collection)
        if recreate or not exists:
            vector_config = None
            if dense is not None:
                index = Configure.VectorIndex.hnsw(distance_metric=distance)
                vector_config = [Configure.Vectors.self_provided(name=dense_vector, vector_index_config=index)]
            client.collections.create(
                collection, properties=properties, vector_config=vector_config, reranker_config=reranker
            )
    handle = client.collections.get(collection)
    with Progress(len(documents), "indexing", progress) as bar, call("insert into"):
        for number, chunk in enumerate(batches(documents, batch_size)):
            objects = []
            for offset, doc in enumerate(chunk):
                vector = {dense_vector: dense[number * batch_size + offset]} if dense is not None else None
                props = {**doc.fields, "doc_id": doc.id, "text": doc.text, "image": doc.images()}
                objects.append(
                    weaviate.classes.data.DataObject(properties=props, uuid=object_id(doc.id), vector=vector)
                )
            result = handle.data.insert_many(objects)
            if result.has_errors:
                index, error = next(iter(result.errors.items()))
                raise EngineError(
                    ENGINE,
                    f"insert into {collection!r}",
                    f"{len(result.errors)} object(s) failed, first #{index}: {error.message}",
                )
            bar.update(len(chunk))
    mapping = FieldMapping(
        id_field="doc_id", text_fields=("text",), image_fields=("image",), image_uri=image_uri,
        dense_vector=dense_vector if dense is not None else None,
    )  # fmt: skip
    return WeaviateConnector(client, collection, mapping)
