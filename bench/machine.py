"""What every benchmark script shares: the model of a benchmark shape, and the facts of the machine."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from sidecar.models import fused
from sidecar.models.loading import load_pretrained, resolve_device, resolve_dtype
from sidecar.models.reranker import RerankerModel


def load_reranker(
    shape: str | None, model_dir: Path | None, device: str = "auto", dtype: str = "auto", compile_layers: str = "off"
) -> tuple[RerankerModel, dict]:
    """A reranker of a random benchmark shape ("mini" on a CPU, "2b" on a GPU by default), and the facts
    of the run. The checkpoint directory (config and processor, no weights) is made when missing."""
    resolved = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, resolved)
    shape = shape or ("2b" if resolved.type == "cuda" else "mini")
    model_dir = model_dir or Path.home() / ".cache" / "rerank-sidecar" / f"bench-{shape}"
    if not (model_dir / "config.json").exists():
        from sidecar.models.tiny import make_tiny_model

        make_tiny_model(model_dir, shape=shape, save_weights=False)
    torch.manual_seed(0)
    print(f"loading a random {shape} Qwen3-VL on {resolved} ({torch_dtype})", flush=True)
    model, processor = load_pretrained(str(model_dir), resolved, torch_dtype)
    reranker = RerankerModel(f"random-{shape}", model, processor)
    compiled = False
    if fused.wanted(compile_layers, resolved):
        start = time.perf_counter()
        reason = reranker.compile_layers()
        compiled = reason is None
        print(f"compiled decoder layers in {time.perf_counter() - start:.0f}s" if compiled else reason, flush=True)
    facts = machine_facts(resolved)
    facts.update(shape=shape, dtype=str(torch_dtype).removeprefix("torch."), compiled_layers=compiled)
    return reranker, facts


def machine_facts(device: torch.device) -> dict:
    import transformers

    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
