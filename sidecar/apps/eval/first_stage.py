"""First stages under evaluation: an engine collection searched in one mode, or candidates from a TREC run file.

Either way a query's candidates end up as `connectors.Hit`s in first-stage order; the reranking step
then hands them to `connectors.search_and_rerank` through `CandidateList`, so engine candidates and
run-file candidates are reranked by the very code path an application runs.
"""

from __future__ import annotations

import base64
import mimetypes
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors import Connector, FieldMapping, Hit, SearchMode
from sidecar.apps.eval.judgements import Item
from sidecar.apps.eval.runfile import Ranking

TEXT_MODES = ("bm25", "hybrid")  # modes that need query text


class FirstStageError(Exception):
    """A first stage that cannot give a query's candidates (named with the query)."""


@dataclass
class Candidates:
    """A query's first-stage hits, best first, and what retrieving them cost (None: read from a file)."""

    hits: list[Hit]
    first_stage_ms: float | None


class CandidateList(Connector):
    """Hits retrieved beforehand, served as a connector's search result (every mode, no query vector needed)."""

    def __init__(self, hits: Sequence[Hit], mapping: FieldMapping, name: str) -> None:
        self.hits, self.mapping, self.collection = list(hits), mapping, name
        self.name = name

    @property
    def supported_modes(self) -> frozenset[SearchMode]:
        return frozenset(("dense", "bm25", "hybrid"))

    def search(
        self,
        query_text: str | None,
        query_vector: Sequence[float] | None,
        top_k: int,
        mode: SearchMode,
        filter: Any = None,
    ) -> list[Hit]:
        """The stored hits, at most `top_k` of them (the query is not looked at: they were retrieved for it)."""
        return self.hits[:top_k]


def inline_images(root: Path) -> Callable[[str], str]:
    """A reference rewriter: a relative path naming a file under `root` becomes a data: URI; others pass unchanged.

    It lets the evaluation send local images without giving the sidecar a --media-root.
    """
    base = root.resolve()

    def rewrite(ref: str) -> str:
        if ref.startswith(("http://", "https://", "data:")):
            return ref
        path = (base / ref.removeprefix("file://")).resolve()
        if not path.is_file() or not path.is_relative_to(base):
            return ref
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"

    return rewrite


class RunFileStage:
    """Candidates read from a TREC run file; each document's text and images come from the corpus."""

    def __init__(
        self, name: str, rankings: dict[str, Ranking], corpus: dict[str, Item], depth: int, image_uri=None
    ) -> None:
        self.name, self.rankings, self.corpus, self.depth = name, rankings, corpus, depth
        self.mapping = FieldMapping(text_fields=("text",), image_fields=("images",), image_uri=image_uri)
        missing = sorted({d for ranking in rankings.values() for d, _ in ranking[:depth] if d not in corpus})
        if missing:
            shown = ", ".join(repr(d) for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise FirstStageError(f"run {name!r}: {len(missing)} candidate documents are not in the corpus: {shown}")

    def candidates(self, query: Item) -> Candidates:
        hits = []
        for rank, (docid, score) in enumerate(self.rankings.get(query.id, [])[: self.depth], 1):
            doc = self.corpus[docid]
            fields = {"text": doc.text, "images": list(doc.images)}
            hits.append(Hit(docid, fields, list(doc.images), doc.text, score, rank))
        return Candidates(hits, None)


class EngineStage:
    """One engine collection searched in one mode; dense and hybrid embed the query through the sidecar."""

    def __init__(self, connector: Connector, mode: SearchMode, depth: int, embed_client: Any = None) -> None:
        connector.check_mode(mode)
        if mode != "bm25" and embed_client is None:
            raise FirstStageError(f"mode {mode!r} needs a sidecar with an embedding model")
        self.connector, self.mode, self.depth, self.embed_client = connector, mode, depth, embed_client
        self.name, self.mapping = mode, connector.mapping

    def candidates(self, query: Item) -> Candidates:
        """The engine's hits; a query without text gets none from the text modes."""
        if self.mode in TEXT_MODES and not query.text.strip():
            return Candidates([], 0.0)
        start = time.perf_counter()
        vector = None
        if self.mode != "bm25":
            import grpc

            from connectors.errors import sidecar_error

            dimensions = self.connector.vector_size or 0
            try:
                response = self.embed_client.embed([query.as_query()], dimensions=dimensions)
            except grpc.RpcError as exc:
                raise sidecar_error(exc, self.embed_client.target, "embed") from exc
            vector = list(response.embeddings[0].values)
        hits = self.connector.search(query.text or None, vector, self.depth, self.mode)
        return Candidates(hits, (time.perf_counter() - start) * 1000)
