"""Fixtures for the eval and finetune commands: a small judged set on disk and a sidecar serving it.

The judged set is BEIR-shaped (queries.jsonl, corpus.jsonl, qrels/test.tsv) with solid-colour images
under its directory, which is also the sidecar's --media-root, plus a first-stage TREC run whose
metrics are easy to work out by hand.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ServerProcess

COLOURS = {"red": (220, 20, 20), "green": (20, 180, 20), "blue": (20, 20, 220), "yellow": (230, 230, 20)}


def colour_png(rgb: tuple[int, int, int], size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, "PNG")
    return buffer.getvalue()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# Documents: a title, a text and (for some) an image under images/.
CORPUS = [
    {"_id": "d1", "title": "Red kite", "text": "a red kite over the hills"},
    {"_id": "d2", "title": "Green field", "text": "a wide green field", "images": ["images/green.png"]},
    {"_id": "d3", "title": "Red apple", "text": "a crisp red apple", "images": ["images/red.png"]},
    {"_id": "d4", "title": "Blue sea", "text": "the blue sea at noon"},
    {"_id": "d5", "title": "Yellow taxi", "text": "a yellow taxi in the rain", "images": ["images/yellow.png"]},
    {"_id": "d6", "title": "Blue door", "text": "an old blue door", "images": ["images/blue.png"]},
]
QUERIES = [
    {"_id": "q1", "text": "red things"},
    {"_id": "q2", "text": "blue things"},
    {"_id": "q3", "text": "something like this", "images": ["images/yellow.png"]},
    {"_id": "q4", "text": "green"},
    {"_id": "q5", "text": "a query nobody judged"},
]
# q1: d1 (2), d3 (1); q2: d4, d6; q3: d5; q4: d2. q5 has no judgements and is not evaluated.
QRELS = [
    ("q1", "d1", 2),
    ("q1", "d3", 1),
    ("q1", "d2", 0),
    ("q2", "d4", 1),
    ("q2", "d6", 1),
    ("q3", "d5", 1),
    ("q4", "d2", 1),
]
# A first stage with hand-checkable metrics (see test_eval_command.py).
FIRST_RUN = {
    "q1": ["d2", "d1", "d4", "d3"],
    "q2": ["d6", "d5", "d4"],
    "q3": ["d1", "d2", "d3", "d4", "d6"],
    "q4": ["d2"],
}


@pytest.fixture(scope="session")
def judged_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("judged")
    for name, rgb in COLOURS.items():
        (root / "images").mkdir(exist_ok=True)
        (root / "images" / f"{name}.png").write_bytes(colour_png(rgb))
    write_jsonl(root / "corpus.jsonl", CORPUS)
    write_jsonl(root / "queries.jsonl", QUERIES)
    (root / "qrels").mkdir()
    rows = "".join(f"{q}\t{d}\t{r}\n" for q, d, r in QRELS)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    lines = [f"{q} Q0 {d} {i} {10 - i} first\n" for q, docs in FIRST_RUN.items() for i, d in enumerate(docs, 1)]
    (root / "first.run").write_text("".join(lines))
    return root


@pytest.fixture(scope="session")
def eval_sidecar(tiny_model_dir, embedding_model_dir, judged_dir, tmp_path_factory):
    """A sidecar with the tiny reranker and embedding model, resolving images under the judged set."""
    args = ["--model", str(tiny_model_dir), "--embedding-model", str(embedding_model_dir)]
    args += ["--media-root", str(judged_dir), "--max-documents", "3"]  # several rerank calls per query
    with ServerProcess(args, tmp_path_factory.mktemp("logs") / "eval-sidecar.log") as proc:
        yield proc
