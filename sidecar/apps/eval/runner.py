"""The evaluation loop: for each first stage and each judged query, retrieve, rerank, record.

Every finished query is appended to a journal in the output directory before the next one starts,
so an interrupted evaluation (Ctrl-C, a crash, a sidecar restart) resumes where it stopped when the
same command runs again. The journal is tied to a fingerprint of the evaluation (inputs, first
stages, depth, instruction, the model being served): a different evaluation in the same directory
is refused rather than mixed in.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from connectors import ConnectorError, FieldMapping, search_and_rerank
from sidecar.apps.eval.first_stage import CandidateList, Candidates, FirstStageError
from sidecar.apps.eval.judgements import Item, JudgedSet
from sidecar.apps.eval.runfile import Ranking

JOURNAL = "journal.jsonl"
FINGERPRINT = "evaluation.json"


class EvalError(Exception):
    """An evaluation that cannot go on, explained in one message (exit status 2)."""


class FirstStage(Protocol):
    name: str
    mapping: FieldMapping

    def candidates(self, query: Item) -> Candidates: ...


@dataclass
class QueryOutcome:
    """One query through one first stage: both rankings (best first) and what each step took."""

    first_stage: Ranking
    reranked: Ranking  # scores are the reranker's logits (unbounded, no float32 saturation at 1.0)
    first_stage_ms: float | None
    rerank_ms: float


Outcomes = dict[str, dict[str, QueryOutcome]]  # first stage -> qid -> outcome


class Journal:
    """Finished queries of one evaluation, appended one JSON line at a time."""

    def __init__(self, directory: Path, fingerprint: dict[str, Any], *, overwrite: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path, stamp = directory / JOURNAL, directory / FINGERPRINT
        if overwrite:
            self.path.unlink(missing_ok=True)
        if self.path.exists() and stamp.exists() and json.loads(stamp.read_text()) != fingerprint:
            raise EvalError(
                f"{directory} holds a different evaluation (other inputs, first stages or model); "
                "pass --overwrite to start over there, or choose another --out"
            )
        stamp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")

    def load(self) -> Outcomes:
        """What earlier runs finished; a line cut short by a crash is ignored."""
        done: Outcomes = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                outcome = QueryOutcome(
                    [tuple(p) for p in record["first_stage"]],
                    [tuple(p) for p in record["reranked"]],
                    record["first_stage_ms"],
                    record["rerank_ms"],
                )
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            done.setdefault(record["system"], {})[record["qid"]] = outcome
        return done

    def add(self, system: str, qid: str, outcome: QueryOutcome) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"system": system, "qid": qid, **asdict(outcome)}) + "\n")


def rerank_candidates(
    stage: FirstStage, query: Item, candidates: Candidates, client: Any, instruction: str | None
) -> QueryOutcome:
    """Rerank a query's candidates through `search_and_rerank` and time it."""
    first = [(str(hit.id), hit.score) for hit in candidates.hits]
    start = time.perf_counter()
    reranked = search_and_rerank(
        CandidateList(candidates.hits, stage.mapping, stage.name),
        query.as_query(),
        top_k=max(len(candidates.hits), 1),
        top_n=None,
        mode="dense",
        query_vector=(),  # the candidates are retrieved already: nothing to embed
        instruction=instruction,
        rerank_client=client,
    )
    elapsed = (time.perf_counter() - start) * 1000
    return QueryOutcome(
        first, [(str(h.id), float(h.rerank_logit)) for h in reranked], candidates.first_stage_ms, elapsed
    )


def evaluate(
    stages: Sequence[FirstStage],
    judged: JudgedSet,
    client: Any,
    journal: Journal,
    *,
    instruction: str | None = None,
    progress: bool = True,
) -> Outcomes:
    """Run every judged query through every first stage and the reranker, resuming from the journal."""
    outcomes = journal.load()
    for stage in stages:
        done = outcomes.setdefault(stage.name, {})
        todo = [q for q in judged.queries.values() if q.id not in done]
        if done and todo:
            print(f"{stage.name}: resuming, {len(done)} of {len(judged.queries)} queries already done", file=sys.stderr)
        with _progress(len(judged.queries), len(done), stage.name, progress) as bar:
            for query in todo:
                try:
                    outcome = rerank_candidates(stage, query, stage.candidates(query), client, instruction)
                except (ConnectorError, FirstStageError, ValueError) as exc:
                    raise EvalError(f"{stage.name}: query {query.id!r}: {exc}") from exc
                journal.add(stage.name, query.id, outcome)
                done[query.id] = outcome
                bar.update(1)
    return outcomes


def _progress(total: int, initial: int, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="query", disable=not enabled, file=sys.stderr)
