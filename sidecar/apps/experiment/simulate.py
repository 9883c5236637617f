"""Simulated users: position-biased click models clicking on served lists, by the judged relevance of each hit.

- pbm (position-based model): a hit at rank r is examined with probability 1 / r^eta and clicked when
  examined with its attractiveness;
- cascade: the user reads from the top, clicks an attractive hit, and after a click stops with `stop`
  probability (1.0 is the classic cascade model: one click at most).

Attractiveness by grade g (of the judged set's highest grade G): `noise + (1 - 2 noise) (2^g - 1) / (2^G - 1)`,
so an unjudged or non-relevant hit is still clicked now and then.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors import Arm, Experiment, search_and_rerank
from sidecar.apps.eval.first_stage import CandidateList, RunFileStage
from sidecar.apps.eval.judgements import JudgedSet
from sidecar.experiments.log import ExperimentLog, record_event

CLICK_MODELS = ("pbm", "cascade")


@dataclass(frozen=True)
class ClickModel:
    """A position-biased user (see the module docstring for the parameters)."""

    kind: str = "pbm"
    eta: float = 1.0
    noise: float = 0.05
    stop: float = 0.7
    max_grade: int = 1

    def __post_init__(self) -> None:
        if self.kind not in CLICK_MODELS:
            raise ValueError(f"unknown click model {self.kind!r}; use {' or '.join(CLICK_MODELS)}")
        if self.eta < 0 or not 0 <= self.noise < 0.5 or not 0 <= self.stop <= 1 or self.max_grade < 1:
            raise ValueError("click model: eta >= 0, 0 <= noise < 0.5, 0 <= stop <= 1")

    def attractiveness(self, grade: int) -> float:
        g = max(0, min(grade, self.max_grade))
        return self.noise + (1 - 2 * self.noise) * (2**g - 1) / (2**self.max_grade - 1)

    def clicks(self, grades: Sequence[int], rng: random.Random) -> list[int]:
        """1-based clicked positions on a list whose hits have `grades`."""
        clicked = []
        for rank, grade in enumerate(grades, start=1):
            if self.kind == "pbm":
                if rng.random() < rank**-self.eta and rng.random() < self.attractiveness(grade):
                    clicked.append(rank)
            elif rng.random() < self.attractiveness(grade):
                clicked.append(rank)
                if rng.random() < self.stop:
                    break
        return clicked


def simulate(
    judged: JudgedSet,
    stage: RunFileStage,
    rerank_client: Any,
    log: ExperimentLog,
    *,
    experiment: str,
    design: str = "interleave",
    method: str = "team_draft",
    control: bool = False,
    sessions: int = 1000,
    top_n: int = 10,
    click_model: ClickModel,
    seed: int = 0,
    impressions: bool = True,
    progress: bool = True,
    instruction: str | None = None,
    on_served: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Serve `sessions` queries drawn from the judged set through `search_and_rerank(experiment=...)` and click.

    Arms: "first_stage" (the run file's order) and "reranked"; with `control`, two identical reranked arms
    ("reranked" and "reranked_again": an A/A test that must not find a difference).
    """
    arms = [Arm("reranked"), Arm("reranked_again")] if control else [Arm("first_stage", rerank=False), Arm("reranked")]
    plan = Experiment(experiment, arms, design=design, method=method, log=log)  # type: ignore[arg-type]
    rng = random.Random(seed)
    queries = [q for q in judged.queries.values() if stage.rankings.get(q.id)]
    if not queries:
        raise ValueError("no judged query has first-stage candidates in the run file")
    counts = {"sessions": 0, "clicks": 0}
    bar = _bar(sessions, progress)
    for session in range(sessions):
        query = rng.choice(queries)
        hits = stage.candidates(query).hits
        served = search_and_rerank(
            CandidateList(hits, stage.mapping, stage.name), query.as_query(), top_k=len(hits), top_n=top_n,
            mode="dense", query_vector=(), rerank_client=rerank_client, instruction=instruction,
            experiment=plan, user_id=f"simulated-{rng.randrange(10**9)}",
        )  # fmt: skip
        grades = [judged.qrels.get(query.id, {}).get(str(h.id), 0) for h in served]
        session_id = f"session-{seed}-{session}"
        if impressions:
            for hit in served:
                record_event(log, "impression", served.query_id, object_id=str(hit.id), position=hit.rank,
                             session_id=session_id)  # fmt: skip
        for position in click_model.clicks(grades, rng):
            record_event(log, "click", served.query_id, object_id=str(served[position - 1].id), position=position,
                         session_id=session_id)  # fmt: skip
            counts["clicks"] += 1
        counts["sessions"] += 1
        bar.update(1)
        if on_served:
            on_served(session)
    bar.close()
    log.flush()
    return counts


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="simulated sessions", unit=" sessions", file=sys.stderr, mininterval=0.5)
