"""A small mixed corpus (text-only and image documents) for the framework adapters, and the scores
the sidecar's own gRPC client gives its pairs: what every adapter must reproduce."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import png_bytes

QUERY = "a red bicycle"
TOP = 3
PNG = png_bytes(40, 30, seed=11)
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


@dataclass(frozen=True)
class Entry:
    """One document: its text, its metadata (images under "image"), and how the sidecar must see it."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def item(self) -> dict:
        images = self.metadata.get("image")
        images = images if isinstance(images, list) else [images] if images is not None else []
        return {"text": self.text, "images": images}


@pytest.fixture(scope="session")
def corpus(media_root) -> list[Entry]:
    return [
        Entry("A red bicycle leaning on a wall", {"sku": "b-1", "image": "red.png"}),  # a media-root path
        Entry("A blue car on the road", {"sku": "c-2", "image": ["nested/blue.png", DATA_URI]}),
        Entry("Fresh red apples", {"sku": "a-3"}),
        Entry("A cat on a sofa", {"sku": "s-4", "image": Path(media_root) / "red.png"}),  # read by the client
        Entry("Red running shoes", {"sku": "r-5", "image": PNG}),  # inline bytes
        Entry("The weather is sunny", {"sku": "w-6"}),
    ]


@pytest.fixture(scope="session")
def expected(sidecar, corpus) -> dict[str, float]:
    """sku -> the score the sidecar's gRPC client gives (QUERY, that document)."""
    response = sidecar.rerank(QUERY, [entry.item() for entry in corpus])
    return {corpus[r.index].metadata["sku"]: r.score for r in response.results}


def best(expected: dict[str, float], n: int = TOP) -> list[str]:
    return sorted(expected, key=lambda sku: -expected[sku])[:n]
