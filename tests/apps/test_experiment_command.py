"""`rerank-sidecar experiment simulate|report` end to end: simulated users on the eval tests' judged set click on
interleaved lists served by a real sidecar, logged in the embedded store and in OpenSearch's UBI indexes.

The first stage here is deliberately poor (each query's judged-relevant documents last), so the reranked arm has
the higher nDCG by construction of the setup — the test measures that first, then checks that position-biased
users find it, and that two identical arms are not called different.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.cli import main as cli_main
from tests.apps.conftest import CORPUS, QRELS
from tests.connectors.engines_fixtures import opensearch_node  # noqa: F401 - the real node

SESSIONS = "400"


def run_cli(*args: object) -> int:
    try:
        cli_main(["experiment", *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def poor_run(judged_dir: Path) -> Path:
    """Every corpus document per judged query, the relevant ones last (best grade last of all)."""
    grades = {(q, d): g for q, d, g in QRELS}
    lines = []
    for qid in sorted({q for q, _, _ in QRELS}):
        docs = sorted((d["_id"] for d in CORPUS), key=lambda d: (grades.get((qid, d), 0), d))
        lines += [f"{qid} Q0 {d} {i} {100 - i} poor\n" for i, d in enumerate(docs, 1)]
    path = judged_dir / "poor.run"
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def ndcg(eval_sidecar, judged_dir, poor_run, tmp_path_factory) -> dict[str, float]:
    """nDCG@10 of the two arms on this setup, as `eval` measures them."""
    out = tmp_path_factory.mktemp("eval-poor")
    assert cli_main_code(["eval", "--no-progress", "--sidecar", eval_sidecar.target, "--beir", judged_dir,
                          "--run", poor_run, "--out", out]) == 0  # fmt: skip
    stages = json.loads((out / "results.json").read_text())["systems"]["poor"]
    return {stage: stages[stage]["metrics"]["nDCG@10"] for stage in ("first_stage", "reranked")}


def cli_main_code(args: list[object]) -> int:
    try:
        cli_main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def simulate(store: list[str], sidecar, judged_dir: Path, run: Path, out: Path, *extra: str) -> dict:
    code = run_cli("simulate", *store, "--sidecar", sidecar.target, "--beir", judged_dir, "--run", run,
                   "--sessions", SESSIONS, "--no-progress", "--out", out, *extra)  # fmt: skip
    assert code == 0
    return json.loads((out / "results.json").read_text())


def test_reranking_has_the_higher_ndcg_in_this_setup(ndcg) -> None:
    assert ndcg["reranked"] > ndcg["first_stage"] + 0.1, ndcg


@pytest.mark.parametrize("model", ["pbm", "cascade"])
def test_users_prefer_the_reranked_arm_embedded_store(model, ndcg, eval_sidecar, judged_dir, poor_run, tmp_path):
    report = simulate(["--store", f"sqlite:{tmp_path / 'log.db'}"], eval_sidecar, judged_dir, poor_run,
                      tmp_path / "out", "--click-model", model, "--experiment", f"sim-{model}")  # fmt: skip
    (pair,) = report["pairs"]
    assert pair["arms"] == ["first_stage", "reranked"] and report["queries"] == int(SESSIONS)
    assert pair["winner"] == "reranked" and pair["p_value"] < 0.05, pair
    assert pair["wins"] < pair["losses"] and pair["significant_after"] is not None
    assert (tmp_path / "out" / "plot.png").stat().st_size > 1000
    assert "**reranked wins**" in (tmp_path / "out" / "results.md").read_text()
    again = run_cli("report", "--store", f"sqlite:{tmp_path / 'log.db'}", "--experiment", f"sim-{model}",
                    "--no-progress", "--out", tmp_path / "again")  # fmt: skip
    assert again == 0 and json.loads((tmp_path / "again" / "results.json").read_text())["pairs"] == report["pairs"]


def test_identical_arms_are_not_called_different(eval_sidecar, judged_dir, poor_run, tmp_path) -> None:
    for seed in ("1", "2"):
        report = simulate(["--store", f"sqlite:{tmp_path / 'log.db'}"], eval_sidecar, judged_dir, poor_run,
                          tmp_path / seed, "--control", "--seed", seed, "--experiment", f"aa-{seed}")  # fmt: skip
        (pair,) = report["pairs"]
        assert pair["arms"] == ["reranked", "reranked_again"]
        assert pair["winner"] is None and pair["p_value"] >= 0.05, pair


def test_the_same_on_opensearch_ubi_indexes(opensearch_node, ndcg, eval_sidecar, judged_dir, poor_run, tmp_path):  # noqa: F811
    from opensearchpy import OpenSearch

    client = OpenSearch(opensearch_node.url)
    for index in ("ubi_queries", "ubi_events"):  # the test node's UBI indexes, made anew with the UBI mappings
        client.indices.delete(index=index, ignore_unavailable=True)
    name = "sim-opensearch"
    report = simulate(["--opensearch", opensearch_node.url], eval_sidecar, judged_dir, poor_run, tmp_path / "out",
                      "--experiment", name)  # fmt: skip
    (pair,) = report["pairs"]
    assert pair["winner"] == "reranked" and pair["p_value"] < 0.05, pair
    assert report["store"] == "opensearch:ubi_queries,ubi_events"
    assert client.count(index="ubi_queries")["count"] == int(SESSIONS)
    assert client.count(index="ubi_events")["count"] > int(SESSIONS)  # impressions and clicks
    hit = client.search(index="ubi_queries", body={"query": {"term": {"query_attributes.experiment": name}}, "size": 1})
    doc = hit["hits"]["hits"][0]["_source"]
    assert len(doc["query_attributes"]["teams"]) == len(doc["query_response_hit_ids"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "--experiment", "x"], "give exactly one of --store"),
        (["report", "--store", "sqlite:{tmp}/empty.db", "--experiment", "nothing"], "no queries of experiment"),
        (["report", "--store", "mysql://x", "--experiment", "x"], "unknown store"),
    ],
)
def test_bad_report_arguments_are_clear(args, message, tmp_path, capsys) -> None:
    assert run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    assert message in capsys.readouterr().err
