"""The bundled catalogue of `rerank-sidecar demo`: real pictures with titles, descriptions and categories.

`catalogue.json` holds the indexed `items`, the `held_out` pictures used only as image queries, and the
demo's built-in `queries` (text ones, first stage hybrid; image ones, first stage dense); `ATTRIBUTION.md` lists each picture's author, licence and source package.
Only the standard library is needed to read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class CatalogueItem:
    """One picture; `file` is its path relative to `DATA_DIR` (the sidecar's media root in the demo)."""

    id: str
    title: str
    description: str
    category: str
    file: str
    licence: str
    author: str
    source: dict[str, Any] = field(default_factory=dict)  # package, version, registry, path, original_size

    @property
    def path(self) -> Path:
        return DATA_DIR / self.file

    @property
    def text(self) -> str:
        """What the demo indexes for BM25 and embedding, and sends to the reranker with the picture."""
        return f"{self.title}\n{self.description}\nCategory: {self.category}"


@dataclass(frozen=True)
class DemoQuery:
    """A text query (first stage: hybrid dense + BM25) or an image query (first stage: dense kNN)."""

    text: str = ""
    image: Path | None = None
    note: str = ""

    @property
    def mode(self) -> str:
        """The `search_and_rerank` first-stage mode: hybrid needs query text."""
        return "dense" if self.image else "hybrid"

    def describe(self) -> str:
        """The query line printed above its table."""
        if self.image is None:
            return f'text: "{self.text}"  (first stage: hybrid, dense kNN + BM25 fused by RRF)'
        shown = self.image.relative_to(DATA_DIR) if self.image.is_relative_to(DATA_DIR) else self.image
        return f"image: {shown}{f' ({self.note})' if self.note else ''}  (first stage: dense kNN, cosine)"


@dataclass(frozen=True)
class Catalogue:
    """Indexed items, held-out query pictures, and the demo's built-in queries."""

    items: list[CatalogueItem]
    held_out: list[CatalogueItem]
    queries: list[DemoQuery]


def load_catalogue(root: Path = DATA_DIR) -> Catalogue:
    """Read `catalogue.json` under `root`."""
    data = json.loads((root / "catalogue.json").read_text(encoding="utf-8"))
    names = [f.name for f in fields(CatalogueItem)]

    def items(key: str) -> list[CatalogueItem]:
        return [CatalogueItem(**{name: entry[name] for name in names}) for entry in data[key]]

    queries = [  # {"text": ...} or {"image": path under root, "note": ...}
        DemoQuery(q.get("text", ""), root / q["image"] if "image" in q else None, q.get("note", ""))
        for q in data["queries"]
    ]
    return Catalogue(items("items"), items("held_out"), queries)
