"""A judged task a tiny random model can learn: colour words against solid-colour images and colour names.

Each query is a colour word; its relevant document is an image of that colour or a text naming it,
and its negatives are images and texts of the other colours. Nothing but the pairing tells them apart.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.apps.conftest import COLOURS, colour_png


def document(colour: str, rng: random.Random, images: Path) -> dict | str:
    """An image of `colour` (one of a few sizes) or a short text naming it, half of the time each."""
    if rng.random() < 0.5:
        return f"a {colour} thing"
    size = rng.choice((64, 96))
    name = f"{colour}-{size}.png"
    if not (images / name).exists():
        (images / name).write_bytes(colour_png(COLOURS[colour], size))
    return {"images": [f"images/{name}"]}


def records(count: int, negatives: int, seed: int, root: Path) -> list[dict]:
    """`count` listwise records {query, positive, negatives} over the colours, images under root/images."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        colour = rng.choice(sorted(COLOURS))
        others = [c for c in sorted(COLOURS) if c != colour]
        out.append({
            "query": colour,
            "positive": document(colour, rng, root / "images"),
            "negatives": [document(rng.choice(others), rng, root / "images") for _ in range(negatives)],
        })  # fmt: skip
    return out


def write_task(root: Path, train: int = 160, heldout: int = 12) -> tuple[Path, Path]:
    """train.jsonl (1 positive + 3 negatives per query) and heldout.jsonl (1 + 7) under `root`."""
    paths = (root / "train.jsonl", root / "heldout.jsonl")
    for path, rows in zip(paths, (records(train, 3, 1, root), records(heldout, 7, 2, root))):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths
