"""`rerank-sidecar finetune`: LoRA fine-tuning of the reranker on your labelled pairs.

    rerank-sidecar finetune --model Qwen/Qwen3-VL-Reranker-2B --train pairs.jsonl --out ft/ --epochs 2
    rerank-sidecar serve --model Qwen/Qwen3-VL-Reranker-2B --adapter ft/adapter

Training JSONL, one record per line, in either shape (text and image references on either side):

    {"query": "red shoes", "document": {"text": "Red trail shoe", "images": ["img/1.jpg"]}, "label": 1}
    {"query": {"text": "like this", "images": ["q.jpg"]}, "positive": "...", "negatives": ["...", "..."]}

The score trained is the one served: logit = w . h at the pair's last token, w = lm_head[yes] -
lm_head[no], with the pairs built by the reranker's own preparation (prompt, truncation, image
preprocessing). Output in --out: adapter/ (what `serve --adapter` loads), checkpoints/ (resume
points; rerunning the command resumes), metrics.jsonl (held-out metrics per epoch), heldout/ (the
held-out split as an eval judged set, with the trained model's scores), and merged/ with --merge.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LANGUAGE_PROJECTIONS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `finetune` subcommand's flags."""
    parser.description = "LoRA fine-tuning of the reranker (peft) on labelled query-document pairs."
    data = parser.add_argument_group("data")
    data.add_argument("--model", required=True, help="base reranker: hub id or local directory")
    data.add_argument(
        "--train",
        type=Path,
        required=True,
        help="training JSONL: {query, document, label} or {query, positive, negatives}",
    )
    data.add_argument(
        "--eval-file", type=Path, help="held-out JSONL (default: --eval-fraction of the training queries)"
    )
    data.add_argument(
        "--eval-fraction", type=float, default=0.1, help="share of queries held out when no --eval-file (default: 0.1)"
    )
    data.add_argument(
        "--media-root", type=Path, help="directory relative image paths are read from (default: the --train file's)"
    )
    data.add_argument("--instruction", help="the instruction the served requests will use (default: the model's)")
    train = parser.add_argument_group("training")
    train.add_argument("--out", type=Path, required=True, help="output directory; rerunning into it resumes")
    train.add_argument(
        "--loss",
        choices=["listwise", "pointwise"],
        default="listwise",
        help="listwise: softmax over a query's candidates, one positive as target; pointwise: binary "
        "cross-entropy per pair (default: listwise)",
    )
    train.add_argument("--epochs", type=int, default=1, help="passes over the training queries (default: 1)")
    train.add_argument(
        "--max-steps", type=int, help="stop after this many optimizer steps (sets the schedule's length)"
    )
    train.add_argument("--batch-size", type=int, default=4, help="queries per forward micro-batch (default: 4)")
    train.add_argument(
        "--group-size",
        type=int,
        default=8,
        help="candidates per query per step: listwise 1 positive + negatives, sampled (default: 8)",
    )
    train.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default: 1)")
    train.add_argument("--lr", type=float, default=1e-4, help="peak learning rate, AdamW (default: 1e-4)")
    train.add_argument(
        "--warmup-ratio", type=float, default=0.05, help="linear warm-up share of the steps (default: 0.05)"
    )
    train.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0)")
    train.add_argument("--seed", type=int, default=0, help="data order, sampling and dropout (default: 0)")
    lora = parser.add_argument_group("LoRA")
    lora.add_argument("--lora-r", type=int, default=16, help="rank (default: 16)")
    lora.add_argument("--lora-alpha", type=float, default=32, help="scaling alpha (default: 32)")
    lora.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the LoRA input (default: 0.05)")
    lora.add_argument(
        "--target-modules",
        default=LANGUAGE_PROJECTIONS,
        help="regex of the modules adapted (default: the language model's attention and MLP projections)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1 (default: auto)"
    )
    run.add_argument("--dtype", default="auto", help="auto = bfloat16 on CUDA, float32 on CPU (default: auto)")
    run.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations: less memory, ~30%% slower"
    )
    run.add_argument(
        "--save-every", type=int, default=0, help="also checkpoint every N optimizer steps (default: each epoch)"
    )
    run.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoints kept, newest first (default: 2)")
    run.add_argument("--k", default="1,3,5,10", help="held-out metric cut-offs (default: 1,3,5,10)")
    run.add_argument(
        "--merge", action="store_true", help="also write merged/: a full checkpoint with the adapter merged in"
    )
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Entry point of `rerank-sidecar finetune`; returns the exit status."""
    from sidecar.apps.finetune.data import DataError
    from sidecar.apps.finetune.trainer import TrainConfig, train

    try:
        train(TrainConfig.from_args(args))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # the trainer saved a checkpoint at the last step boundary and said so
        return 130
    return 0
