"""TREC run files: `qid Q0 docid rank score tag`, one line per retrieved document.

A ranking is a list of (docid, score) pairs, best first. Reading orders each query's documents by
score, highest first, and keeps the rank column's order among equal scores; writing gives every
document its 1-based rank, so a written run reads back as the same rankings.
"""

from __future__ import annotations

import re
from pathlib import Path

Ranking = list[tuple[str, float]]
_TAG = re.compile(r"\s+")


class RunFileError(Exception):
    """A run file that cannot be read, named with its line."""


def read_run(path: Path) -> dict[str, Ranking]:
    """{qid: ranking} from a TREC run file."""
    if not path.is_file():
        raise RunFileError(f"no such run file: {path}")
    rows: dict[str, list[tuple[float, int, int, str]]] = {}
    seen: set[tuple[str, str]] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise RunFileError(f"{path}:{number}: expected 'qid Q0 docid rank score tag'")
            qid, _, docid, rank, score, _ = parts
            try:
                values = (float(score), int(rank))
            except ValueError:
                raise RunFileError(f"{path}:{number}: rank and score must be numbers") from None
            if (qid, docid) in seen:
                raise RunFileError(f"{path}:{number}: document {docid!r} appears twice for query {qid!r}")
            seen.add((qid, docid))
            rows.setdefault(qid, []).append((-values[0], values[1], number, docid))
    return {qid: [(docid, -neg) for neg, _, _, docid in sorted(found)] for qid, found in rows.items()}


def write_run(path: Path, rankings: dict[str, Ranking], tag: str) -> None:
    """Write rankings (each best first) as a TREC run; `tag` is the run's name (spaces become '_')."""
    tag = _TAG.sub("_", tag.strip()) or "run"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for qid, ranking in rankings.items():
            for rank, (docid, score) in enumerate(ranking, 1):
                handle.write(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")
