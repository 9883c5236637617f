"""Online experiments in `search_and_rerank()`: arms are ranking configurations, served as A/B or interleaved.

    from connectors import Arm, Experiment, search_and_rerank
    from sidecar.experiments import ExperimentLog, SqliteStore, record_event

    log = ExperimentLog(SqliteStore("experiments.db"))
    experiment = Experiment("rerank-v1", [Arm("first_stage", rerank=False), Arm("reranked")], log=log)
    hits = search_and_rerank(products, "red shoes", rerank_client=sidecar, experiment=experiment, user_id="u42")
    hits.query_id, [(h.rank, h.id, h.arm) for h in hits]
    record_event(log, "click", hits.query_id, object_id=hits[1].id, position=hits[1].rank)

An A/B experiment serves each user one arm (sticky, by a hash of the user or session id); an interleaved one
merges every arm's ranking into one list whose hits say which arm contributed them. The served list is logged
as a UBI query record; clicks on it decide which arm won (`rerank-sidecar experiment report`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.experiments.design import Design, ExperimentPlan
from sidecar.experiments.errors import ExperimentError
from sidecar.experiments.log import ExperimentLog, ExperimentLogFull
from sidecar.experiments.records import new_query_id

log = logging.getLogger("connectors")


@dataclass(frozen=True)
class Arm:
    """One ranking configuration. Fields left None take the `search_and_rerank()` call's own value.

    Args:
        name: the arm's name in the log and the report.
        rerank: False serves the first stage's order (no sidecar call).
        rerank_client: another sidecar for this arm (e.g. one serving a fine-tuned adapter or another model).
        instruction: another reranker instruction.
        top_k: another number of first-stage candidates.
        mode: another first-stage mode ("dense", "bm25", "hybrid").
    """

    name: str
    rerank: bool = True
    rerank_client: Any = None
    instruction: str | None = None
    top_k: int | None = None
    mode: str | None = None


class ExperimentResult(list):
    """The served hits (a list of `RerankedHit`, each with `.arm` and `.rank` = served position) plus
    `query_id` (log events against it), `experiment`, and `arm` (A/B: the user's arm; None when interleaved)."""

    def __init__(self, hits: Sequence[Any], *, query_id: str, experiment: str, arm: str | None) -> None:
        super().__init__(hits)
        self.query_id, self.experiment, self.arm = query_id, experiment, arm


class Experiment:
    """An A/B or interleaving experiment over `arms`, for the `experiment=` argument of `search_and_rerank()`.

    Args:
        name: the experiment's name in the log.
        arms: `Arm`s (at least two for interleaving, names unique).
        design: "interleave" (default) or "ab".
        method: interleaving method: "team_draft" (default; more than two arms multileave) or "balanced".
        weights: A/B traffic split, one weight per arm (default equal).
        salt: A/B hash salt (default: the name); a new salt reshuffles users.
        log: where served lists are logged (`sidecar.experiments.ExperimentLog`); None logs nothing.
        hash_user_ids: log user ids hashed with the salt (default) instead of as given.
        store_query_text: log the query text as UBI's user_query (default); False logs "".
        application: UBI `application` of the logged queries.
    """

    def __init__(
        self,
        name: str,
        arms: Sequence[Arm],
        *,
        design: Design = "interleave",
        method: str = "team_draft",
        weights: Sequence[float] | None = None,
        salt: str | None = None,
        log: ExperimentLog | None = None,
        hash_user_ids: bool = True,
        store_query_text: bool = True,
        application: str | None = None,
    ) -> None:
        arms = list(arms)
        for i, arm in enumerate(arms):
            if not isinstance(arm, Arm):
                raise ExperimentError(f"arms[{i}] is a {type(arm).__name__}; use connectors.Arm")
            if arm.top_k is not None and arm.top_k < 1:
                raise ExperimentError(f"arm {arm.name!r}: top_k must be at least 1")
        self.plan = ExperimentPlan(
            name=name,
            arms=tuple(a.name for a in arms),
            design=design,
            method=method,
            weights=None if weights is None else tuple(weights),
            salt=salt,
            hash_user_ids=hash_user_ids,
            store_query_text=store_query_text,
        )
        self.arms = {a.name: a for a in arms}
        self.log = log
        self.application = application

    @property
    def name(self) -> str:
        return self.plan.name

    def arms_for(self, user_id: str | None) -> list[Arm]:
        """The arms to run for one query: the user's one (A/B) or all of them (interleaving)."""
        if self.plan.design == "ab":
            if not user_id:
                raise ValueError("an A/B experiment needs user_id= or session_id= to assign the user an arm")
            return [self.arms[self.plan.assign(user_id)]]
        return list(self.arms.values())

    def serve(
        self, ranked: Mapping[str, list[Any]], *, top_n: int | None, user_query: str, user_id: str | None
    ) -> ExperimentResult:
        """The served list from each run arm's full ranking, logged (without waiting) when the experiment has a log."""
        if self.plan.design == "ab":
            ((arm, hits),) = ranked.items()
            shown = [dataclasses.replace(h, arm=arm) for h in (hits[:top_n] if top_n else hits)]
            record = self.plan.query_record(
                user_query=user_query, hit_ids_served=[str(h.id) for h in shown], user_id=user_id, arm=arm,
                application=self.application,
            )  # fmt: skip
        else:
            by_arm = {arm: {str(h.id): h for h in hits} for arm, hits in ranked.items()}
            query_id = new_query_id()
            served = self.plan.merge({arm: list(hits) for arm, hits in by_arm.items()}, query_id, top_n or 10**9)
            shown = [
                dataclasses.replace(by_arm[team][hit_id], rank=position, arm=team)
                for position, (hit_id, team) in enumerate(zip(served.hit_ids, served.teams), start=1)
            ]
            record = self.plan.query_record(
                user_query=user_query, hit_ids_served=served.hit_ids, user_id=user_id, served=served,
                query_id=query_id, application=self.application,
            )  # fmt: skip
            arm = None
        shown = [dataclasses.replace(h, rank=position) for position, h in enumerate(shown, start=1)]
        if self.log is not None:
            try:
                self.log.log_query(record)
            except ExperimentLogFull as exc:  # the results still go out; the log says why it has a gap
                log.warning("experiment %s: served list not logged: %s", self.name, exc)
        return ExperimentResult(shown, query_id=record.query_id, experiment=self.name, arm=arm)
