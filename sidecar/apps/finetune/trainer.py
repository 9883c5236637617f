"""The fine-tuning loop: LoRA on the reranker, micro-batches of query groups, gradient accumulation,
a linear warm-up and decay schedule, held-out metrics each epoch, checkpoints and exact resumption.

Every choice a resumed run must repeat is a function of (seed, epoch, group): the epoch's group
order and each group's sampled candidates; dropout masks come from torch's generator, whose state
is checkpointed at each step boundary. So a run stopped and resumed ends with the same adapter
as one that never stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sidecar.apps.eval.metrics import mean, metric_names, per_query
from sidecar.apps.eval.runfile import write_run
from sidecar.apps.finetune import checkpoints
from sidecar.apps.finetune.data import DataError, Group, judged_set, read_groups, split, write_judged_set
from sidecar.apps.finetune.objective import listwise_loss, pair_logits, pointwise_loss, prepare_pairs
from sidecar.media import MediaPolicy, MediaResolver

log = logging.getLogger("sidecar.apps.finetune")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (the `finetune` flags)."""

    model: str
    train: Path
    out: Path
    eval_file: Path | None = None
    eval_fraction: float = 0.1
    media_root: Path | None = None
    instruction: str = ""
    loss: str = "listwise"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 4
    group_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    seed: int = 0
    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    target_modules: str = ""
    device: str = "auto"
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    save_every: int = 0
    keep_checkpoints: int = 2
    k: tuple[int, ...] = (1, 3, 5, 10)
    merge: bool = False
    progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        values = {name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)}
        values["instruction"] = args.instruction or ""
        try:
            values["k"] = tuple(sorted({int(k) for k in str(args.k).split(",") if k.strip()}))
        except ValueError:
            raise DataError(f"--k: expected comma-separated integers, got {args.k!r}") from None
        return cls(**values)

    def check(self) -> None:
        """Reject values no run can use, naming the flag."""
        for flag in ("epochs", "batch_size", "grad_accum", "lora_r"):
            if getattr(self, flag) < 1:
                raise DataError(f"--{flag.replace('_', '-')} must be at least 1")
        if self.group_size < 2 and self.loss == "listwise":
            raise DataError("--group-size must be at least 2 for the listwise loss (a positive and a negative)")
        if self.max_steps is not None and self.max_steps < 1:
            raise DataError("--max-steps must be at least 1")
        if self.lr <= 0 or not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1:
            raise DataError("--lr must be > 0, --warmup-ratio and --lora-dropout in [0, 1)")
        if not self.k or self.k[0] < 1:
            raise DataError("--k: every cut-off must be at least 1")

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the stopped one (not output, progress or merge choices)."""
        skip = {"out", "progress", "merge", "save_every", "keep_checkpoints", "device"}
        return {k: str(v) for k, v in asdict(self).items() if k not in skip}


class Trainer:
    """A reranker with a LoRA adapter, its optimizer and schedule, and the data it trains on."""

    def __init__(self, config: TrainConfig) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import get_linear_schedule_with_warmup

        from sidecar.models.loading import load_pretrained, resolve_device, resolve_dtype
        from sidecar.models.reranker import RerankerModel

        config.check()
        self.config = config
        config.out.mkdir(parents=True, exist_ok=True)
        groups = read_groups(config.train)
        if config.eval_file:
            self.train_groups, heldout = groups, read_groups(config.eval_file)
        else:
            self.train_groups, heldout = split(groups, config.eval_fraction, config.seed)
        self.heldout, self.qrels = judged_set(heldout)
        self.usable = [i for i, g in enumerate(self.train_groups) if self._usable(g)]
        if not self.usable:
            need = "a positive and a negative" if config.loss == "listwise" else "candidates"
            raise DataError(f"no training query has {need}")
        skipped = len(self.train_groups) - len(self.usable)
        if skipped:
            log.warning("%d training queries lack a positive or a negative: the listwise loss skips them", skipped)
        device = resolve_device(config.device)
        torch.manual_seed(config.seed)  # the LoRA weights' initialisation and the first dropout masks
        model, processor = load_pretrained(config.model, device, resolve_dtype(config.dtype, device))
        self.reranker = RerankerModel(config.model, model, processor)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
        )
        self.model = get_peft_model(model, lora)  # injects the LoRA layers into `model` (and reranker.base) in place
        if config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.usable) / (config.batch_size * config.grad_accum))
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        warmup = round(config.warmup_ratio * self.total_steps)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        root = config.media_root or config.train.resolve().parent
        self.media = MediaPolicy(media_root=root)
        self.names = metric_names(config.k)
        log.info(
            "training %d queries (%d held out), %d steps (%d per epoch), %s parameters trainable",
            len(self.usable), len(self.heldout), self.total_steps, self.steps_per_epoch,
            f"{sum(p.numel() for p in trainable):,}",
        )  # fmt: skip

    def _usable(self, group: Group) -> bool:
        if self.config.loss == "listwise":
            return bool(group.positives and group.negatives)
        return bool(group.candidates)

    # ---- data ---------------------------------------------------------------------------------

    def epoch_steps(self, epoch: int) -> list[list[list[int]]]:
        """The epoch's optimizer steps, each a list of micro-batches of group indices (seeded shuffle)."""
        order = list(self.usable)
        random.Random(f"{self.config.seed}:order:{epoch}").shuffle(order)
        size, accum = self.config.batch_size, self.config.grad_accum
        micro = [order[i : i + size] for i in range(0, len(order), size)]
        return [micro[i : i + accum] for i in range(0, len(micro), accum)]

    def sample(self, index: int, epoch: int) -> list[tuple[Any, int]]:
        """A group's candidates for one step: listwise puts one positive first, then negatives."""
        group, size = self.train_groups[index], self.config.group_size
        rng = random.Random(f"{self.config.seed}:sample:{epoch}:{index}")
        if self.config.loss == "listwise":
            picks = [rng.choice(group.positives)] + rng.sample(group.negatives, min(size - 1, len(group.negatives)))
        else:
            picks = rng.sample(range(len(group.candidates)), min(size, len(group.candidates)))
        return [group.candidates[i] for i in picks]

    # ---- computation --------------------------------------------------------------------------

    def micro_batch_loss(self, indices: list[int], epoch: int) -> torch.Tensor:
        resolver = MediaResolver(self.media)
        rows, sizes, labels = [], [], []
        for index in indices:
            picked = self.sample(index, epoch)
            query = self.train_groups[index].query
            rows += prepare_pairs(self.reranker, resolver, query, [d for d, _ in picked], self.config.instruction)
            sizes.append(len(picked))
            labels += [label for _, label in picked]
        logits = pair_logits(self.reranker, rows)
        return listwise_loss(logits, sizes) if self.config.loss == "listwise" else pointwise_loss(logits, labels)

    @torch.no_grad()
    def score_heldout(self) -> dict[str, list[tuple[str, float]]]:
        """Each held-out query's candidates ranked by the current model's logits."""
        self.model.eval()
        rankings = {}
        try:
            for group in self.heldout:
                documents = [doc for doc, _ in group.candidates]
                rows = prepare_pairs(
                    self.reranker, MediaResolver(self.media), group.query, documents, self.config.instruction
                )
                logits = pair_logits(self.reranker, rows).tolist()
                ranked = sorted(zip(documents, logits), key=lambda pair: -pair[1])
                rankings[group.query.id] = [(doc.id, logit) for doc, logit in ranked]
        finally:
            self.model.train()
        return rankings

    def evaluate(self, position: checkpoints.Position) -> dict[str, float] | None:
        """Held-out metrics now (None without a held-out split), logged and appended to metrics.jsonl."""
        if not self.heldout:
            return None
        values = per_query(self.qrels, self.score_heldout(), self.names)
        metrics = {name: mean(values[name]) for name in self.names}
        shown = ", ".join(f"{n} {metrics[n]:.4f}" for n in self.names if n.startswith(("nDCG", "MRR")))
        log.info("epoch %d (step %d): held-out %s", position.epoch, position.step, shown)
        with (self.config.out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"epoch": position.epoch, "step": position.step, "metrics": metrics}) + "\n")
        return metrics

    # ---- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Train to the end (resuming from the newest checkpoint in --out), then write the outputs."""
        config = self.config
        position = self.resume()
        boundary_rng = checkpoints.rng_state()
        if position.step == 0:
            (config.out / "metrics.jsonl").unlink(missing_ok=True)
            self.evaluate(position)  # the untrained model: the baseline
        finished = position.step >= self.total_steps
        self.model.train()
        bar = _progress(self.total_steps, position.step, config.progress)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while position.step < self.total_steps:
                steps = self.epoch_steps(position.epoch)
                for step in steps[position.step_in_epoch :]:
                    for micro in step:
                        (self.micro_batch_loss(micro, position.epoch) / len(step)).backward()
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    position.step += 1
                    position.step_in_epoch += 1
                    boundary_rng = checkpoints.rng_state()
                    bar.update(1)
                    if position.step == self.total_steps:
                        break
                    if config.save_every and position.step % config.save_every == 0:
                        self.save(position, boundary_rng)
                if position.step_in_epoch >= len(steps):
                    position.epoch, position.step_in_epoch = position.epoch + 1, 0
                    self.evaluate(position)
                    if position.step < self.total_steps:
                        self.save(position, boundary_rng)
        except KeyboardInterrupt:
            self.optimizer.zero_grad(set_to_none=True)  # the unfinished step's gradients; its start is saved
            saved = self.save(position, boundary_rng)
            print(f"\ninterrupted: saved {saved}; run the same command again to resume", file=sys.stderr)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            bar.close()
        if position.step_in_epoch and not finished:  # --max-steps ended inside an epoch: measure there
            self.evaluate(position)
        self.save(position, boundary_rng)
        self.finish()

    def resume(self) -> checkpoints.Position:
        found = checkpoints.list_checkpoints(self.config.out / "checkpoints")
        if not found:
            return checkpoints.Position()
        state = checkpoints.read_state(found[-1])
        if state["fingerprint"] != self.config.fingerprint():
            raise DataError(
                f"{self.config.out} holds checkpoints of a different training (model, data or settings); "
                "use another --out, or delete its checkpoints/ to start over"
            )
        position = checkpoints.restore(found[-1], state, self.model, self.optimizer, self.scheduler)
        log.info("resuming from %s (step %d of %d)", found[-1], position.step, self.total_steps)
        return position

    def save(self, position: checkpoints.Position, rng: dict[str, Any]) -> Path:
        return checkpoints.save(
            self.config.out / "checkpoints",
            self.model,
            self.optimizer,
            self.scheduler,
            position,
            rng,
            self.config.fingerprint(),
            self.config.keep_checkpoints,
        )

    def finish(self) -> None:
        """adapter/ (+ finetune.json), heldout/ (judged set + the trained model's scores), merged/ with --merge."""
        from sidecar.models.loading import FINETUNE_RECORD

        out = self.config.out
        adapter = out / "adapter"
        self.model.save_pretrained(adapter)
        record = {
            "base_model": self.config.model,
            "adapter": str(adapter.resolve()),
            "config": self.config.fingerprint(),
        }
        (adapter / FINETUNE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if self.heldout:
            write_judged_set(out / "heldout", self.heldout, self.qrels)
            write_run(out / "heldout" / "finetuned.run", self.score_heldout(), "finetuned")
        log.info("adapter written to %s (serve it with: rerank-sidecar serve --model %s --adapter %s)",
                 adapter, self.config.model, adapter)  # fmt: skip
        if self.config.merge:
            merged = out / "merged"
            self.model.merge_and_unload().save_pretrained(merged)
            self.reranker.processor.save_pretrained(merged)
            (merged / FINETUNE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
            log.info("merged checkpoint written to %s (serve it with: rerank-sidecar serve --model %s)", merged, merged)


def train(config: TrainConfig) -> None:
    """Train as `config` says (resuming from --out's checkpoints) and write the outputs."""
    Trainer(config).run()


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler stopping the job) checkpoints like Ctrl-C does."""
    raise KeyboardInterrupt


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="finetune", unit="step", disable=not enabled, file=sys.stderr)
