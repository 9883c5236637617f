"""Checkpoints: everything a resumed run needs to continue exactly where a stopped one was.

A checkpoint directory `checkpoints/step-000120/` is an adapter directory (`serve --adapter` loads it
as it is) plus `trainer_state.pt`: the position (epoch, step), the optimizer and scheduler states and
the random generators' states at that step boundary. It is written under a temporary name and
renamed, so a run killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STATE = "trainer_state.pt"
PREFIX = "step-"


@dataclass
class Position:
    """Where training stands: optimizer steps done in all, and within the current epoch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


def rng_state() -> dict[str, Any]:
    """The torch generators' states (dropout masks are drawn from them)."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def save(
    directory: Path, model, optimizer, scheduler, position: Position, rng: dict[str, Any], fingerprint: dict, keep: int
) -> Path:
    """Write checkpoint `step-<step>` under `directory` and delete all but the newest `keep`."""
    final = directory / f"{PREFIX}{position.step:06d}"
    staging = directory / f".{final.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    state = {
        "position": vars(position),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "fingerprint": fingerprint,
    }
    torch.save(state, staging / STATE)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.glob(f"{PREFIX}*") if (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))


def read_state(checkpoint: Path) -> dict[str, Any]:
    # Our own file; weights_only=False because optimizer states hold plain Python containers and tensors.
    return torch.load(checkpoint / STATE, map_location="cpu", weights_only=False)


def restore(checkpoint: Path, state: dict[str, Any], model, optimizer, scheduler) -> Position:
    """Load the adapter weights, optimizer, scheduler and random states of `checkpoint` into the live objects."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return Position(**state["position"])
