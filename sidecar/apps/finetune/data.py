"""Training data: JSONL records -> query groups, the held-out split, and that split as an eval judged set.

Two record shapes, mixed freely in one file:
- `{"query": Q, "document": D, "label": L}`: one judged pair; records with the same query (same text
  and images) form one group. `label` is a graded relevance >= 0 (0 = not relevant; true/false work).
- `{"query": Q, "positive": D, "negatives": [D, ...]}`: one group of its own, the positive relevant (1)
  and the negatives not (0).
Q and D are a string (text) or `{"text": ..., "images": [...]}` (`"image"` for one); image references
are URLs, data: URIs or paths relative to the media root.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.apps.eval.judgements import Item, beir_paths, write_beir_qrels, write_items
from sidecar.apps.eval.runfile import write_run


class DataError(Exception):
    """Training data or settings that cannot be used, explained in one message (exit status 2)."""


@dataclass
class Group:
    """One query and its judged candidates."""

    query: Item
    candidates: list[tuple[Item, int]]  # (document, relevance)

    @property
    def positives(self) -> list[int]:
        return [i for i, (_, label) in enumerate(self.candidates) if label > 0]

    @property
    def negatives(self) -> list[int]:
        return [i for i, (_, label) in enumerate(self.candidates) if label == 0]


def _side(value: Any, where: str) -> tuple[str, tuple[str, ...]]:
    """(text, image references) of a query or document field."""
    if isinstance(value, str):
        text, images = value, ()
    elif isinstance(value, dict):
        unknown = set(value) - {"text", "images", "image"}
        if unknown:
            raise DataError(f"{where}: unknown keys {sorted(unknown)}; use text and images")
        text = value.get("text") or ""
        raw = value.get("images", value.get("image")) or []
        images = (raw,) if isinstance(raw, str) else raw
        if (
            not isinstance(text, str)
            or not isinstance(images, list | tuple)
            or not all(isinstance(r, str) and r for r in images)
        ):
            raise DataError(f"{where}: text must be a string and images a list of reference strings")
        images = tuple(images)
    else:
        raise DataError(f"{where}: expected a string or {{text, images}}, got {type(value).__name__}")
    if not text.strip() and not images:
        raise DataError(f"{where}: empty (no text and no images)")
    return text, images


def _label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int | float) or value < 0 or value != int(value):
        raise DataError(f"{where}: label must be a whole number >= 0 (graded relevance), got {value!r}")
    return int(value)


def read_groups(path: Path) -> list[Group]:
    """Query groups from a training JSONL file, in order of first appearance."""
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    by_query: dict[tuple[str, tuple[str, ...]], Group] = {}
    groups: list[Group] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or "query" not in record:
                raise DataError(f"{where}: expected an object with a query")
            query = _side(record["query"], f"{where}: query")
            if "document" in record:
                document = Item("", *_side(record["document"], f"{where}: document"))
                label = _label(record.get("label"), f"{where}: label")
                if query not in by_query:
                    by_query[query] = Group(Item("", *query), [])
                    groups.append(by_query[query])
                by_query[query].candidates.append((document, label))
            elif "positive" in record:
                negatives = record.get("negatives")
                if not isinstance(negatives, list) or not negatives:
                    raise DataError(f"{where}: negatives must be a non-empty list")
                candidates = [(Item("", *_side(record["positive"], f"{where}: positive")), 1)]
                candidates += [(Item("", *_side(n, f"{where}: negatives[{i}]")), 0) for i, n in enumerate(negatives)]
                groups.append(Group(Item("", *query), candidates))
            else:
                raise DataError(f"{where}: give document and label, or positive and negatives")
    if not groups:
        raise DataError(f"{path}: no training records")
    return groups


def split(groups: list[Group], fraction: float, seed: int) -> tuple[list[Group], list[Group]]:
    """(train, held-out): a seeded random `fraction` of the groups held out (at least one, when there are 2+)."""
    if not 0 <= fraction < 1:
        raise DataError(f"--eval-fraction must be in [0, 1), got {fraction}")
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(fraction * len(groups)))] if fraction and len(groups) > 1 else [])
    return [g for i, g in enumerate(groups) if i not in held], [g for i, g in enumerate(groups) if i in held]


def judged_set(groups: list[Group]) -> tuple[list[Group], dict[str, dict[str, int]]]:
    """The groups with ids (q1.., and d1.. per distinct document) and their qrels."""
    doc_ids: dict[tuple[str, tuple[str, ...]], str] = {}
    named, qrels = [], {}
    for number, group in enumerate(groups, 1):
        qid = f"q{number}"
        candidates, judged = [], qrels.setdefault(qid, {})
        for doc, label in group.candidates:
            docid = doc_ids.setdefault((doc.text, doc.images), f"d{len(doc_ids) + 1}")
            if docid not in judged:  # a document listed twice for one query is ranked once
                candidates.append((Item(docid, doc.text, doc.images), label))
            judged[docid] = max(label, judged.get(docid, 0))
        named.append(Group(Item(qid, group.query.text, group.query.images), candidates))
    return named, qrels


def write_judged_set(directory: Path, groups: list[Group], qrels: dict[str, dict[str, int]]) -> None:
    """queries.jsonl, corpus.jsonl, qrels/test.tsv and candidates.run: what `rerank-sidecar eval --beir DIR
    --run DIR/candidates.run` reads to measure a served model on the same held-out queries."""
    queries, qrels_path, corpus = beir_paths(directory, "test")
    write_items(queries, [g.query for g in groups])
    write_items(corpus, list({doc.id: doc for g in groups for doc, _ in g.candidates}.values()))
    write_beir_qrels(qrels_path, qrels)
    candidates = {g.query.id: [(doc.id, float(-i)) for i, (doc, _) in enumerate(g.candidates)] for g in groups}
    write_run(directory / "candidates.run", candidates, "given-order")
