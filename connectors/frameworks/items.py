"""Framework documents -> sidecar items: their text plus the images their metadata names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ImageRef = str | bytes | Path


def image_refs(value: Any, where: str) -> list[ImageRef]:
    """A metadata value as image references: one reference or a list of them (None: no image).

    A string is a reference the sidecar resolves (an http(s) URL, a `data:` URI or a path under
    its `--media-root`); bytes are an encoded image; a `Path` is a file read here and sent.
    """
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for ref in values:
        if not isinstance(ref, (str, bytes, Path)):
            raise TypeError(f"{where}: an image must be a str, bytes or Path, not {type(ref).__name__}")
    return values


def sidecar_item(
    text: str, metadata: Mapping[str, Any], image_key: str | None, where: str, extra: Iterable[ImageRef] = ()
) -> dict:
    """The item the sidecar scores for one document: `text` and the images under `metadata[image_key]`."""
    images = [*extra, *(image_refs(metadata.get(image_key), f"{where}.{image_key}") if image_key else [])]
    return {"text": text or "", "images": images}


def resolve_client(client: Any, target: str, asynchronous: bool) -> Any:
    """The given client, or one to `target` (sidecar.client's defaults: retries, deadlines)."""
    if client is not None:
        return client
    from sidecar.client import AsyncRerankerClient, RerankerClient

    return AsyncRerankerClient(target) if asynchronous else RerankerClient(target)
