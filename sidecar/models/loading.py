"""Loading Qwen3-VL checkpoints: device and dtype choice, processor, and the version seams of transformers."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)
# Written by `rerank-sidecar finetune` beside its adapter and into a merged checkpoint: base model and adapter.
FINETUNE_RECORD = "finetune.json"


def resolve_device(device: str) -> torch.device:
    """'auto' picks the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on CUDA and float32 on the CPU (CPU bf16 matmuls are slow and lossy)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise SystemExit(f"--dtype {dtype}: choose auto, float32, bfloat16 or float16")
    return table[dtype]


def load_pretrained(
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    attn_implementation: str = "sdpa",
    with_lm_head: bool = True,
    adapter: str | None = None,
):
    """Load (model, processor) from a hub id or a local directory; a local directory never touches the hub.

    The reranker needs the LM head (its yes/no rows); the embedder loads the base Qwen3VLModel only,
    as the official embedding reference does. `adapter` (a LoRA adapter directory) is merged into
    the weights (`merge_adapter`).

    A directory without weights (a benchmark shape from `make-tiny-model --no-weights`) gets
    random weights of its configured shape.
    """
    from transformers import AutoConfig, AutoProcessor, Qwen3VLForConditionalGeneration, Qwen3VLModel

    model_cls = Qwen3VLForConditionalGeneration if with_lm_head else Qwen3VLModel

    local = Path(name).is_dir()
    kwargs = {"local_files_only": True} if local else {}
    processor = AutoProcessor.from_pretrained(name, **kwargs)
    has_weights = not local or any(Path(name).glob("*.safetensors")) or any(Path(name).glob("*.bin"))
    if has_weights:
        model = model_cls.from_pretrained(name, dtype=dtype, attn_implementation=attn_implementation, **kwargs)
    else:
        config = AutoConfig.from_pretrained(name, **kwargs)
        config._attn_implementation = attn_implementation
        with torch.device(device):
            model = model_cls._from_config(config, dtype=dtype)
        log.warning("%s has no weights: using random weights of its shape", name)
    model = model.to(device).eval()
    if adapter:
        model = merge_adapter(model, adapter)
    return model, processor


def merge_adapter(model, adapter: str):
    """Apply a LoRA adapter directory (peft's format, as `rerank-sidecar finetune` writes it) and merge it
    into the weights.

    Merged once at load, the weights are plain weights again: prefix reuse, compiled layers and every
    other fast path serve the adapted model unchanged, at no cost per request.
    """
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise SystemExit(f"--adapter {adapter}: not a LoRA adapter directory (no adapter_config.json)")
    try:
        from peft import PeftModel
    except ImportError:
        raise SystemExit("--adapter needs peft: pip install 'rerank-sidecar[server]'") from None
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval()
    except (ValueError, RuntimeError, KeyError) as exc:  # shapes or module names of another base model
        raise SystemExit(f"--adapter {adapter}: cannot apply it to this model: {exc}") from None


def merged_adapter(name: str) -> str:
    """The adapter a `finetune --merge` checkpoint was merged from ('' for any other model)."""
    record = Path(name) / FINETUNE_RECORD
    try:
        return str(json.loads(record.read_text()).get("adapter", "")) if record.is_file() else ""
    except (OSError, ValueError, AttributeError):
        return ""


def cache_kwarg_name(module: torch.nn.Module) -> str:
    """transformers 5.x renamed `past_key_values` to `cache` on some forwards; use what this one takes."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a DynamicCache, across transformers versions."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def new_cache(layers: list[tuple[torch.Tensor, torch.Tensor]]):
    """A DynamicCache holding the given per-layer (keys, values)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def rope_index(base_model, input_ids: torch.Tensor, mm_types: torch.Tensor, image_grid_thw, video_grid_thw):
    """3-D mRoPE positions (3, 1, L) for one unpadded sequence, across transformers versions."""
    params = inspect.signature(base_model.get_rope_index).parameters
    kwargs = dict(image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw, attention_mask=None)
    if "mm_token_type_ids" in params:
        kwargs["mm_token_type_ids"] = mm_types
    positions, _ = base_model.get_rope_index(input_ids, **kwargs)
    return positions
