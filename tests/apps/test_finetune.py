"""`rerank-sidecar finetune` closes the loop on a CPU: a random model learns a colour-matching task, `eval`
measures it through the served adapter, the server's scores are the trainer's, resuming is exact."""

from __future__ import annotations

import json
import re
import shutil
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


@pytest.fixture
def one_thread():
    """At this model size two threads spin more than they compute (measured: 10x the CPU time on 2 cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(learnable_dir, task) -> Path:
    import torch

    out, threads = task / "run", torch.get_num_threads()
    args = ["--model", learnable_dir, "--train", task / "train.jsonl", "--eval-file", task / "heldout.jsonl"]
    torch.set_num_threads(1)  # see one_thread
    try:
        assert run_cli("finetune", *args, "--out", out, "--merge", *TRAINING) == 0
    finally:
        torch.set_num_threads(threads)
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
    at_load, _ = load_pretrained(
        str(learnable_dir), torch.device("cpu"), torch.float32, adapter=str(trained / "adapter")
    )
    base, _ = load_pretrained(str(learnable_dir), torch.device("cpu"), torch.float32)
    expected = at_load.state_dict()
    changed = 0
    for name, value in merged.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6), name
        changed += not torch.equal(value, base.state_dict()[name])
    assert changed >= 14  # q, k, v, o, gate, up, down in both layers
    assert merged_adapter(str(trained / "merged")) == str((trained / "adapter").resolve())
    assert merged_adapter(str(learnable_dir)) == ""


SHORT = ["--batch-size", "2", "--grad-accum", "2", "--group-size", "4", "--lr", "3e-3", "--lora-dropout", "0.1",
         "--max-steps", "6", "--save-every", "2", "--k", "10", "--no-progress"]  # fmt: skip


def adapter_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "adapter" / "adapter_model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def uninterrupted(learnable_dir, task, tmp_path_factory) -> Path:
    import torch

    out, threads = tmp_path_factory.mktemp("uninterrupted"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_cli("finetune", "--model", learnable_dir, "--train", task / "train.jsonl", "--out", out, *SHORT) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(
    learnable_dir, task, uninterrupted, tmp_path, one_thread, caplog
):
    """A run whose newest checkpoint is step 4 (as one killed after it leaves it) continues from there."""
    assert [p.name for p in sorted((uninterrupted / "checkpoints").iterdir())] == ["step-000004", "step-000006"]
    stopped = tmp_path / "stopped"
    shutil.copytree(uninterrupted / "checkpoints" / "step-000004", stopped / "checkpoints" / "step-000004")
    with caplog.at_level("INFO", logger="sidecar.apps.finetune"):
        assert (
            run_cli("finetune", "--model", learnable_dir, "--train", task / "train.jsonl", "--out", stopped, *SHORT)
            == 0
        )
    assert "(step 4 of 6)" in caplog.text
    assert_same_weights(adapter_weights(stopped), adapter_weights(uninterrupted))
    steps = [json.loads(line)["step"] for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert steps == [6]  # no step-0 baseline: it did not start over


def test_ctrl_c_checkpoints_the_last_step_and_the_rerun_finishes_the_same(
    learnable_dir, task, uninterrupted, tmp_path, one_thread, monkeypatch, capsys
):
    from sidecar.apps.finetune.trainer import Trainer

    original, calls = Trainer.micro_batch_loss, []

    def interrupted_at_the_8th(self, indices, epoch):
        calls.append(indices)
        if len(calls) == 8:  # the second micro-batch of step 4: steps 1-3 are done
            raise KeyboardInterrupt
        return original(self, indices, epoch)

    monkeypatch.setattr(Trainer, "micro_batch_loss", interrupted_at_the_8th)
    args = ["--model", learnable_dir, "--train", task / "train.jsonl", "--out", tmp_path, *SHORT]
    assert run_cli("finetune", *args) == 130
    assert "interrupted: saved" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    monkeypatch.undo()
    assert run_cli("finetune", *args) == 0
    assert_same_weights(adapter_weights(tmp_path), adapter_weights(uninterrupted))


def test_pointwise_loss_on_pointwise_records(learnable_dir, task, tmp_path, one_thread):
    rows = []
    for line in (task / "train.jsonl").read_text().splitlines()[:20]:
        record = json.loads(line)
        rows.append({"query": record["query"], "document": record["positive"], "label": 1})
        rows += [{"query": record["query"], "document": n, "label": 0} for n in record["negatives"]]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copytree(task / "images", tmp_path / "images")
    args = [
        "--model",
        learnable_dir,
        "--train",
        tmp_path / "pairs.jsonl",
        "--eval-fraction",
        "0.25",
        "--loss",
        "pointwise",
    ]
    assert run_cli("finetune", *args, "--out", tmp_path / "out", "--max-steps", "2", "--no-progress") == 0
    metrics = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["epoch"], m["step"]) for m in metrics] == [(0, 0), (1, 1), (2, 2)]  # 3 queries = 1 step per epoch
    assert (tmp_path / "out" / "heldout" / "qrels" / "test.tsv").read_text().startswith("query-id\tcorpus-id\tscore\n")
    # Pairs of one query form one group: 4 colour words, one held out.
    assert len((tmp_path / "out" / "heldout" / "queries.jsonl").read_text().splitlines()) == 1


def test_an_adapter_for_another_model_or_no_adapter_is_refused(tiny_model_dir, uninterrupted, tmp_path):
    import torch

    from sidecar.models.loading import load_pretrained

    cpu = torch.device("cpu")
    with pytest.raises(SystemExit, match="not a LoRA adapter directory"):
        load_pretrained(str(tiny_model_dir), cpu, torch.float32, adapter=str(tmp_path))
    with pytest.raises(SystemExit, match="cannot apply it to this model"):  # trained on the 64-wide model
        load_pretrained(str(tiny_model_dir), cpu, torch.float32, adapter=str(uninterrupted / "adapter"))
    with pytest.raises(SystemExit, match="--adapter applies to the reranker: pass --model too"):
        cli_main(["serve", "--embedding-model", str(tiny_model_dir), "--adapter", str(tmp_path)])
