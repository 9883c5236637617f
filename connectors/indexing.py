"""Shared parts of the per-engine indexing helpers: embedding documents through the sidecar, progress."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from connectors.base import Document
from connectors.errors import SidecarCallError, sidecar_error

T = TypeVar("T")


class Progress:
    """A tqdm bar when tqdm is installed, else one self-overwriting stderr line; silent when disabled."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self.total, self.desc, self.enabled, self.done = total, desc, enabled, 0
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=desc, unit="doc")
            except ImportError:
                self._line()

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            sys.stderr.write("\n")

    def _line(self) -> None:
        sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total}")
        sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    if size < 1:
        raise ValueError(f"batch_size must be at least 1; got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def embed_documents(
    client: Any,
    documents: Sequence[Document],
    *,
    batch_size: int = 16,
    dimensions: int = 0,
    instruction: str | None = None,
    image_uri: Callable[[str], str] | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> list[list[float]]:
    """Embed each document (its text and images together) with the sidecar's Embed RPC.

    Args:
        client: a `sidecar.client.RerankerClient` whose server has an embedding model.
        documents: what to embed; each needs text or an image.
        batch_size: inputs per Embed call (keep it at or under the server's --max-documents).
        dimensions: Matryoshka truncation; 0 keeps the model's dimension.
        instruction: Embed instruction (default: the model's).
        image_uri: rewrites stored image references into URIs the sidecar resolves.
        timeout: per-call deadline in seconds.
        progress: show a progress bar on stderr.

    Raises:
        ValueError: a document has neither text nor image.
        EmbedUnavailableError / SidecarCallError: an Embed call failed.
    """
    for doc in documents:
        if not doc.text and not doc.images():
            raise ValueError(f"document {doc.id!r} has neither text nor image to embed")
    vectors: list[list[float]] = []
    with Progress(len(documents), "embedding", progress) as bar:
        for chunk in batches(documents, batch_size):
            items = [
                {"text": d.text, "images": [image_uri(r) for r in d.images()] if image_uri else d.images()}
                for d in chunk
            ]
            try:
                response = client.embed(items, instruction=instruction, dimensions=dimensions, timeout=timeout)
            except grpc.RpcError as exc:
                raise sidecar_error(exc, client.target, "embed") from exc
            if len(response.embeddings) != len(chunk):
                raise SidecarCallError(
                    client.target, "embed", None, f"{len(chunk)} inputs gave {len(response.embeddings)} embeddings"
                )
            vectors += [list(e.values) for e in response.embeddings]
            bar.update(len(chunk))
    return vectors


def document_vectors(
    documents: Sequence[Document],
    vectors: Sequence[Sequence[float]] | None,
    embed_client: Any,
    **embed_options: Any,
) -> list[list[float]] | None:
    """Caller-given vectors (checked against the documents), or embeddings from `embed_client`, or None."""
    if vectors is not None:
        if len(vectors) != len(documents):
            raise ValueError(f"{len(documents)} documents but {len(vectors)} vectors")
        return [list(map(float, v)) for v in vectors]
    if embed_client is None:
        return None
    return embed_documents(embed_client, documents, **embed_options)


def extra_field_types(documents: Sequence[Document], reserved: set[str]) -> dict[str, type]:
    """Python type per extra field: bool, int, float or str (ints and floats together give float).

    Raises ValueError for a field named in `reserved` (the helpers' own fields) or holding other values.
    """
    seen: dict[str, set[type]] = {}
    for doc in documents:
        for name, value in doc.fields.items():
            seen.setdefault(name, set()).add(type(value))
    kinds: dict[str, type] = {}
    for name, types in seen.items():
        if name in reserved:
            raise ValueError(
                f"extra field {name!r} clashes with a field the index creates ({', '.join(sorted(reserved))})"
            )
        types = {float} if types == {int, float} else types
        if len(types) != 1 or next(iter(types)) not in (bool, int, float, str):
            raise ValueError(f"extra field {name!r} must hold only bool, int, float or str values; got {types}")
        kinds[name] = next(iter(types))
    return kinds
