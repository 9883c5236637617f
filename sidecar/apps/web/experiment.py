"""The search page's experiment mode: first stage and reranked interleaved in one list, clicks logged, a live report.

    POST /api/search  {..., "experiment": true, "session_id": "..."}  -> {"query_id", "interleaved": [rows + arm]}
    POST /api/events  {"query_id", "action_name", "object_id", "position"} or {"events": [...]}  -> {"recorded": n}
    GET  /api/experiment                                            -> the report (`rerank-sidecar experiment report`)

Served lists and events go to the page's experiment log (SQLite, `--experiment-db`), the same UBI records an
application writes with `search_and_rerank(experiment=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors import Arm, Experiment
from sidecar.experiments.log import ExperimentLog
from sidecar.experiments.records import UbiEvent

NAME = "web-first-stage-vs-reranked"


@dataclass
class WebExperiment:
    """The page's one experiment: interleaving the first stage with the reranked order."""

    log: ExperimentLog
    name: str = NAME

    def __post_init__(self) -> None:
        arms = [Arm("first_stage", rerank=False), Arm("reranked")]
        self.experiment = Experiment(self.name, arms, log=self.log, application="rerank-sidecar web")

    def record(self, body: Any) -> int:
        """Log the page's events (ExperimentError names a bad one; none is written then); wait until durable."""
        documents = body.get("events") if isinstance(body, dict) and "events" in body else [body]
        if not isinstance(documents, list) or not documents:
            raise ValueError("events must be a non-empty list")
        events = []
        for i, doc in enumerate(documents):
            if not isinstance(doc, dict):
                raise ValueError(f"events[{i}] must be an object")
            flat = {k: v for k, v in doc.items() if k not in ("object_id", "position")}
            attributes = {}
            if doc.get("object_id") is not None:
                attributes["object"] = {"object_id": str(doc["object_id"])}
            if doc.get("position") is not None:
                attributes["position"] = {"ordinal": doc["position"]}
            events.append(UbiEvent.from_document({**flat, "event_attributes": attributes}, index=i))
        self.log.log_events(events).wait(30)
        return len(events)

    def report(self) -> dict[str, Any]:
        """The running report of the page's experiment (no queries yet: just the count)."""
        from sidecar.apps.experiment.report import build_report

        self.log.flush(30)
        try:
            return build_report(self.log.store, self.name)
        except ValueError:
            return {"experiment": self.name, "queries": 0, "events": 0, "pairs": []}
