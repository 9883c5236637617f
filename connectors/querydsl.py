"""What the Elasticsearch and OpenSearch connectors share: index mappings, query DSL, hits, errors, indexing.

Both engines speak the same JSON: an index mapping lists typed fields, "bm25" is a `multi_match`
over text fields, filters are query DSL clauses, hits carry `_id`, `_score` and `_source`. They
differ in the vector field type (`dense_vector` / `knn_vector`), the kNN syntax, how hybrid is
fused, and their client libraries; `connectors.elasticsearch` and `connectors.opensearch` supply
those parts. This module imports neither client; their errors become the typed errors of
`connectors.engine_errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from connectors.base import Connector, Document, Hit, SearchMode
from connectors.engine_errors import error_reason, translated
from connectors.errors import EngineError, FieldMappingError
from connectors.indexing import Progress, batches

MAX_WINDOW = 10_000  # index.max_result_window and the kNN k / num_candidates limit of both engines
TEXT_TYPES = frozenset({"text", "match_only_text", "search_as_you_type"})
_MISSING = object()


def filter_clauses(filter: Any) -> list[dict[str, Any]]:
    """A query DSL filter (one clause or a list of them) as a list of clauses."""
    if filter is None:
        return []
    if isinstance(filter, Mapping):
        return [dict(filter)]
    if isinstance(filter, (list, tuple)) and all(isinstance(c, Mapping) for c in filter):
        return [dict(c) for c in filter]
    raise TypeError(
        f"a filter is a query DSL clause (dict) or a list of them, e.g. {{'term': {{'color': 'red'}}}}; "
        f"got {type(filter).__name__}"
    )


def as_floats(vector: Sequence[float] | None) -> list[float]:
    """A query vector (list, tuple, numpy array) as a JSON-ready list of floats ([] for None)."""
    return [] if vector is None else [float(v) for v in vector]


def one_clause(clauses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Filter clauses as one query (for kNN `filter`, which takes a single query)."""
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"bool": {"filter": clauses}}


@dataclass
class IndexFields:
    """What an index mapping declares: stored fields, searchable fields (multi-fields too), vectors."""

    source: dict[str, str] = field(default_factory=dict)  # _source path -> type ("object" for objects)
    searchable: dict[str, str] = field(default_factory=dict)  # every field a query can name
    vectors: dict[str, dict[str, Any]] = field(default_factory=dict)  # vector path -> its mapping
    open: bool = False  # dynamic: false/runtime: _source may hold fields the mapping does not list

    @classmethod
    def read(cls, response: Mapping[str, Any], vector_type: str) -> IndexFields:
        """Merge the mappings of every index in a get-mapping response (an alias may cover several)."""
        fields = cls()
        for index in response.values():
            mappings = index.get("mappings") or {}
            if str(mappings.get("dynamic", "true")).lower() in ("false", "runtime"):
                fields.open = True
            fields._walk(mappings.get("properties") or {}, "", vector_type)
        return fields

    def _walk(self, properties: Mapping[str, Any], prefix: str, vector_type: str) -> None:
        for name, spec in properties.items():
            path, kind = prefix + name, spec.get("type", "object")
            if kind == vector_type:
                self.vectors.setdefault(path, dict(spec))
                continue
            self.searchable.setdefault(path, kind)
            if kind != "alias":
                self.source.setdefault(path, kind)
            if "properties" in spec:
                self._walk(spec["properties"], path + ".", vector_type)
            for sub, sub_spec in (spec.get("fields") or {}).items():
                self.searchable.setdefault(f"{path}.{sub}", sub_spec.get("type", "object"))


class QueryDslConnector(Connector):
    """The engine-neutral part of the Elasticsearch and OpenSearch connectors.

    Subclasses set `name`, `vector_type` and `dims_key`, read the index mapping, call
    `configure`, and implement `search`.
    """

    vector_type: ClassVar[str]
    dims_key: ClassVar[str]
    index: str
    dense_name: str | None
    bm25_fields: list[str]
    source_fields: list[str]
    _size: int | None

    def configure(self, fields: IndexFields, bm25_fields: Sequence[str] | None, source_fields: Sequence[str]) -> None:
        """Check the field mapping against the index and choose the vector, BM25 and `_source` fields."""
        missing: list[str] = []
        self.dense_name = self._pick_vector(fields)
        spec = fields.vectors.get(self.dense_name or "", {})
        self._size = int(spec[self.dims_key]) if spec.get(self.dims_key) else None
        if self.mapping.sparse_vector is not None:
            if self.mapping.sparse_vector not in fields.source:
                missing.append(f"sparse vector {self.mapping.sparse_vector!r}")
            else:
                raise ValueError(f"{self.name} runs 'bm25' on text fields; FieldMapping.sparse_vector is not used")
        wanted = [*self.mapping.stored_fields(), *source_fields]
        if not fields.open:
            missing += [f"field {n!r}" for n in dict.fromkeys(wanted) if n not in fields.source]
        if bm25_fields is not None:
            names = [f.split("^")[0] for f in bm25_fields]
            missing += [f"field {n!r}" for n in names if "*" not in n and n not in fields.searchable]
            self.bm25_fields = list(bm25_fields)
        else:
            candidates = self.mapping.template_fields() or list(self.mapping.text_fields)
            self.bm25_fields = [n for n in candidates if fields.searchable.get(n) in TEXT_TYPES]
        if missing:
            available = [*(f"field {n!r}" for n in sorted(fields.source)), *(f"vector {v!r}" for v in fields.vectors)]
            raise FieldMappingError(self.name, self.collection, list(dict.fromkeys(missing)), available)
        self.source_fields = list(dict.fromkeys(wanted))

    def _pick_vector(self, fields: IndexFields) -> str | None:
        wanted = self.mapping.dense_vector
        if wanted is not None:
            if wanted not in fields.vectors:
                available = [f"{self.vector_type} {v!r}" for v in fields.vectors]
                raise FieldMappingError(self.name, self.collection, [f"{self.vector_type} {wanted!r}"], available)
            return wanted
        if len(fields.vectors) > 1:
            raise ValueError(
                f"{self.name} index {self.collection!r} has several {self.vector_type} fields "
                f"({', '.join(map(repr, fields.vectors))}); name one in FieldMapping.dense_vector"
            )
        return next(iter(fields.vectors), None)

    @property
    def supported_modes(self) -> frozenset[SearchMode]:
        modes: set[SearchMode] = set()
        if self.dense_name:
            modes.add("dense")
        if self.bm25_fields:
            modes.add("bm25")
        if len(modes) == 2:
            modes.add("hybrid")
        return frozenset(modes)

    @property
    def vector_size(self) -> int | None:
        return self._size

    def bm25_query(self, text: str, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        """`multi_match` over the BM25 fields, inside a `bool` with the filters when there are any."""
        match = {"multi_match": {"query": text, "fields": self.bm25_fields}}
        return {"bool": {"must": [match], "filter": clauses}} if clauses else match

    def hits(self, raw: Sequence[Mapping[str, Any]], scores: Sequence[float] | None = None) -> list[Hit]:
        """Hits from the engine's `hits.hits` (or fused raw hits with their own `scores`), best first."""
        return [
            self.make_hit(
                h["_id"],
                self.fields_of(h.get("_source") or {}),
                scores[i] if scores is not None else h.get("_score") or 0.0,
                i + 1,
            )  # fmt: skip
            for i, h in enumerate(raw)
        ]

    def fields_of(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """`_source` as a dict, with each dotted field the mapping names (e.g. "meta.title") also at top level."""
        fields = dict(source)
        for name in self.source_fields:
            if "." in name and name not in fields:
                value = _lookup(source, name.split("."))
                if value is not _MISSING:
                    fields[name] = value
        return fields


def _lookup(value: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(value, list):
            found = [v for v in (_lookup(item, [part]) for item in value) if v is not _MISSING]
            value = found if found else _MISSING
        elif isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return _MISSING
        if value is _MISSING:
            return value
    return value


# --- indexing helpers ---------------------------------------------------------------------------

RESERVED = frozenset({"doc_id", "text", "image", "dense"})
_TYPES = {bool: "boolean", int: "long", float: "double", str: "keyword"}


def document_properties(documents: Sequence[Document], analyzer: str | None = None) -> dict[str, dict[str, Any]]:
    """Field mappings for the indexing helpers: doc_id/image keyword, text text, typed extra fields.

    Extra fields holding only bools, ints, floats (ints and floats together: double) or strings
    (keyword, so term filters match them exactly) get an explicit type; others are left to
    dynamic mapping.
    """
    properties: dict[str, dict[str, Any]] = {
        "doc_id": {"type": "keyword"},
        "text": {"type": "text", **({"analyzer": analyzer} if analyzer else {})},
        "image": {"type": "keyword"},
    }
    seen: dict[str, set[type]] = {}
    for doc in documents:
        for name, value in doc.fields.items():
            if name in RESERVED:
                raise ValueError(
                    f"extra field {name!r} clashes with a field the index creates ({', '.join(sorted(RESERVED))})"
                )
            seen.setdefault(name, set()).add(type(value))
    for name, types in seen.items():
        types = {float} if types == {int, float} else types
        if len(types) == 1 and next(iter(types)) in _TYPES:
            properties[name] = {"type": _TYPES[next(iter(types))]}
    return properties


def bulk_operations(
    index: str, documents: Sequence[Document], vectors: Sequence[list[float]] | None, offset: int
) -> list[dict[str, Any]]:
    """Bulk `index` actions (the document id is `_id`, so indexing again overwrites)."""
    operations: list[dict[str, Any]] = []
    for i, doc in enumerate(documents):
        source: dict[str, Any] = {**doc.fields, "doc_id": doc.id, "text": doc.text, "image": doc.image}
        if vectors is not None:
            source["dense"] = vectors[offset + i]
        operations += [{"index": {"_index": index, "_id": str(doc.id)}}, source]
    return operations


def bulk_failure(response: Mapping[str, Any]) -> str | None:
    """A description of the first failed item of a bulk response, or None when all succeeded."""
    if not response.get("errors"):
        return None
    failed = [i for item in response.get("items", []) for i in item.values() if i.get("error")]
    if not failed:
        return "the bulk request reported errors"
    kind, reason = error_reason({"error": failed[0]["error"]})
    return f"{len(failed)} document(s) failed, first {failed[0].get('_id')!r}: {kind}: {reason}"


def index_corpus(
    client: Any,
    engine: str,
    index: str,
    documents: Sequence[Document],
    dense: list[list[float]] | None,
    *,
    create_body: Callable[[dict[str, dict[str, Any]], int | None], dict[str, Any]],
    vector_type: str,
    dims_key: str,
    analyzer: str | None,
    recreate: bool,
    batch_size: int,
    progress: bool,
    translate: Callable[[BaseException, str], EngineError | None],
) -> None:
    """Create (or reuse) `index` and bulk-index `documents` with their vectors; refresh at the end.

    An existing index is kept (documents overwrite by id) unless `recreate`; fields it lacks are
    added with put-mapping; a vector of another dimension, or vectors for an index without
    a vector field, raise ValueError asking for `recreate=True`.
    """
    properties = document_properties(documents, analyzer)
    size = len(dense[0]) if dense else None
    operation = f"create index {index!r}"
    with translated(lambda exc: translate(exc, operation)):
        exists = bool(client.indices.exists(index=index))
        if exists and recreate:
            client.indices.delete(index=index)
        if recreate or not exists:
            client.indices.create(index=index, body=create_body(properties, size))
        else:
            current = IndexFields.read(client.indices.get_mapping(index=index), vector_type)
            have = current.vectors.get("dense", {}).get(dims_key)
            if size is not None and have != size:
                found = f"a 'dense' vector of dimension {have}" if have else "no 'dense' vector field"
                raise ValueError(
                    f"{engine} index {index!r} exists with {found}; the documents have {size}-dimensional "
                    "vectors: pass recreate=True (or another index name)"
                )
            new = {n: p for n, p in properties.items() if n not in current.source}
            if new:
                client.indices.put_mapping(index=index, body={"properties": new})
    with (
        Progress(len(documents), "indexing", progress) as bar,
        translated(lambda exc: translate(exc, f"bulk into {index!r}")),
    ):
        for number, chunk in enumerate(batches(documents, batch_size)):
            response = client.bulk(body=bulk_operations(index, chunk, dense, number * batch_size))
            failure = bulk_failure(response)
            if failure:
                raise EngineError(engine, f"bulk into {index!r}", failure)
            bar.update(len(chunk))
        client.indices.refresh(index=index)
