"""Judged queries: queries (text and image references), relevance judgements and a document corpus.

Formats read:
- queries: JSONL, one `{"_id" | "id" | "qid", "text", "images" | "image"}` per line (BEIR's
  `queries.jsonl`, with image references as an extension), or TSV `qid<TAB>text` (MS MARCO style);
- judgements: TREC qrels (`qid 0 docid relevance`) or BEIR's `qrels/<split>.tsv`
  (a `query-id  corpus-id  score` header, then tab-separated rows);
- corpus (needed only when the candidates come from a run file): JSONL
  `{"_id" | "id", "title", "text", "images" | "image"}` (BEIR's `corpus.jsonl`), or TSV `docid<TAB>text`.

Image references are kept as written: URLs, data: URIs, or paths the sidecar resolves under its
`--media-root` (or that `eval --image-dir` inlines on the way).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ID_KEYS = ("_id", "id", "qid", "docid")


class JudgementsError(Exception):
    """A judged-set file that cannot be read, named with its line."""


@dataclass(frozen=True)
class Item:
    """A query or a document as the reranker sees it: text and image references."""

    id: str
    text: str = ""
    images: tuple[str, ...] = ()

    def as_query(self) -> dict[str, Any]:
        """The `connectors.search_and_rerank` query form."""
        return {"text": self.text, "images": list(self.images)}


@dataclass
class JudgedSet:
    """Queries with at least one relevant judgement, their judgements, and (optionally) the corpus."""

    queries: dict[str, Item]
    qrels: dict[str, dict[str, int]]
    corpus: dict[str, Item] = field(default_factory=dict)


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JudgementsError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise JudgementsError(f"{path}:{number}: expected a JSON object")
            yield number, record


def _record_id(record: dict[str, Any], where: str) -> str:
    for key in ID_KEYS:
        if record.get(key) not in (None, ""):
            return str(record[key])
    raise JudgementsError(f"{where}: no id (one of {', '.join(ID_KEYS)})")


def _images(record: dict[str, Any], where: str) -> tuple[str, ...]:
    value = record.get("images", record.get("image"))
    if value in (None, ""):
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise JudgementsError(f"{where}: images must be a reference string or a list of them")
    return tuple(values)


def _tsv(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if row and any(cell.strip() for cell in row):
                yield number, row


def read_items(path: Path, *, with_title: bool) -> dict[str, Item]:
    """Queries (`with_title=False`) or corpus documents from JSONL or TSV.

    A document's text is its title and text joined by a newline (empty parts skipped), as a
    `FieldMapping(text_fields=("title", "text"))` builds it from an engine's stored fields.
    """
    items: dict[str, Item] = {}
    if path.suffix == ".jsonl":
        for number, record in _jsonl(path):
            where = f"{path}:{number}"
            parts = [record.get("title"), record.get("text")] if with_title else [record.get("text")]
            text = "\n".join(str(p) for p in parts if p)
            item = Item(_record_id(record, where), text, _images(record, where))
            if not item.text and not item.images:
                raise JudgementsError(f"{where}: {item.id!r} has neither text nor images")
            items[item.id] = item
        return items
    for number, row in _tsv(path):
        if len(row) < 2:
            raise JudgementsError(f"{path}:{number}: expected id<TAB>text")
        items[row[0].strip()] = Item(row[0].strip(), "\t".join(row[1:]).strip())
    return items


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC qrels or a BEIR qrels TSV (told apart by BEIR's header) as {qid: {docid: relevance}}."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        lines = list(enumerate(handle, 1))
    beir = bool(lines) and lines[0][1].lower().startswith("query-id")
    for number, line in lines[1:] if beir else lines:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != (3 if beir else 4):
            expected = "query-id<TAB>corpus-id<TAB>score" if beir else "qid iteration docid relevance"
            raise JudgementsError(f"{path}:{number}: expected {expected}")
        qid, docid, relevance = (parts[0], parts[1], parts[2]) if beir else (parts[0], parts[2], parts[3])
        try:
            qrels.setdefault(qid, {})[docid] = int(float(relevance))
        except ValueError:
            raise JudgementsError(f"{path}:{number}: relevance {relevance!r} is not a number") from None
    return qrels


def load_judged_set(queries: Path, qrels: Path, corpus: Path | None = None) -> JudgedSet:
    """Read the files and keep the queries that have text or images and at least one relevant judgement.

    Raises:
        JudgementsError: a file is malformed, or no query is both present and judged relevant.
    """
    for path in (queries, qrels, corpus):
        if path is not None and not path.is_file():
            raise JudgementsError(f"no such file: {path}")
    all_queries = read_items(queries, with_title=False)
    judged = {qid: docs for qid, docs in read_qrels(qrels).items() if any(rel > 0 for rel in docs.values())}
    kept = {qid: all_queries[qid] for qid in judged if qid in all_queries}
    if not kept:
        raise JudgementsError(f"no query in {queries} has a relevant judgement in {qrels}")
    return JudgedSet(kept, {qid: judged[qid] for qid in kept}, read_items(corpus, with_title=True) if corpus else {})


def beir_paths(directory: Path, split: str) -> tuple[Path, Path, Path]:
    """(queries.jsonl, qrels/<split>.tsv, corpus.jsonl) of a BEIR dataset directory."""
    return directory / "queries.jsonl", directory / "qrels" / f"{split}.tsv", directory / "corpus.jsonl"


def write_items(path: Path, items: list[Item]) -> None:
    """Write queries or documents as BEIR-style JSONL (images included when there are any)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            record: dict[str, Any] = {"_id": item.id, "text": item.text}
            if item.images:
                record["images"] = list(item.images)
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_beir_qrels(path: Path, qrels: dict[str, dict[str, int]]) -> None:
    """Write qrels as a BEIR qrels TSV (with its header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{qid}\t{docid}\t{rel}\n" for qid, docs in qrels.items() for docid, rel in docs.items())
