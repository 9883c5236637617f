"""Analytic FLOP counts for Qwen3-VL forwards, so benchmark speedups can be checked against a bound.

Counts multiply-adds as 2 FLOPs, for the matmuls that dominate: decoder projections and MLP,
attention scores and values over the attended context, the vision tower and its patch mergers.
Norms, rotary embeddings and softmax are ignored (a few percent at most).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    vision_out: int
    deepstack: int
    patch: int = 16
    temporal_patch: int = 2
    merge: int = 2

    @classmethod
    def from_config(cls, config) -> Shape:
        t, v = config.text_config, config.vision_config
        return cls(
            t.hidden_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.num_key_value_heads,
            t.head_dim,
            t.intermediate_size,
            v.depth,
            v.hidden_size,
            v.intermediate_size,
            v.out_hidden_size,
            len(v.deepstack_visual_indexes),
            v.patch_size,
            v.temporal_patch_size,
            v.spatial_merge_size,
        )


def decoder_flops(shape: Shape, new_tokens: int, context_before: int = 0) -> float:
    """FLOPs to run `new_tokens` through the decoder after `context_before` cached tokens."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    per_token = (
        2 * (shape.hidden * q + 2 * shape.hidden * kv + q * shape.hidden) + 2 * 3 * shape.hidden * shape.intermediate
    )
    # Token i attends to context_before + i + 1 keys: QK^T and AV are 2 * q each per key.
    attended = new_tokens * context_before + new_tokens * (new_tokens + 1) / 2
    return shape.layers * (per_token * new_tokens + 4 * q * attended)


def vision_flops(shape: Shape, patches: int) -> float:
    """FLOPs to encode one image (or video) of `patches` patches, mergers included."""
    h = shape.vision_hidden
    embed = patches * 2 * (3 * shape.temporal_patch * shape.patch * shape.patch) * h
    block = patches * (2 * 4 * h * h + 2 * 2 * h * shape.vision_intermediate) + 4 * patches * patches * h
    merged, wide = patches // shape.merge**2, h * shape.merge**2
    merger = merged * (2 * wide * wide + 2 * wide * shape.vision_out)
    return embed + shape.vision_depth * block + (1 + shape.deepstack) * merger


def peak_matmul_flops(device, dtype, size: int = 8192, repeats: int = 10) -> float:
    """Measured dense matmul FLOP/s on `device` (the denominator of model FLOP utilisation)."""
    import time

    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)
