"""`rerank-sidecar eval` end to end against a real sidecar: run files and an engine (Qdrant local mode) as
first stages, the outputs, resuming, and --compare."""

from __future__ import annotations

import json
import math
from pathlib import Path

import ir_measures
import pytest

from sidecar.apps.eval.runfile import read_run
from sidecar.cli import main as cli_main


def run_eval(*args: str) -> int:
    try:
        cli_main(["eval", "--no-progress", *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def results_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_first_stage_metrics_are_the_hand_computed_ones(eval_sidecar, judged_dir, tmp_path):
    out = tmp_path / "out"
    assert run_eval("--sidecar", eval_sidecar.target, "--beir", judged_dir, "--run", judged_dir / "first.run",
                    "--out", out, "--k", "1,3,10") == 0  # fmt: skip
    first = results_of(out)["systems"]["first"]["first_stage"]["metrics"]
    ndcg3_q1 = (2 / math.log2(3)) / (2 + 1 / math.log2(3))  # gain = relevance, as trec_eval computes it
    ndcg3_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    expected = {"MRR@10": (0.5 + 1 + 0 + 1) / 4, "P@1": 0.5, "P@3": (1 / 3 + 2 / 3 + 0 + 1 / 3) / 4,
                "R@3": (0.5 + 1 + 0 + 1) / 4, "nDCG@3": (ndcg3_q1 + ndcg3_q2 + 0 + 1) / 4}  # fmt: skip
    for name, value in expected.items():
        assert first[name] == pytest.approx(value, abs=1e-9), name
    assert results_of(out)["queries"] == 4  # q5 has no judgement
