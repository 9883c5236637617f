"""Experiments inside search_and_rerank on real engines and a real sidecar (scenarios collected by
test_shared_scenarios.py, so they run on every engine): interleaved and A/B, sync and async, logged in UBI shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import Arm, Experiment, ExperimentResult, asearch_and_rerank, search_and_rerank
from sidecar.experiments import log as experiment_log
from sidecar.experiments.store import SqliteStore
from tests.connectors.corpus import QUERY

ARMS = [Arm("first_stage", rerank=False), Arm("reranked")]


def _orders(products, sidecar) -> tuple[list, list]:
    first = search_and_rerank(products, QUERY, top_k=6, top_n=None, mode="bm25", rerank_client=sidecar)
    return sorted(first, key=lambda h: h.first_stage_rank), first


def _check_interleaved(result, first, reranked) -> None:
    assert isinstance(result, ExperimentResult) and result.query_id and result.arm is None
    assert [h.rank for h in result] == list(range(1, len(result) + 1))
    assert {h.arm for h in result} == {"first_stage", "reranked"}
    for arm, order in (("first_stage", first), ("reranked", reranked)):
        mine = [h.id for h in result if h.arm == arm]
        assert mine == [h.id for h in order if h.id in mine]  # each arm's hits in its own order
    by_id = {h.id: h for h in reranked}
    for hit in result:  # the same scores whichever arm served the hit; the first-stage arm has none
        assert hit.rerank_score == (None if hit.arm == "first_stage" else pytest.approx(by_id[hit.id].rerank_score))


def scenario_interleaved_experiment_merges_and_logs(products, sidecar, tmp_path: Path):
    first, reranked = _orders(products, sidecar)
    with experiment_log.ExperimentLog(SqliteStore(tmp_path / "log.db")) as log:
        experiment = Experiment("rerank-or-not", ARMS, log=log)
        result = search_and_rerank(products, QUERY, top_k=6, top_n=4, mode="bm25", rerank_client=sidecar,
                                   experiment=experiment, user_id="u1")  # fmt: skip
        assert len(result) == 4
        _check_interleaved(result, first, reranked)
        experiment_log.record_event(log, "click", result.query_id, object_id=str(result[1].id), position=2).wait(10)
    (logged,) = SqliteStore(tmp_path / "log.db").read_queries("rerank-or-not")
    assert logged.query_id == result.query_id and logged.query_response_hit_ids == tuple(str(h.id) for h in result)
    assert logged.query_attributes["teams"] == [h.arm for h in result] and logged.user_query == QUERY
    assert logged.client_id != "u1"  # hashed by default


def scenario_ab_experiment_serves_one_sticky_arm(products, sidecar):
    first, reranked = _orders(products, sidecar)
    experiment = Experiment("ab", ARMS, design="ab")
    arms = {}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        result = search_and_rerank(products, QUERY, top_k=6, top_n=3, mode="bm25", rerank_client=sidecar,
                                   experiment=experiment, session_id=user)  # fmt: skip
        again = search_and_rerank(products, QUERY, top_k=6, top_n=3, mode="bm25", rerank_client=sidecar,
                                  experiment=experiment, session_id=user)  # fmt: skip
        assert result.arm == again.arm and {h.arm for h in result} == {result.arm}
        expected = first if result.arm == "first_stage" else reranked
        assert [h.id for h in result] == [h.id for h in expected[:3]]
        arms[user] = result.arm
    assert set(arms.values()) == {"first_stage", "reranked"}
    with pytest.raises(ValueError, match="needs user_id= or session_id="):
        search_and_rerank(products, QUERY, mode="bm25", rerank_client=sidecar, experiment=experiment)


async def scenario_async_interleaved_experiment(products, sidecar, sidecar_server):
    from sidecar.client import AsyncRerankerClient

    first, reranked = _orders(products, sidecar)
    async with AsyncRerankerClient(sidecar_server.target, timeout=60, retries=0) as client:
        result = await asearch_and_rerank(products, QUERY, top_k=6, top_n=None, mode="bm25", rerank_client=client,
                                          experiment=Experiment("async", ARMS), user_id="u1")  # fmt: skip
    assert len(result) == len(first)
    _check_interleaved(result, first, reranked)
