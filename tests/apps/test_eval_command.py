"""`rerank-sidecar eval` end to end against a real sidecar: run files and an engine (Qdrant local mode) as
first stages, the metrics against hand-computed values and the library's own, outputs, resuming, --compare."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import ir_measures
import pytest

from sidecar.apps.eval.runfile import read_run
from sidecar.cli import main as cli_main
from tests.apps.conftest import CORPUS, FIRST_RUN, QUERIES


def run_eval(*args: object) -> int:
    try:
        cli_main(["eval", "--no-progress", *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def results_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def metrics_of(out: Path) -> dict[str, dict[str, dict[str, float]]]:
    return {s: {stage: v["metrics"] for stage, v in stages.items()} for s, stages in results_of(out)["systems"].items()}


@pytest.fixture(scope="module")
def run_file_eval(eval_sidecar, judged_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "first"
    assert run_eval("--sidecar", eval_sidecar.target, "--beir", judged_dir, "--run", judged_dir / "first.run",
                    "--out", out, "--k", "1,3,10") == 0  # fmt: skip
    return out


def test_first_stage_metrics_are_the_hand_computed_ones(run_file_eval):
    first = metrics_of(run_file_eval)["first"]["first_stage"]
    ndcg3_q1 = (2 / math.log2(3)) / (2 + 1 / math.log2(3))  # gain = relevance, as trec_eval computes it
    ndcg3_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    expected = {"MRR@10": (0.5 + 1 + 0 + 1) / 4, "P@1": 0.5, "P@3": (1 / 3 + 2 / 3 + 0 + 1 / 3) / 4,
                "R@3": (0.5 + 1 + 0 + 1) / 4, "nDCG@3": (ndcg3_q1 + ndcg3_q2 + 0 + 1) / 4}  # fmt: skip
    for name, value in expected.items():
        assert first[name] == pytest.approx(value, abs=1e-12), name
    assert results_of(run_file_eval)["queries"] == 4  # q5 has no judgement


def test_written_runs_round_trip_and_score_as_the_library_scores_them(run_file_eval, judged_dir):
    qrels = list(ir_measures.read_trec_qrels(_trec_qrels(judged_dir)))
    written = {stage: run_file_eval / "runs" / f"first.{stage}.run" for stage in ("first-stage", "reranked")}
    assert read_run(written["first-stage"]) == {q: r for q, r in read_run(judged_dir / "first.run").items()}
    reported = metrics_of(run_file_eval)["first"]
    for stage, path in written.items():
        library = ir_measures.calc_aggregate(
            [ir_measures.parse_measure(m) for m in ("nDCG@10", "RR@10", "R@3", "P@3")],
            qrels,
            list(ir_measures.read_trec_run(str(path))),
        )
        ours = reported[stage.replace("-", "_")]
        assert {str(k): v for k, v in library.items()} == pytest.approx(
            {"nDCG@10": ours["nDCG@10"], "RR@10": ours["MRR@10"], "R@3": ours["R@3"], "P@3": ours["P@3"]}, abs=1e-12
        )


def test_reranked_order_is_the_sidecar_s_own(run_file_eval, eval_sidecar):
    from sidecar.client import RerankerClient

    corpus = {d["_id"]: d for d in CORPUS}
    reranked = read_run(run_file_eval / "runs" / "first.reranked.run")
    query = next(q for q in QUERIES if q["_id"] == "q3")  # text + image query
    documents = [
        {"id": d, "text": f"{corpus[d]['title']}\n{corpus[d]['text']}", "images": corpus[d].get("images", [])}
        for d in FIRST_RUN["q3"]
    ]
    with RerankerClient(eval_sidecar.target) as client:  # one document per call: no batching shared with eval's
        logits = [
            client.rerank({"text": query["text"], "images": query["images"]}, [d]).results[0].logit for d in documents
        ]
    expected = sorted(zip(FIRST_RUN["q3"], logits), key=lambda pair: -pair[1])
    assert [d for d, _ in reranked["q3"]] == [d for d, _ in expected]
    assert [s for _, s in reranked["q3"]] == pytest.approx([s for _, s in expected], abs=1e-4)


def test_outputs_table_json_runs_and_plot(run_file_eval):
    table = (run_file_eval / "results.md").read_text()
    assert "| first → reranked |" in table and "nDCG@10" in table and "p=" in table
    results = results_of(run_file_eval)
    assert results["model"]["name"] and results["model"]["adapter"] == ""
    reranked = results["systems"]["first"]["reranked"]
    assert set(reranked["per_query"]["nDCG@10"]) == {"q1", "q2", "q3", "q4"}
    assert reranked["latency_ms"]["n"] == 4 and results["systems"]["first"]["first_stage"]["latency_ms"] is None
    assert (run_file_eval / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_evaluation_resumes_and_a_different_one_is_refused(
    run_file_eval, eval_sidecar, judged_dir, tmp_path, capsys
):
    out = tmp_path / "resumed"
    shutil.copytree(run_file_eval, out)
    journal = (out / "journal.jsonl").read_text().splitlines()
    (out / "journal.jsonl").write_text("\n".join(journal[:2]) + "\n" + journal[2][:20])  # stopped mid-write
    args = ["--sidecar", eval_sidecar.target, "--beir", judged_dir, "--run", judged_dir / "first.run", "--k", "1,3,10"]
    assert run_eval(*args, "--out", out) == 0
    assert "resuming, 2 of 4 queries already done" in capsys.readouterr().err
    lines = (out / "journal.jsonl").read_text().splitlines()
    assert lines[:2] == journal[:2] and len([line for line in lines if line.endswith("}")]) == 4
    assert metrics_of(out) == metrics_of(run_file_eval)
    assert run_eval(*args, "--out", out, "--depth", "2") == 2
    assert "holds a different evaluation" in capsys.readouterr().err


def test_compare_puts_earlier_evaluations_in_one_table(run_file_eval, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run_file_eval, other)
    results = results_of(other) | {"label": "other model"}
    (other / "results.json").write_text(json.dumps(results))
    assert run_eval("--compare", run_file_eval, other, "--out", tmp_path / "cmp") == 0
    table = capsys.readouterr().out
    assert "| other model | first → reranked |" in table and "(+0.0000, p=1)" in table
    assert (tmp_path / "cmp" / "compare.md").read_text() == table


def test_bad_inputs_are_named(eval_sidecar, judged_dir, tmp_path, capsys):
    common = ["--sidecar", eval_sidecar.target, "--out", tmp_path / "x"]
    assert run_eval(*common, "--queries", judged_dir / "queries.jsonl", "--qrels", judged_dir / "qrels" / "test.tsv",
                    "--run", judged_dir / "first.run") == 2  # fmt: skip
    assert "--run needs the documents' text" in capsys.readouterr().err
    broken = tmp_path / "broken.run"
    broken.write_text("q1 Q0 d1 1 0.5 x\nq1 Q0 d2 oops 0.4 x\n")
    assert run_eval(*common, "--beir", judged_dir, "--run", broken) == 2
    assert f"{broken}:2: rank and score must be numbers" in capsys.readouterr().err


def _trec_qrels(judged_dir: Path) -> str:
    rows = (judged_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]
    return "".join(f"{q} 0 {d} {r}\n" for q, d, r in (row.split("\t") for row in rows))


def test_an_engine_first_stage_and_its_run_file_give_the_same_table(eval_sidecar, judged_dir, tmp_path):
    """Qdrant local mode (bm25 and dense) as the first stage, then the run files it wrote as the first stage."""
    from qdrant_client import QdrantClient

    from connectors import Document
    from connectors.qdrant import index_documents
    from sidecar.client import RerankerClient

    documents = [Document(d["_id"], d["text"], image=d.get("images"), fields={"title": d["title"]}) for d in CORPUS]
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    with RerankerClient(eval_sidecar.target) as client:
        index_documents(qdrant, "judged", documents, embed_client=client, embed_batch_size=3, progress=False)
    qdrant.close()  # local mode allows one client per directory: eval opens its own
    engine = tmp_path / "engine"
    assert run_eval("--sidecar", eval_sidecar.target, "--beir", judged_dir, "--qdrant", tmp_path / "qdrant",
                    "--collection", "judged", "--id-field", "doc_id", "--text-field", "title", "--text-field", "text",
                    "--image-field", "image", "--mode", "bm25", "--mode", "dense", "--out", engine) == 0  # fmt: skip
    runs = []
    for mode in ("bm25", "dense"):
        runs.append(tmp_path / f"{mode}.run")
        shutil.copy(engine / "runs" / f"{mode}.first-stage.run", runs[-1])
    from_files = tmp_path / "from-files"
    assert run_eval("--sidecar", eval_sidecar.target, "--beir", judged_dir, "--run", runs[0], "--run", runs[1],
                    "--out", from_files) == 0  # fmt: skip
    assert metrics_of(engine) == metrics_of(from_files)
    assert list(metrics_of(engine)) == ["bm25", "dense"]
    latency = results_of(engine)["systems"]["dense"]["first_stage"]["latency_ms"]
    assert latency["n"] == 4 and latency["p50"] > 0  # the engine's search (and the query embedding) was timed
    strip = lambda out: [line.rsplit("|", 2)[0] for line in (out / "results.md").read_text().splitlines()[:6]]  # noqa: E731
    assert strip(engine) == strip(from_files)  # the same table, but for the latency column
