"""Qdrant: dense kNN on a named vector, BM25 on a sparse named vector, hybrid by the Query API (RRF).

Works with a server (`QdrantClient(url=...)`) and with Qdrant's embedded local mode
(`QdrantClient(path=...)` or `QdrantClient(":memory:")`), which share one client API.

    from qdrant_client import QdrantClient
    from connectors import Document, search_and_rerank
    from connectors.qdrant import index_documents

    qdrant = QdrantClient(path="./qdrant-data")
    docs = [Document(1, "red running shoes", image="shoes/red.png", fields={"price": 60})]
    products = index_documents(qdrant, "products", docs, embed_client=sidecar)
    hits = search_and_rerank(products, "red shoes", mode="hybrid", rerank_client=sidecar,
                             filter={"must": [{"key": "price", "range": {"lte": 100}}]})

"bm25" sends client-side sparse vectors (see `connectors.sparse`): term-frequency weights for
documents, 1 per query token, and Qdrant applies IDF (`modifier=IDF` on the sparse vector).
Requires `pip install qdrant-client` (the `connectors` extra).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

import grpc

from connectors.base import Connector, Document, FieldMapping, Hit, SearchMode, engine_errors, modes_for
from connectors.errors import FieldMappingError
from connectors.indexing import Progress, batches, document_vectors
from connectors.sparse import Bm25Encoder

try:
    from qdrant_client import QdrantClient, models
    from qdrant_client.http.exceptions import ApiException, ResponseHandlingException, UnexpectedResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("connectors.qdrant needs qdrant-client: pip install 'rerank-sidecar[connectors]'") from exc

# What qdrant-client raises: HTTP/gRPC errors from a server; ValueError, KeyError or RuntimeError
# from local mode (unknown collection or vector, wrong dimension, storage folder already in use).
QDRANT_ERRORS: tuple[type[BaseException], ...] = (
    ApiException,
    UnexpectedResponse,
    ResponseHandlingException,
    grpc.RpcError,
    ValueError,
    KeyError,
    RuntimeError,
)
FUSIONS = {"rrf": models.Fusion.RRF, "dbsf": models.Fusion.DBSF}


class QdrantConnector(Connector):
    """First-stage search over one Qdrant collection.

    Args:
        client: a `QdrantClient` (server or local mode).
        collection: collection name.
        mapping: where text, images and vectors live; vector names default to the collection's
            only dense and only sparse vector.
        fusion: hybrid fusion, "rrf" (reciprocal rank fusion, default) or "dbsf".
        bm25: sparse encoder for query text (default `Bm25Encoder()`; only its tokenisation
            matters for queries).
        sample_size: points scrolled to learn payload field names (Qdrant payloads have no
            schema); the mapping's stored fields must appear in at least one of them.

    Raises:
        EngineError: the collection does not exist or Qdrant failed.
        FieldMappingError: the mapping names a vector or payload field the collection lacks.
    """

    name = "qdrant"

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        mapping: FieldMapping | None = None,
        *,
        fusion: Literal["rrf", "dbsf"] = "rrf",
        bm25: Bm25Encoder | None = None,
        sample_size: int = 64,
    ) -> None:
        self.client, self.collection, self.mapping = client, collection, mapping or FieldMapping()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be 'rrf' or 'dbsf'; got {fusion!r}")
        self.fusion = FUSIONS[fusion]
        self.bm25 = bm25 or Bm25Encoder()
        with self.engine_call("get_collection", QDRANT_ERRORS):
            info = client.get_collection(collection)
        params = info.config.params
        dense = params.vectors if isinstance(params.vectors, dict) else {"": params.vectors} if params.vectors else {}
        sparse = params.sparse_vectors or {}
        self.dense_name = _pick(self, "dense vector", self.mapping.dense_vector, dense)
        self.sparse_name = _pick(self, "sparse vector", self.mapping.sparse_vector, sparse)
        self._size = dense[self.dense_name].size if self.dense_name is not None else None
        self._validate_payload(info, sample_size)

    @property
    def supported_modes(self) -> frozenset[SearchMode]:
        return modes_for(self.dense_name is not None, self.sparse_name is not None)

    @property
    def vector_size(self) -> int | None:
        return self._size

    def search(
        self,
        query_text: str | None,
        query_vector: Sequence[float] | None,
        top_k: int,
        mode: SearchMode,
        filter: models.Filter | dict | None = None,
    ) -> list[Hit]:
        """Dense, BM25 or hybrid search; `filter` is a `models.Filter` or its dict form."""
        self.check_request(query_text, query_vector, top_k, mode)
        query_filter = models.Filter.model_validate(filter) if isinstance(filter, dict) else filter
        dense = list(map(float, query_vector)) if query_vector is not None else None
        indices, values = self.bm25.encode_query(query_text or "")
        sparse = models.SparseVector(indices=indices, values=values)
        common: dict[str, Any] = dict(limit=top_k, query_filter=query_filter, with_payload=True, with_vectors=False)
        with self.engine_call("search", QDRANT_ERRORS):
            if mode == "dense":
                response = self.client.query_points(
                    self.collection, query=dense, using=self.dense_name or None, **common
                )
            elif mode == "bm25":
                if not indices:
                    return []
                response = self.client.query_points(self.collection, query=sparse, using=self.sparse_name, **common)
            else:
                prefetch = [
                    models.Prefetch(query=dense, using=self.dense_name or None, limit=top_k, filter=query_filter)
                ]
                if indices:
                    prefetch.append(
                        models.Prefetch(query=sparse, using=self.sparse_name, limit=top_k, filter=query_filter)
                    )
                fused = models.FusionQuery(fusion=self.fusion)
                response = self.client.query_points(self.collection, prefetch=prefetch, query=fused, **common)
        return [self.make_hit(p.id, dict(p.payload or {}), p.score, rank) for rank, p in enumerate(response.points, 1)]

    def _validate_payload(self, info: Any, sample_size: int) -> None:
        with self.engine_call("scroll", QDRANT_ERRORS):
            points, _ = self.client.scroll(self.collection, limit=sample_size, with_payload=True, with_vectors=False)
        if not points:
            return  # an empty collection cannot tell which payload fields exist
        seen = set(info.payload_schema or {})
        for point in points:
            seen.update((point.payload or {}).keys())
        self.check_fields(sorted(seen))


def _pick(connector: QdrantConnector, kind: str, wanted: str | None, available: dict[str, Any]) -> str | None:
    """The vector the mapping names (must exist), else the only one of its kind, else None."""
    if wanted is not None:
        if wanted not in available:
            names = [f"{kind} {n!r}" if n else f"unnamed {kind}" for n in available]
            raise FieldMappingError("qdrant", connector.collection, [f"{kind} {wanted!r}"], names)
        return wanted
    if len(available) > 1:
        raise ValueError(
            f"qdrant collection {connector.collection!r} has several {kind}s ({', '.join(map(repr, available))}); "
            f"name one in FieldMapping.{kind.replace(' ', '_')}"
        )
    return next(iter(available), None)


def point_id(doc_id: str | int) -> int | str:
    """A Qdrant point id for a document id: non-negative ints and UUIDs as they are, else a UUIDv5."""
    if isinstance(doc_id, int) and doc_id >= 0:
        return doc_id
    try:
        return str(uuid.UUID(str(doc_id)))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rerank-sidecar:{doc_id}"))


def index_documents(
    client: QdrantClient,
    collection: str,
    documents: Sequence[Document],
    *,
    embed_client: Any = None,
    vectors: Sequence[Sequence[float]] | None = None,
    bm25: bool = True,
    distance: models.Distance = models.Distance.COSINE,
    dense_vector: str = "dense",
    sparse_vector: str = "bm25",
    recreate: bool = False,
    batch_size: int = 64,
    embed_batch_size: int = 16,
    dimensions: int = 0,
    embed_instruction: str | None = None,
    image_uri: Callable[[str], str] | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> QdrantConnector:
    """Create (or reuse) a collection holding `documents` and return a connector for it.

    Payload per point: "doc_id" (the document id; point ids are the id itself when it is a
    non-negative int or a UUID, else a UUIDv5 of it), "text", "image" (one reference, a list, or
    None) and each of `Document.fields`.

    Args:
        embed_client: sidecar client whose Embed RPC gives the dense vectors (text and image of
            each document together), in batches of `embed_batch_size`.
        vectors: precomputed dense vectors instead (one per document).
        bm25: add the sparse "bm25" vector (client-side BM25 term weights, IDF by Qdrant).
        recreate: drop an existing collection first; otherwise points are upserted by id into it,
            so indexing the same documents twice leaves the same collection.
        dimensions: Matryoshka truncation for Embed (0: the model's dimension).

    Raises:
        ValueError: no dense vectors and no bm25 requested, or bad vectors.
        EngineError / SidecarCallError: Qdrant or the sidecar failed.
    """
    dense = document_vectors(
        documents,
        vectors,
        embed_client,
        batch_size=embed_batch_size,
        dimensions=dimensions,
        instruction=embed_instruction,
        image_uri=image_uri,
        timeout=timeout,
        progress=progress,
    )
    if dense is None and not bm25:
        raise ValueError("nothing to index: give embed_client or vectors, or keep bm25=True")
    encoder = Bm25Encoder.fit(d.text for d in documents)
    mapping = FieldMapping(
        id_field="doc_id",
        text_fields=("text",),
        image_fields=("image",),
        image_uri=image_uri,
        dense_vector=dense_vector if dense is not None else None,
        sparse_vector=sparse_vector if bm25 else None,
    )
    with engine_errors("qdrant", f"create_collection {collection!r}", QDRANT_ERRORS):
        exists = client.collection_exists(collection)
        if exists and recreate:
            client.delete_collection(collection)
        if recreate or not exists:
            size = len(dense[0]) if dense else 0
            client.create_collection(
                collection,
                vectors_config={dense_vector: models.VectorParams(size=size, distance=distance)} if dense else {},
                sparse_vectors_config=(
                    {sparse_vector: models.SparseVectorParams(modifier=models.Modifier.IDF)} if bm25 else None
                ),
            )
    with (
        Progress(len(documents), "indexing", progress) as bar,
        engine_errors("qdrant", f"upsert into {collection!r}", QDRANT_ERRORS),
    ):
        for start, chunk in enumerate(batches(documents, batch_size)):
            points = []
            for offset, doc in enumerate(chunk):
                vector: dict[str, Any] = {}
                if dense is not None:
                    vector[dense_vector] = dense[start * batch_size + offset]
                if bm25:
                    indices, values = encoder.encode_document(doc.text)
                    vector[sparse_vector] = models.SparseVector(indices=indices, values=values)
                payload = {**doc.fields, "doc_id": doc.id, "text": doc.text, "image": doc.image}
                points.append(models.PointStruct(id=point_id(doc.id), vector=vector, payload=payload))
            client.upsert(collection, points=points, wait=True)
            bar.update(len(chunk))
    return QdrantConnector(client, collection, mapping)
