"""`rerank-sidecar finetune` closes the loop on a CPU: a random model learns a colour-matching task, `eval`
measures it through the served adapter, the server's scores are the trainer's, resuming is exact."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from sidecar.apps.eval.runfile import read_run
from sidecar.cli import main as cli_main
from tests.apps.colours import write_task
from tests.conftest import ServerProcess

# A bounded run that the learnable model learns from in ~20 s of CPU (3 epochs of 160 queries).
TRAINING = ["--batch-size", "1", "--group-size", "4", "--lr", "3e-3", "--lora-r", "8", "--lora-alpha", "16",
            "--lora-dropout", "0", "--epochs", "3", "--k", "10", "--no-progress"]  # fmt: skip


def run_cli(command: str, *args: object) -> int:
    try:
        cli_main([command, *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def learnable_dir(tmp_path_factory) -> Path:
    from sidecar.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("learnable"), shape="learnable", seed=0)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    write_task(root)
    return root


@pytest.fixture(scope="module")
def trained(learnable_dir, task) -> Path:
    out = task / "run"
    args = ["--model", learnable_dir, "--train", task / "train.jsonl", "--eval-file", task / "heldout.jsonl"]
    assert run_cli("finetune", *args, "--out", out, "--merge", *TRAINING) == 0
    return out


def evaluate_served(server_args: list[str], judged: Path, out: Path, log: Path) -> tuple[dict, dict]:
    """Serve, run `eval` on the held-out judged set the trainer wrote, and return (results, /info)."""
    with ServerProcess(server_args, log) as server:
        args = ["--sidecar", server.target, "--beir", judged, "--run", judged / "candidates.run", "--out", out]
        assert run_cli("eval", *args, "--no-progress") == 0
        port = re.search(r"HTTP listening on [\d.]+:(\d+)", server.log()).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as response:
            info = json.loads(response.read())
    return json.loads((out / "results.json").read_text()), info


def test_finetuning_raises_heldout_ndcg_and_the_server_returns_the_trainer_s_scores(learnable_dir, task, trained):
    judged = trained / "heldout"
    media = ["--media-root", str(task)]
    base, _ = evaluate_served(["--model", str(learnable_dir), *media], judged, task / "eval-base", task / "base.log")
    tuned, info = evaluate_served(
        ["--model", str(learnable_dir), "--adapter", str(trained / "adapter"), *media],
        judged,
        task / "eval-tuned",
        task / "tuned.log",
    )
    before = base["systems"]["candidates"]["reranked"]["metrics"]["nDCG@10"]
    after = tuned["systems"]["candidates"]["reranked"]["metrics"]["nDCG@10"]
    assert after >= 0.7 and after - before >= 0.2, (before, after)
    # The trainer's own held-out measurements say the same.
    epochs = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]
    assert epochs[0]["metrics"]["nDCG@10"] == pytest.approx(before, abs=1e-6)
    assert epochs[-1]["metrics"]["nDCG@10"] == pytest.approx(after, abs=1e-6)
    # Parity: the served adapter (merged at load, prefix reuse on) scores every held-out pair as the trainer did.
    served = read_run(task / "eval-tuned" / "runs" / "candidates.reranked.run")
    trainer = read_run(trained / "heldout" / "finetuned.run")
    assert served.keys() == trainer.keys()
    for qid, ranking in trainer.items():
        assert dict(served[qid]) == pytest.approx(dict(ranking), abs=1e-4), qid
    # GetModelInfo (through /info) names the adapter; eval records it.
    (reranker,) = [m for m in info["models"] if m["kind"] == "reranker"]
    assert reranker["adapter"] == str(trained / "adapter")
    assert tuned["model"]["adapter"] == str(trained / "adapter") and base["model"]["adapter"] == ""


def test_the_merged_checkpoint_is_the_adapter_merged_at_load(learnable_dir, trained):
    import torch

    from sidecar.models.loading import load_pretrained, merged_adapter

    merged, _ = load_pretrained(str(trained / "merged"), torch.device("cpu"), torch.float32)
    at_load, _ = load_pretrained(str(learnable_dir), torch.device("cpu"), torch.float32, adapter=str(trained / "adapter"))
    base, _ = load_pretrained(str(learnable_dir), torch.device("cpu"), torch.float32)
    expected = at_load.state_dict()
    changed = 0
    for name, value in merged.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6), name
        changed += not torch.equal(value, base.state_dict()[name])
    assert changed >= 14  # q, k, v, o, gate, up, down in both layers
    assert merged_adapter(str(trained / "merged")) == str((trained / "adapter").resolve())
    assert merged_adapter(str(learnable_dir)) == ""
