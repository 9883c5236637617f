"""Solr 9: BM25 (`edismax` over the mapped fields), kNN on a `DenseVectorField`, hybrid by client-side RRF.

    import pysolr
    from connectors import Document, search_and_rerank
    from connectors.solr import SolrConnector, index_documents

    products = SolrConnector("http://localhost:8983/solr", "products", FieldMapping(text_fields=("title", "body")))
    # or a configured client: SolrConnector(pysolr.Solr("https://solr:8983/solr/products", auth=...), "products")
    # or build the core/collection: products = index_documents("http://localhost:8983/solr", "products", docs,
    #                                                          embed_client=sidecar)
    hits = search_and_rerank(products, "red shoes", mode="hybrid", filter="color:red", rerank_client=sidecar)

Modes: "bm25" is an `edismax` query over the mapped text fields (`qf`); "dense" a `{!knn f=... topK=...}`
query on the collection's dense vector field; "hybrid" runs both and fuses them in the client by RRF
(k=60, see `connectors.fusion`), as for Elasticsearch. Filters are Solr filter queries (`fq`): one
string or a list, applied inside each search (kNN pre-filters with them). Works with standalone
cores and SolrCloud collections. Requires `pip install pysolr` (the `connectors` extra).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

from connectors.base import Connector, Document, FieldMapping, Hit, SearchMode, modes_for
from connectors.engine_errors import EngineAuthError, EngineUnavailableError, IndexNotFoundError, translated
from connectors.errors import EngineError, FieldMappingError
from connectors.fusion import RRF_K, rrf
from connectors.indexing import Progress, batches, document_vectors, extra_field_types

try:
    import pysolr
    import requests
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("connectors.solr needs pysolr: pip install 'rerank-sidecar[connectors]'") from exc

ENGINE = "solr"
VECTOR_CLASSES = frozenset({"solr.DenseVectorField", "org.apache.solr.schema.DenseVectorField"})
TEXT_CLASSES = frozenset({"solr.TextField", "org.apache.solr.schema.TextField"})


class SolrHttp:
    """JSON requests to one Solr node (`base` ends with /solr) through a pysolr client's session and auth."""

    def __init__(self, base: str, client: pysolr.Solr, timeout: float) -> None:
        self.base, self.client, self.timeout = base.rstrip("/"), client, timeout

    def __call__(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        response = self.client.get_session().request(
            method, f"{self.base}/{path.lstrip('/')}", params={"wt": "json", **params},
            json=body, timeout=self.timeout, auth=self.client.auth,
        )  # fmt: skip
        if response.status_code != 200:
            raise SolrHttpError(response.status_code, _solr_message(response))
        return response.json()


class SolrHttpError(Exception):
    """An HTTP error answer of Solr: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(f"HTTP {status}: {message}")


def _solr_message(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", {}).get("msg") or response.text[:300]).strip()
    except ValueError:
        return response.text[:300].strip()


def translate(exc: BaseException, operation: str, collection: str, url: str) -> EngineError | None:
    """The typed `EngineError` for a pysolr / requests / Solr HTTP error (None: not one of them)."""
    cause = exc.__context__ if isinstance(exc, pysolr.SolrError) else exc
    if isinstance(cause, (requests.ConnectionError, requests.Timeout)):
        return EngineUnavailableError(ENGINE, operation, url, str(cause).strip())
    if isinstance(exc, SolrHttpError):
        status, message = exc.status, exc.message
    elif isinstance(exc, pysolr.SolrError):
        status, message = _status_of(str(exc)), str(exc)
    else:
        return None
    if status in (401, 403):
        return EngineAuthError(ENGINE, operation, url, status, message)
    if status == 404:
        return IndexNotFoundError(ENGINE, operation, collection, url, message)
    return EngineError(ENGINE, operation, f"HTTP {status}: {message}" if status else message)


def _status_of(text: str) -> int | None:
    marker = "(HTTP "
    if marker in text:
        digits = text.split(marker, 1)[1].split(")", 1)[0]
        return int(digits) if digits.isdigit() else None
    return None


def core_client(client: pysolr.Solr | str, collection: str, timeout: float) -> tuple[pysolr.Solr, str]:
    """(a pysolr client on the collection, the node's base URL) from a base URL or a collection client."""
    if isinstance(client, str):
        base = client.rstrip("/")
        return pysolr.Solr(f"{base}/{collection}", timeout=timeout), base
    url = client.url.rstrip("/")
    if not url.endswith(f"/{collection}"):
        raise ValueError(f"the pysolr client's URL {client.url!r} is not the collection {collection!r}'s")
    return client, url[: -len(collection) - 1]


class SolrConnector(Connector):
    """First-stage search over one Solr core or collection.

    Args:
        client: the node's base URL ("http://host:8983/solr"), or a `pysolr.Solr` on the collection
            (its URL ends with the collection name; its session, auth and TLS settings are used).
        collection: core or collection name.
        mapping: where text, images and the vector live; the vector defaults to the schema's only
            `DenseVectorField`. "bm25" searches the mapped fields of a text type (`qf`).
        rrf_k: RRF rank constant for hybrid.
        bm25_fields: `qf` fields, boosts allowed ("title^2"); default: the mapped text fields.
        timeout: seconds per request.

    Raises:
        EngineUnavailableError, EngineAuthError, IndexNotFoundError: see `connectors.engine_errors`.
        FieldMappingError: the mapping names a field or vector the schema lacks.
    """

    name = ENGINE

    def __init__(
        self,
        client: pysolr.Solr | str,
        collection: str,
        mapping: FieldMapping | None = None,
        *,
        rrf_k: int = RRF_K,
        bm25_fields: Sequence[str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        if rrf_k < 1:
            raise ValueError(f"rrf_k must be at least 1; got {rrf_k}")
        self.collection, self.mapping, self.rrf_k = collection, mapping or FieldMapping(), rrf_k
        self.solr, base = core_client(client, collection, timeout)
        self.http = SolrHttp(base, self.solr, timeout)
        with self._call("read schema"):
            schema = self.http("GET", f"{collection}/schema")["schema"]
        self._configure(schema, bm25_fields)

    def _call(self, operation: str) -> Any:
        url = self.http.base
        return translated(lambda exc: translate(exc, f"{operation} on {self.collection!r}", self.collection, url))

    def _configure(self, schema: dict[str, Any], bm25_fields: Sequence[str] | None) -> None:
        types = {t["name"]: t for t in schema.get("fieldTypes", [])}
        fields = {f["name"]: f for f in schema.get("fields", [])}
        vectors = {
            n: types[f["type"]] for n, f in fields.items() if types.get(f["type"], {}).get("class") in VECTOR_CLASSES
        }
        dynamic = [d["name"] for d in schema.get("dynamicFields", [])]
        self.unique_key = schema.get("uniqueKey", "id")

        def known(name: str) -> bool:
            return (name in fields and name not in vectors) or any(fnmatch.fnmatchcase(name, p) for p in dynamic)

        self.dense_name = self.pick_vector("DenseVectorField", list(vectors), self.mapping.dense_vector)
        self._size = int(vectors[self.dense_name]["vectorDimension"]) if self.dense_name else None
        missing: list[str] = []
        if self.mapping.sparse_vector is not None:
            if not known(self.mapping.sparse_vector):
                missing.append(f"sparse vector {self.mapping.sparse_vector!r}")
            else:
                raise ValueError("solr runs 'bm25' on text fields; FieldMapping.sparse_vector is not used")
        missing += [f"field {n!r}" for n in self.mapping.stored_fields() if not known(n)]
        if bm25_fields is not None:
            missing += [f"field {f.split('^')[0]!r}" for f in bm25_fields if not known(f.split("^")[0])]
            self.bm25_fields = list(bm25_fields)
        else:
            candidates = self.mapping.template_fields() or list(self.mapping.text_fields)
            is_text = lambda n: types.get(fields.get(n, {}).get("type"), {}).get("class") in TEXT_CLASSES  # noqa: E731
            self.bm25_fields = [n for n in candidates if is_text(n)]
        if missing:
            available = [f"field {n!r}" for n in sorted(fields) if n not in vectors] + [
                f"vector {v!r}" for v in vectors
            ]
            raise FieldMappingError(ENGINE, self.collection, list(dict.fromkeys(missing)), available)
        self.field_list = "*,score"  # every stored field (vectors are not stored by the helper) and the score

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
        filter: str | Sequence[str] | None = None,
    ) -> list[Hit]:
        """BM25, kNN or hybrid search; `filter` is a filter query such as "color:red" (or a list of them)."""
        self.check_request(query_text, query_vector, top_k, mode)
        if filter is None:
            fq: list[str] = []
        elif isinstance(filter, str):
            fq = [filter]
        elif isinstance(filter, (list, tuple)) and all(isinstance(f, str) for f in filter):
            fq = list(filter)
        else:
            raise TypeError(
                f"a Solr filter is a filter query string (or a list of them), e.g. 'color:red'; got {type(filter).__name__}"
            )
        lexical = {"q": query_text or "", "defType": "edismax", "qf": " ".join(self.bm25_fields)}
        vector = "[" + ",".join(repr(float(v)) for v in query_vector) + "]" if query_vector is not None else ""
        knn = {"q": f"{{!knn f={self.dense_name} topK={top_k}}}{vector}"}
        with self._call("search"):
            if mode == "bm25":
                return self.hits(self._select(lexical, fq, top_k))
            if mode == "dense":
                return self.hits(self._select(knn, fq, top_k))
            ranked = [[(d[self.unique_key], d) for d in self._select(p, fq, top_k)] for p in (lexical, knn)]
        fused = rrf(ranked, k=self.rrf_k, limit=top_k)
        return self.hits([f.item for f in fused], [f.score for f in fused])

    def _select(self, params: dict[str, Any], fq: list[str], rows: int) -> list[dict[str, Any]]:
        return list(self.solr.search(fl=self.field_list, rows=rows, fq=fq, **params).docs)

    def hits(self, docs: Sequence[dict[str, Any]], scores: Sequence[float] | None = None) -> list[Hit]:
        """Hits from Solr documents (or fused documents with their own `scores`), best first."""
        return [
            self.make_hit(
                d[self.unique_key],
                {k: v for k, v in d.items() if k != "score"},
                scores[i] if scores is not None else d.get("score", 0.0),
                i + 1,
            )  # fmt: skip
            for i, d in enumerate(docs)
        ]


# --- indexing ----------------------------------------------------------------------------------------

RESERVED = frozenset({"id", "doc_id", "text", "image", "dense"})
_TYPES = {bool: "boolean", int: "plong", float: "pdouble", str: "string"}


def schema_fields(documents: Sequence[Document], text_type: str) -> list[dict[str, Any]]:
    """doc_id, text (`text_type`), image (strings) and one typed field per extra field (strings exact)."""
    ids = {type(d.id) for d in documents}
    fields = [
        {"name": "doc_id", "type": "plong" if ids == {int} else "string", "stored": True},
        {"name": "text", "type": text_type, "stored": True, "multiValued": False},
        {"name": "image", "type": "strings", "stored": True, "multiValued": True},
    ]
    for name, kind in extra_field_types(documents, set(RESERVED)).items():
        fields.append({"name": name, "type": _TYPES[kind], "stored": True, "multiValued": False})
    return fields


def ensure_collection(http: SolrHttp, collection: str, configset: str, recreate: bool) -> None:
    """Create the core (standalone) or collection (SolrCloud) from `configset` when missing, or anew."""
    cloud = http("GET", "admin/info/system").get("mode") == "solrcloud"
    if cloud:
        exists = collection in http("GET", "admin/collections", action="LIST").get("collections", [])
        if exists and recreate:
            http("GET", "admin/collections", action="DELETE", name=collection)
        if recreate or not exists:
            http(
                "GET",
                "admin/collections",
                action="CREATE",
                name=collection,
                numShards=1,
                **{"collection.configName": configset},
            )
        return
    exists = bool(http("GET", "admin/cores", action="STATUS", core=collection)["status"].get(collection))
    if exists and recreate:
        http(
            "GET",
            "admin/cores",
            action="UNLOAD",
            core=collection,
            deleteIndex="true",
            deleteDataDir="true",
            deleteInstanceDir="true",
        )
    if recreate or not exists:
        http("GET", "admin/cores", action="CREATE", name=collection, configSet=configset)


def index_documents(
    client: pysolr.Solr | str,
    collection: str,
    documents: Sequence[Document],
    *,
    embed_client: Any = None,
    vectors: Sequence[Sequence[float]] | None = None,
    similarity: str = "cosine",
    text_type: str = "text_general",
    configset: str = "_default",
    recreate: bool = False,
    batch_size: int = 200,
    embed_batch_size: int = 16,
    dimensions: int = 0,
    embed_instruction: str | None = None,
    image_uri: Callable[[str], str] | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> SolrConnector:
    """Create (or reuse) a core/collection holding `documents` and return a connector for it.

    The core (standalone) or collection (SolrCloud, one shard) is created from `configset` when
    missing; the Schema API adds what is missing: "doc_id", "text" (`text_type`), "image" (strings),
    one typed field per extra field (strings exact, for filters), and "dense", a `DenseVectorField`
    of the vectors' dimension with `similarity` ("cosine", "dot_product", "euclidean"), when
    vectors are given or embedded. The document id is the unique key "id", so indexing again
    overwrites. On a standalone node, cores made from one configset share its schema: give cores
    whose fields differ their own configsets.

    Raises:
        ValueError: unusable extra fields, or an existing "dense" field of another dimension.
        EngineError (and subclasses) / SidecarCallError: Solr or the sidecar failed.
    """
    dense = document_vectors(
        documents, vectors, embed_client, batch_size=embed_batch_size, dimensions=dimensions,
        instruction=embed_instruction, image_uri=image_uri, timeout=timeout, progress=progress,
    )  # fmt: skip
    solr, base = core_client(client, collection, 60.0)
    http = SolrHttp(base, solr, 60.0)
    fields = schema_fields(documents, text_type)

    def call(operation: str) -> Any:
        return translated(lambda exc: translate(exc, f"{operation} {collection!r}", collection, base))

    with call("create collection"):
        ensure_collection(http, collection, configset, recreate)
        schema = http("GET", f"{collection}/schema")["schema"]
        have = {f["name"]: f for f in schema.get("fields", [])}
        type_names = {t["name"]: t for t in schema.get("fieldTypes", [])}
        commands: dict[str, list[dict[str, Any]]] = {"add-field-type": [], "add-field": [], "replace-field": []}
        if dense is not None:
            vector_type = f"knn_vector_{len(dense[0])}_{similarity}"
            if vector_type not in type_names:
                commands["add-field-type"].append(
                    {"name": vector_type, "class": "solr.DenseVectorField", "vectorDimension": len(dense[0]),
                     "similarityFunction": similarity, "knnAlgorithm": "hnsw"}
                )  # fmt: skip
            fields.append({"name": "dense", "type": vector_type, "stored": False})
        for field in fields:
            current = have.get(field["name"])
            if current is None:
                commands["add-field"].append(field)
            elif current["type"] != field["type"]:
                if not recreate:
                    raise ValueError(
                        f"solr collection {collection!r} has a field {field['name']!r} of type {current['type']!r}; the "
                        f"documents need {field['type']!r}: pass recreate=True (or another collection name)"
                    )
                commands["replace-field"].append(field)  # a standalone configset's schema outlives its cores
        if any(commands.values()):
            http("POST", f"{collection}/schema", {k: v for k, v in commands.items() if v})
    with Progress(len(documents), "indexing", progress) as bar, call("update"):
        for number, chunk in enumerate(batches(documents, batch_size)):
            docs = []
            for offset, doc in enumerate(chunk):
                row: dict[str, Any] = {
                    **doc.fields,
                    "id": str(doc.id),
                    "doc_id": doc.id,
                    "text": doc.text,
                    "image": doc.images(),
                }
                if dense is not None:
                    row["dense"] = dense[number * batch_size + offset]
                docs.append(row)
            http("POST", f"{collection}/update", docs)
            bar.update(len(chunk))
        http("GET", f"{collection}/update", commit="true")
    mapping = FieldMapping(
        id_field="doc_id", text_fields=("text",), image_fields=("image",), image_uri=image_uri,
        dense_vector="dense" if dense is not None else None,
    )  # fmt: skip
    return SolrConnector(solr, collection, mapping)
