"""The eval command's parts without a server: judged-set and run-file readers, metrics, significance,
and the finetune data readers; and that none of it loads with the connectors or the CLI's flags."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from scipy import stats

from sidecar.apps.eval.judgements import JudgementsError, load_judged_set, read_items, read_qrels
from sidecar.apps.eval.metrics import paired_p_value, per_query
from sidecar.apps.eval.runfile import RunFileError, read_run, write_run
from sidecar.apps.finetune.data import DataError, judged_set, read_groups, split


def test_connectors_and_the_cli_flags_load_no_evaluation_or_training_library():
    code = (
        "import sys, connectors, sidecar.cli\n"
        "sidecar.cli.build_parser()\n"
        "heavy = ('ir_measures', 'scipy', 'matplotlib', 'peft', 'torch', 'transformers')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""


def test_qrels_in_trec_and_beir_form(tmp_path):
    (tmp_path / "a.qrels").write_text("q1 0 d1 2\nq1 0 d2 0\n\nq2 Q0 d3 1\n")
    (tmp_path / "b.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td3\t1\n")
    assert (
        read_qrels(tmp_path / "a.qrels")
        == read_qrels(tmp_path / "b.tsv")
        == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    )
    (tmp_path / "c.qrels").write_text("q1 0 d1 2\nq1 d1 2\n")
    with pytest.raises(JudgementsError, match=r"c.qrels:2: expected qid iteration docid relevance"):
        read_qrels(tmp_path / "c.qrels")


def test_queries_and_corpus_readers(tmp_path):
    (tmp_path / "q.tsv").write_text("q1\tred shoes\nq2\tblue\thats\n")
    assert [(i.id, i.text) for i in read_items(tmp_path / "q.tsv", with_title=False).values()] == [
        ("q1", "red shoes"), ("q2", "blue\thats")]  # fmt: skip
    (tmp_path / "c.jsonl").write_text(json.dumps({"_id": 7, "title": "T", "text": "body", "image": "a.png"}) + "\n")
    (doc,) = read_items(tmp_path / "c.jsonl", with_title=True).values()
    assert (doc.id, doc.text, doc.images) == ("7", "T\nbody", ("a.png",))
    (tmp_path / "bad.jsonl").write_text('{"_id": "x", "text": "ok"}\n{"_id": "y", "images": [3]}\n')
    with pytest.raises(JudgementsError, match=r"bad.jsonl:2: images must be a reference string"):
        read_items(tmp_path / "bad.jsonl", with_title=False)
    (tmp_path / "empty.jsonl").write_text('{"_id": "x"}\n')
    with pytest.raises(JudgementsError, match=r"empty.jsonl:1: 'x' has neither text nor images"):
        read_items(tmp_path / "empty.jsonl", with_title=False)


def test_only_queries_with_a_relevant_judgement_are_evaluated(tmp_path):
    (tmp_path / "q.tsv").write_text("q1\ta\nq2\tb\nq3\tc\n")
    (tmp_path / "r.qrels").write_text("q1 0 d1 1\nq2 0 d1 0\nq4 0 d1 1\n")
    judged = load_judged_set(tmp_path / "q.tsv", tmp_path / "r.qrels")
    assert list(judged.queries) == ["q1"] and judged.qrels == {"q1": {"d1": 1}}


def test_run_files_order_by_score_then_rank_and_round_trip(tmp_path):
    (tmp_path / "a.run").write_text("q1 Q0 d3 3 0.5 t\nq1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 0.5 t\nq2 Q0 x 1 -1e-9 t\n")
    rankings = read_run(tmp_path / "a.run")
    assert rankings == {"q1": [("d1", 0.9), ("d2", 0.5), ("d3", 0.5)], "q2": [("x", -1e-9)]}
    write_run(tmp_path / "b.run", rankings, "my run")
    assert read_run(tmp_path / "b.run") == rankings
    assert (tmp_path / "b.run").read_text().splitlines()[2] == "q1 Q0 d3 3 0.5 my_run"
    (tmp_path / "dup.run").write_text("q1 Q0 d1 1 0.9 t\nq1 Q0 d1 2 0.5 t\n")
    with pytest.raises(RunFileError, match=r"dup.run:2: document 'd1' appears twice for query 'q1'"):
        read_run(tmp_path / "dup.run")


def test_metrics_follow_the_given_order_even_through_tied_scores():
    qrels = {"q1": {"b": 1, "a": 0}, "q2": {"z": 1}}
    tied = {"q1": [("a", 1.0), ("b", 1.0)]}  # trec_eval alone would put b first (ties go by document id)
    values = per_query(qrels, tied, ["MRR@10", "P@1", "nDCG@2"])
    assert values["MRR@10"] == {"q1": 0.5, "q2": 0.0} and values["P@1"] == {"q1": 0.0, "q2": 0.0}
    assert values["nDCG@2"]["q1"] == pytest.approx(1 / 1.5849625007211562)


def test_paired_t_test_is_scipy_s():
    a, b = {"q1": 0.2, "q2": 0.5, "q3": 0.1, "q4": 0.7}, {"q1": 0.4, "q2": 0.5, "q3": 0.6, "q4": 0.8, "q9": 1.0}
    expected = stats.ttest_rel([0.4, 0.5, 0.6, 0.8], [0.2, 0.5, 0.1, 0.7]).pvalue
    assert paired_p_value(a, b) == pytest.approx(expected)
    assert paired_p_value(a, a) == 1.0 and paired_p_value({"q1": 0.1}, {"q1": 0.2}) is None


def test_training_records_in_both_shapes(tmp_path):
    lines = [
        {"query": "red", "document": "a red kite", "label": 1},
        {"query": {"text": "like this", "image": "q.png"}, "positive": {"images": ["p.png"]}, "negatives": ["x", "y"]},
        {"query": "red", "document": {"text": "sea", "images": ["s.png"]}, "label": False},
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    groups = read_groups(tmp_path / "t.jsonl")
    assert [(g.query.text, g.query.images, len(g.candidates)) for g in groups] == [
        ("red", (), 2), ("like this", ("q.png",), 3)]  # fmt: skip
    assert groups[0].positives == [0] and groups[0].negatives == [1] and groups[1].positives == [0]
    named, qrels = judged_set(groups)
    assert qrels == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 1, "d4": 0, "d5": 0}}
    assert split(groups * 5, 0.2, seed=3) == split(groups * 5, 0.2, seed=3)
    assert [len(part) for part in split(groups * 5, 0.2, seed=3)] == [8, 2]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"query": "q", "document": "d", "label": 0.5}, r"t.jsonl:1: label: label must be a whole number"),
        ({"query": "q", "document": "d", "label": -1}, r"label must be a whole number >= 0"),
        ({"query": "q", "positive": "p", "negatives": []}, r"t.jsonl:1: negatives must be a non-empty list"),
        ({"query": {"text": "", "images": []}, "document": "d", "label": 1}, r"t.jsonl:1: query: empty"),
        ({"query": "q", "document": {"txt": "d"}, "label": 1}, r"document: unknown keys \['txt'\]"),
        ({"query": "q", "doc": "d"}, r"give document and label, or positive and negatives"),
    ],
)
def test_bad_training_records_are_named(tmp_path, record, message):
    (tmp_path / "t.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message):
        read_groups(tmp_path / "t.jsonl")
