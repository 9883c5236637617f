"""Milvus: dense kNN, BM25 full-text (Milvus >= 2.5 BM25 Function), hybrid (RRF or weighted ranker).

Works with a Milvus server (`MilvusClient("http://host:19530")`) and Milvus Lite
(`MilvusClient("./file.db")`). Filters are Milvus boolean expressions, passed through.

    from pymilvus import MilvusClient
    from connectors import Document, search_and_rerank
    from connectors.milvus import index_documents

    milvus = MilvusClient("./milvus.db")
    docs = [Document(1, "red running shoes", image="shoes/red.png", fields={"price": 60})]
    products = index_documents(milvus, "products", docs, embed_client=sidecar)
    hits = search_and_rerank(products, "red shoes", mode="hybrid", filter="price <= 100", rerank_client=sidecar)

"bm25" needs a SPARSE_FLOAT_VECTOR field that is the output of a BM25 Function over an
analyzer-enabled VARCHAR field; Milvus tokenises the query text itself. Milvus may return BM25
distances negated; hits carry their absolute value and keep the engine's order.
Requires `pip install pymilvus` (and `milvus-lite` for the embedded mode; the `connectors` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from connectors.base import Connector, Document, FieldMapping, Hit, SearchMode, engine_errors, modes_for
from connectors.errors import FieldMappingError
from connectors.indexing import Progress, batches, document_vectors, extra_field_types

try:
    from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, RRFRanker, WeightedRanker
    from pymilvus.exceptions import MilvusException
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("connectors.milvus needs pymilvus: pip install 'rerank-sidecar[connectors]'") from exc

MILVUS_ERRORS: tuple[type[BaseException], ...] = (MilvusException, ConnectionError, TimeoutError)
DENSE_TYPES = {DataType.FLOAT_VECTOR, DataType.FLOAT16_VECTOR, DataType.BFLOAT16_VECTOR}
VECTOR_TYPES = {t for t in DataType if t.name.endswith("VECTOR")}  # the set grows across pymilvus versions
BM25 = {"metric_type": "BM25"}


class MilvusConnector(Connector):
    """First-stage search over one Milvus collection (loaded on construction when released).

    Args:
        client: a `pymilvus.MilvusClient` (server or Milvus Lite).
        collection: collection name.
        mapping: where text, images and vectors live; vector fields default to the collection's
            only dense vector field and only BM25 function output. `id_field` None uses the
            primary key.
        ranker: hybrid fusion, "rrf" (`RRFRanker(rrf_k)`) or "weighted" (`WeightedRanker(*weights)`,
            dense weight first).
        search_params: extra dense search parameters (e.g. {"params": {"ef": 128}}).

    Raises:
        EngineError: the collection does not exist or Milvus failed.
        FieldMappingError: the mapping names a field the collection lacks.
    """

    name = "milvus"

    def __init__(
        self,
        client: MilvusClient,
        collection: str,
        mapping: FieldMapping | None = None,
        *,
        ranker: Literal["rrf", "weighted"] = "rrf",
        rrf_k: int = 60,
        weights: tuple[float, float] = (0.5, 0.5),
        search_params: dict[str, Any] | None = None,
    ) -> None:
        self.client, self.collection, self.mapping = client, collection, mapping or FieldMapping()
        if ranker not in ("rrf", "weighted"):
            raise ValueError(f"ranker must be 'rrf' or 'weighted'; got {ranker!r}")
        self.ranker = RRFRanker(rrf_k) if ranker == "rrf" else WeightedRanker(*weights)
        self.search_params = dict(search_params or {})
        with self.engine_call("describe_collection", MILVUS_ERRORS):
            info = client.describe_collection(collection)
        fields = {f["name"]: f for f in info["fields"]}
        bm25_outputs = {
            out
            for fn in info.get("functions") or []
            if fn["type"] == FunctionType.BM25
            for out in fn["output_field_names"]
        }
        dense = {n: f for n, f in fields.items() if f["type"] in DENSE_TYPES}
        self.dense_name = self._pick("dense_vector", self.mapping.dense_vector, dense)
        self.sparse_name = self._pick("sparse_vector", self.mapping.sparse_vector, {n: fields[n] for n in bm25_outputs})
        self._size = int(dense[self.dense_name]["params"]["dim"]) if self.dense_name else None
        self.primary = next(n for n, f in fields.items() if f.get("is_primary"))
        scalars = [n for n, f in fields.items() if f["type"] not in VECTOR_TYPES]
        dynamic = bool(info.get("enable_dynamic_field"))
        self.check_fields(scalars, open_schema=dynamic)
        self.output_fields = list(dict.fromkeys([*scalars, *self.mapping.stored_fields()]))
        with self.engine_call("load_collection", MILVUS_ERRORS):
            if "NotLoad" in str(client.get_load_state(collection).get("state")):
                client.load_collection(collection)

    @property
    def supported_modes(self) -> frozenset[SearchMode]:
        return modes_for(bool(self.dense_name), bool(self.sparse_name))

    @property
    def vector_size(self) -> int | None:
        return self._size

    def search(
        self,
        query_text: str | None,
        query_vector: Sequence[float] | None,
        top_k: int,
        mode: SearchMode,
        filter: str | None = None,
    ) -> list[Hit]:
        """Dense, BM25 or hybrid search; `filter` is a Milvus boolean expression such as "price < 100"."""
        self.check_request(query_text, query_vector, top_k, mode)
        if filter is not None and not isinstance(filter, str):
            raise TypeError(f"a Milvus filter is a boolean expression string; got {type(filter).__name__}")
        expr = filter or ""
        dense = [float(v) for v in query_vector] if query_vector is not None else None
        common: dict[str, Any] = dict(limit=top_k, output_fields=self.output_fields)
        with self.engine_call("search", MILVUS_ERRORS):
            if mode == "dense":
                result = self.client.search(
                    self.collection, data=[dense], anns_field=self.dense_name, filter=expr,
                    search_params=self.search_params, **common,
                )  # fmt: skip
            elif mode == "bm25":
                result = self.client.search(
                    self.collection, data=[query_text], anns_field=self.sparse_name, filter=expr,
                    search_params=BM25, **common,
                )  # fmt: skip
            else:
                requests = [
                    AnnSearchRequest([dense], self.dense_name, self.search_params, top_k, expr=expr or None),
                    AnnSearchRequest([query_text], self.sparse_name, BM25, top_k, expr=expr or None),
                ]
                result = self.client.hybrid_search(self.collection, requests, self.ranker, **common)
        hits = result[0] if result else []
        score: Callable[[float], float] = abs if mode == "bm25" else float  # BM25 may come back negated
        return [
            self.make_hit(h.get("id", h["entity"].get(self.primary)), dict(h["entity"]), score(h["distance"]), rank)
            for rank, h in enumerate(hits, 1)
        ]

    def _pick(self, attribute: str, wanted: str | None, available: dict[str, Any]) -> str | None:
        kind = attribute.replace("_", " ")
        if wanted is not None:
            if wanted not in available:
                what = "dense vector field" if attribute == "dense_vector" else "BM25 function output field"
                raise FieldMappingError("milvus", self.collection, [f"{what} {wanted!r}"], sorted(available))
            return wanted
        if len(available) > 1:
            raise ValueError(
                f"milvus collection {self.collection!r} has several {kind} fields ({', '.join(map(repr, available))}); "
                f"name one in FieldMapping.{attribute}"
            )
        return next(iter(available), None)


_DATA_TYPES = {bool: DataType.BOOL, int: DataType.INT64, float: DataType.DOUBLE, str: DataType.VARCHAR}


def index_documents(
    client: MilvusClient,
    collection: str,
    documents: Sequence[Document],
    *,
    embed_client: Any = None,
    vectors: Sequence[Sequence[float]] | None = None,
    full_text: bool = True,
    metric: str = "COSINE",
    index_type: str = "AUTOINDEX",
    analyzer_params: dict[str, Any] | None = None,
    recreate: bool = False,
    batch_size: int = 64,
    embed_batch_size: int = 16,
    dimensions: int = 0,
    embed_instruction: str | None = None,
    image_uri: Callable[[str], str] | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> MilvusConnector:
    """Create (or reuse) a collection holding `documents` and return a connector for it.

    Schema: "id" (INT64 when every id is an int, else VARCHAR), "text" (VARCHAR, analyzer enabled
    when `full_text`), "image" (VARCHAR reference, or ARRAY of VARCHAR when a document has several;
    "" when none), one typed scalar field per extra field (missing values get the type's zero),
    "dense" (FLOAT_VECTOR) when vectors are given or embedded, and "sparse" (BM25 Function output)
    when `full_text`. Strong consistency, so searches see what was just written.

    Args:
        embed_client: sidecar client whose Embed RPC gives the dense vectors, in batches.
        vectors: precomputed dense vectors instead (one per document).
        full_text: add the BM25 function (Milvus >= 2.5 / Milvus Lite; off for older servers).
        metric / index_type: dense index ("COSINE", "IP", "L2"; "AUTOINDEX", "FLAT", "HNSW", ...).
        analyzer_params: analyzer of the text field (default: Milvus' standard analyzer).
        recreate: drop an existing collection first; otherwise rows are upserted by id.

    Raises:
        ValueError: nothing to index or unusable extra fields.
        EngineError / SidecarCallError: Milvus or the sidecar failed.
    """
    dense = document_vectors(
        documents, vectors, embed_client, batch_size=embed_batch_size, dimensions=dimensions,
        instruction=embed_instruction, image_uri=image_uri, timeout=timeout, progress=progress,
    )  # fmt: skip
    if dense is None and not full_text:
        raise ValueError("nothing to index: give embed_client or vectors, or keep full_text=True")
    extras = extra_field_types(documents, {"id", "text", "image", "dense", "sparse"})
    int_ids = all(isinstance(d.id, int) and not isinstance(d.id, bool) for d in documents)
    multi_image = any(len(d.images()) > 1 for d in documents)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    if int_ids:
        schema.add_field("id", DataType.INT64, is_primary=True)
    else:
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    text_options: dict[str, Any] = {"enable_analyzer": True} if full_text else {}
    if full_text and analyzer_params:
        text_options["analyzer_params"] = analyzer_params
    schema.add_field("text", DataType.VARCHAR, max_length=65535, **text_options)
    if multi_image:
        capacity = max(len(d.images()) for d in documents)
        schema.add_field("image", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=capacity, max_length=2048)
    else:
        schema.add_field("image", DataType.VARCHAR, max_length=2048)
    for name, kind in extras.items():
        options = {"max_length": 65535} if kind is str else {}
        schema.add_field(name, _DATA_TYPES[kind], **options)
    index = client.prepare_index_params()
    if dense is not None:
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=len(dense[0]))
        index.add_index("dense", index_type=index_type, metric_type=metric)
    if full_text:
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function("bm25", FunctionType.BM25, input_field_names=["text"], output_field_names=["sparse"])
        )
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    with engine_errors("milvus", f"create_collection {collection!r}", MILVUS_ERRORS):
        exists = client.has_collection(collection)
        if exists and recreate:
            client.drop_collection(collection)
        if recreate or not exists:
            client.create_collection(collection, schema=schema, index_params=index, consistency_level="Strong")
    with (
        Progress(len(documents), "indexing", progress) as bar,
        engine_errors("milvus", f"upsert into {collection!r}", MILVUS_ERRORS),
    ):
        for start, chunk in enumerate(batches(documents, batch_size)):
            rows = []
            for offset, doc in enumerate(chunk):
                images = doc.images()
                row: dict[str, Any] = {
                    "id": doc.id,
                    "text": doc.text,
                    "image": images if multi_image else "".join(images[:1]),
                }
                row.update({name: doc.fields.get(name, kind()) for name, kind in extras.items()})
                if dense is not None:
                    row["dense"] = dense[start * batch_size + offset]
                rows.append(row)
            client.upsert(collection, rows)
            bar.update(len(chunk))
    mapping = FieldMapping(
        text_fields=("text",),
        image_fields=("image",),
        image_uri=image_uri,
        dense_vector="dense" if dense is not None else None,
        sparse_vector="sparse" if full_text else None,
    )
    return MilvusConnector(client, collection, mapping)
