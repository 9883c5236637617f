"""The engine-neutral part of a connector: field mapping, first-stage hits, and the interface engines implement.

A connector wraps one collection (index) of one engine. `search_and_rerank()` asks it for first-stage
hits and needs nothing else from it, so Elasticsearch and OpenSearch fit behind the same interface.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from connectors.errors import ConnectorError, EngineError, FieldMappingError

SearchMode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[SearchMode, ...] = ("dense", "bm25", "hybrid")


class _Blank(dict):
    """format_map() helper: a field the document lacks formats as an empty string."""

    def __missing__(self, key: str) -> str:
        return ""


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_as_text(v) for v in value if v is not None)
    return str(value)


@dataclass(frozen=True)
class FieldMapping:
    """Where a collection keeps what the reranker needs.

    Args:
        id_field: stored field holding the document id; None uses the engine's own id
            (Qdrant point id, Milvus primary key).
        text_fields: field(s) whose text is sent to the reranker (a str is one field).
        text_template: optional `str.format` template over the stored fields, e.g.
            "{title}\\n{body}"; a field a document lacks formats as "". When set, it replaces
            `text_fields`. Default: the text fields' values joined by newlines, empty ones skipped.
        image_fields: field(s) holding image references; each holds one string or a list of them.
            References must be something the sidecar resolves: an http(s) URL, a data: URI, or a
            path under the sidecar's --media-root.
        image_uri: optional function rewriting a stored reference into such a URI
            (e.g. an object key into a URL).
        dense_vector: name of the dense vector (Qdrant named vector / Milvus vector field);
            None picks the collection's only dense vector.
        sparse_vector: name of the sparse vector used for "bm25" (Qdrant sparse named vector /
            Milvus BM25 function output); None picks the collection's only one.

    Fields are checked against the collection when a connector is built: a missing one raises
    `FieldMappingError` naming it.
    """

    id_field: str | None = None
    text_fields: tuple[str, ...] = ("text",)
    text_template: str | None = None
    image_fields: tuple[str, ...] = ()
    image_uri: Callable[[str], str] | None = None
    dense_vector: str | None = None
    sparse_vector: str | None = None

    def __post_init__(self) -> None:
        for name in ("text_fields", "image_fields"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if not self.text_fields and not self.text_template and not self.image_fields:
            raise ValueError("a FieldMapping needs text_fields, a text_template or image_fields")

    def stored_fields(self) -> list[str]:
        """Every stored (non-vector) field the mapping reads, without duplicates."""
        names = [self.id_field] if self.id_field else []
        names += self.template_fields() if self.text_template else list(self.text_fields)
        names += self.image_fields
        return list(dict.fromkeys(names))

    def template_fields(self) -> list[str]:
        """Field names used by `text_template` (empty when there is none)."""
        if not self.text_template:
            return []
        import string

        return [name for _, name, _, _ in string.Formatter().parse(self.text_template) if name]

    def text_of(self, fields: Mapping[str, Any]) -> str:
        """The document text sent to the reranker."""
        if self.text_template:
            return self.text_template.format_map(_Blank({k: _as_text(v) for k, v in fields.items()}))
        parts = (_as_text(fields.get(name)) for name in self.text_fields)
        return "\n".join(p for p in parts if p)

    def images_of(self, fields: Mapping[str, Any]) -> list[str]:
        """The image references stored in the document, in field order."""
        refs: list[str] = []
        for name in self.image_fields:
            value = fields.get(name)
            values = value if isinstance(value, (list, tuple)) else [value]
            refs += [str(v) for v in values if v]
        return refs

    def image_uris(self, refs: Sequence[str]) -> list[str]:
        """References rewritten through `image_uri` (unchanged without one)."""
        return [self.image_uri(r) for r in refs] if self.image_uri else list(refs)


@dataclass
class Hit:
    """One first-stage result.

    Attributes:
        id: document id (the engine's id, or the value of `FieldMapping.id_field`).
        fields: the stored fields the engine returned (no vectors).
        image_refs: image references read through the field mapping.
        text: document text built through the field mapping.
        score: the engine's score (BM25 scores are made non-negative; RRF scores for hybrid).
        rank: 1-based position in the first-stage order.
    """

    id: str | int
    fields: dict[str, Any]
    image_refs: list[str]
    text: str
    score: float
    rank: int


def modes_for(has_dense: bool, has_sparse: bool) -> frozenset[SearchMode]:
    """The modes an index supports: dense with a dense vector, bm25 with a sparse one, hybrid with both."""
    modes: set[SearchMode] = set()
    if has_dense:
        modes.add("dense")
    if has_sparse:
        modes.add("bm25")
    if len(modes) == 2:
        modes.add("hybrid")
    return frozenset(modes)


class Connector(ABC):
    """First-stage search over one collection of one engine.

    Implementations set `name`, validate `mapping` against the collection in `__init__`, and
    implement `search`. `asearch` runs `search` in a worker thread unless overridden with an
    engine-native async client.
    """

    name: ClassVar[str]
    mapping: FieldMapping
    collection: str

    @property
    @abstractmethod
    def supported_modes(self) -> frozenset[SearchMode]:
        """The modes this collection can serve (e.g. no "bm25" without a sparse/BM25 field)."""

    @property
    def vector_size(self) -> int | None:
        """Dimension of the dense vector, when there is one (sent as Embed `dimensions`)."""
        return None

    @abstractmethod
    def search(
        self,
        query_text: str | None,
        query_vector: Sequence[float] | None,
        top_k: int,
        mode: SearchMode,
        filter: Any = None,
    ) -> list[Hit]:
        """Return at most `top_k` hits, best first.

        Args:
            query_text: the text for "bm25" and "hybrid" (None or "" gives no lexical match).
            query_vector: the dense query vector for "dense" and "hybrid".
            top_k: candidates wanted; more than the collection holds returns them all.
            mode: "dense" (kNN), "bm25" (lexical) or "hybrid" (both, fused by the engine).
            filter: engine-native filter passed through unchanged (Qdrant `models.Filter` or
                dict, Milvus boolean expression string).
        """

    async def asearch(
        self,
        query_text: str | None,
        query_vector: Sequence[float] | None,
        top_k: int,
        mode: SearchMode,
        filter: Any = None,
    ) -> list[Hit]:
        """`search` for asyncio callers (a worker thread by default)."""
        return await asyncio.to_thread(self.search, query_text, query_vector, top_k, mode, filter)

    def check_mode(self, mode: str) -> None:
        """Reject an unknown mode or one this collection cannot serve (ValueError)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if mode not in self.supported_modes:
            supported = ", ".join(m for m in MODES if m in self.supported_modes) or "none"
            raise ValueError(
                f"{self.name} collection {self.collection!r} cannot serve mode {mode!r}; it supports {supported}"
            )

    def check_request(self, query_text: str | None, query_vector: Sequence[float] | None, top_k: int, mode: str):
        """`check_mode`, then the inputs the mode needs and `top_k` (ValueError)."""
        self.check_mode(mode)
        if mode in ("dense", "hybrid") and query_vector is None:
            raise ValueError(f"mode {mode!r} needs a query vector")
        if mode in ("bm25", "hybrid") and not (query_text or "").strip():
            raise ValueError(f"mode {mode!r} needs query text")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1; got {top_k}")

    def make_hit(self, engine_id: str | int, fields: dict[str, Any], score: float, rank: int) -> Hit:
        """Build a `Hit` through the field mapping."""
        doc_id = fields.get(self.mapping.id_field, engine_id) if self.mapping.id_field else engine_id
        return Hit(
            id=doc_id,
            fields=fields,
            image_refs=self.mapping.images_of(fields),
            text=self.mapping.text_of(fields),
            score=float(score),
            rank=rank,
        )

    def check_fields(self, available: Sequence[str], *, open_schema: bool = False) -> None:
        """Raise `FieldMappingError` for stored fields the mapping names that are not `available`.

        `open_schema` (dynamic fields) accepts any name: the collection cannot say what it lacks.
        """
        if open_schema:
            return
        missing = [f"field {name!r}" for name in self.mapping.stored_fields() if name not in available]
        if missing:
            raise FieldMappingError(self.name, self.collection, missing, sorted(available))

    def pick_vector(
        self, kind: str, available: Sequence[str], wanted: str | None, attribute: str = "dense_vector"
    ) -> str | None:
        """The vector the mapping names (`FieldMappingError` when it is not `available`), else the only one, else None.

        Several vectors and none named raise ValueError asking for `FieldMapping.<attribute>`.
        """
        if wanted is not None:
            if wanted not in available:
                names = [f"{kind} {n!r}" for n in available]
                raise FieldMappingError(self.name, self.collection, [f"{kind} {wanted!r}"], names)
            return wanted
        if len(available) > 1:
            raise ValueError(
                f"{self.name} collection {self.collection!r} has several {kind}s ({', '.join(map(repr, available))}); "
                f"name one in FieldMapping.{attribute}"
            )
        return available[0] if available else None

    def engine_call(self, operation: str, errors: tuple[type[BaseException], ...]) -> contextlib.AbstractContextManager:
        """Re-raise the engine client's `errors` as `EngineError(engine, operation, message)`."""
        return engine_errors(self.name, f"{operation} on {self.collection!r}", errors)


@contextlib.contextmanager
def engine_errors(engine: str, operation: str, errors: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Re-raise `errors` raised inside the block as `EngineError(engine, operation, message)`."""
    try:
        yield
    except ConnectorError:
        raise
    except errors as exc:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise EngineError(engine, operation, str(text).strip()) from exc


@dataclass
class Document:
    """A document for the indexing helpers.

    Attributes:
        id: document id (int or str).
        text: its text (indexed for BM25 and embedded together with the image).
        image: an image reference (URL, data: URI or media-root path), a list of them, or None.
        fields: extra stored fields (filterable; ints, floats, bools and strings).
    """

    id: str | int
    text: str = ""
    image: str | Sequence[str] | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def images(self) -> list[str]:
        if self.image is None:
            return []
        return [self.image] if isinstance(self.image, str) else list(self.image)
