"""Compiled blocks for Qwen3-VL's vision tower.

The vision tower encodes every picture the feature cache does not hold (models/features.py), and in
eager transformers each of its blocks spends much of its time outside the matmuls: two LayerNorms,
the rotary embedding (a float32 upcast, slices, a concatenation, four products), the GELU and the
residual adds are separate memory-bound kernels, and attention runs once per picture on strided
slices of the query, key and value, its outputs concatenated again. Here each block runs as two
compiled graphs around attention - norm, qkv projection and rotary embedding; then output
projection, residual, norm, MLP and residual - and attention runs once per run of consecutive
pictures of one size (a batch of catalogue pictures is usually all one size), not once per picture.

The arithmetic is the block's own, in the same order and precision. Both graphs take the block's
weights as inputs and the patch count is a dynamic dimension, so every block shares one compilation
whatever the pictures. Fused together with the decoder layers (`--compile-layers`, models/fused.py),
checked against eager at start-up, and switched with them (`fused.set_enabled`).
"""

from __future__ import annotations

import threading
import types

import torch
import torch.nn.functional as F

from sidecar.models import fused

GELU_APPROXIMATIONS = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' vision rotary embedding: in float32, back to the input's dtype."""
    dtype, x = x.dtype, x.float()
    half = x.shape[-1] // 2
    return (x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin).to(dtype)


def _before_attention(
    hidden: torch.Tensor,  # (N, D): the block's input, every picture's patches in a row
    norm_w: torch.Tensor,
    norm_b: torch.Tensor,
    qkv_w: torch.Tensor,
    qkv_b: torch.Tensor,
    cos: torch.Tensor,  # (N, head_dim)
    sin: torch.Tensor,
    eps: float,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """norm1, the qkv projection and the rotary embedding: q, k, v of (N, heads, head_dim)."""
    x = F.layer_norm(hidden, (hidden.shape[-1],), norm_w, norm_b, eps)
    q, k, v = F.linear(x, qkv_w, qkv_b).view(x.shape[0], 3, heads, -1).unbind(1)
    cos, sin = cos[:, None, :].float(), sin[:, None, :].float()
    return _rotate(q, cos, sin), _rotate(k, cos, sin), v


def _after_attention(
    attended: torch.Tensor,  # (N, D)
    residual: torch.Tensor,  # (N, D)
    weights: tuple[torch.Tensor, ...],  # see _after_weights
    eps: float,
    approximate: str,
) -> torch.Tensor:
    """Output projection and residual, norm2, the GELU MLP and residual: (N, D)."""
    proj_w, proj_b, norm_w, norm_b, fc1_w, fc1_b, fc2_w, fc2_b = weights
    hidden = residual + F.linear(attended, proj_w, proj_b)
    x = F.layer_norm(hidden, (hidden.shape[-1],), norm_w, norm_b, eps)
    return hidden + F.linear(F.gelu(F.linear(x, fc1_w, fc1_b), approximate=approximate), fc2_w, fc2_b)


class _Graphs:
    def __init__(self) -> None:
        self.before = torch.compile(_before_attention, dynamic=None, fullgraph=True)
        self.after = torch.compile(_after_attention, dynamic=None, fullgraph=True)


_GRAPHS: _Graphs | None = None


def _graphs() -> _Graphs:
    global _GRAPHS
    if _GRAPHS is None:
        _GRAPHS = _Graphs()
    return _GRAPHS


class _Runs(threading.local):
    key: torch.Tensor | None = None
    runs: list[tuple[int, int, int]] = []


_RUNS = _Runs()


def equal_runs(cu_seqlens: torch.Tensor) -> list[tuple[int, int, int]]:
    """(first patch, pictures, patches each) for each run of consecutive pictures of one size.

    Every block of one tower call gets the same `cu_seqlens`: the runs are read (one device
    synchronisation, as transformers' own per-picture split has) once per call.
    """
    if _RUNS.key is not cu_seqlens:
        bounds = cu_seqlens.tolist()
        runs: list[tuple[int, int, int]] = []
        for start, end in zip(bounds, bounds[1:]):
            if runs and runs[-1][2] == end - start:
                first, count, length = runs[-1]
                runs[-1] = (first, count + 1, length)
            else:
                runs.append((start, 1, end - start))
        _RUNS.key, _RUNS.runs = cu_seqlens, runs
    return _RUNS.runs


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, runs, scale: float) -> torch.Tensor:
    """Each picture attends to itself: one attention call per run of equal pictures. (N, heads x head_dim)."""
    heads, head_dim = q.shape[1], q.shape[2]
    parts = []
    for start, count, length in runs:
        end = start + count * length
        q_, k_, v_ = (t[start:end].view(count, length, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q_, k_, v_, scale=scale)
        parts.append(out.transpose(1, 2).reshape(count * length, heads * head_dim))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _after_weights(block: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    attn, mlp = block.attn, block.mlp
    return (
        attn.proj.weight,
        attn.proj.bias,
        block.norm2.weight,
        block.norm2.bias,
        mlp.linear_fc1.weight,
        mlp.linear_fc1.bias,
        mlp.linear_fc2.weight,
        mlp.linear_fc2.bias,
    )


def _make_forward(eager_forward, approximate: str):
    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        compiled, graphs = fused._compiled(), _graphs()
        position_embeddings = kwargs.get("position_embeddings")
        if not compiled.enabled or position_embeddings is None or hidden_states.shape[0] < 2:
            return eager_forward(hidden_states, cu_seqlens, *args, **kwargs)
        attn = self.attn
        cos, sin = position_embeddings
        for tensor in (hidden_states, cos, sin):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        before = (hidden_states, self.norm1.weight, self.norm1.bias, attn.qkv.weight, attn.qkv.bias, cos, sin)
        q, k, v = compiled.run(graphs.before, _before_attention, *before, self.norm1.eps, attn.num_heads)
        attended = _attend(q, k, v, equal_runs(cu_seqlens), attn.scaling)
        torch._dynamo.maybe_mark_dynamic(attended, 0)
        after = (attended, hidden_states, _after_weights(self), self.norm2.eps, approximate)
        return compiled.run(graphs.after, _after_attention, *after)

    return forward


def unsupported_reason(visual: torch.nn.Module) -> str | None:
    """Why the blocks of the vision tower `visual` cannot be fused, or None when they can."""
    config = visual.config
    if config.hidden_act not in GELU_APPROXIMATIONS:
        return f"vision hidden_act {config.hidden_act!r} is not a GELU"
    if config._attn_implementation not in ("sdpa", "eager"):
        return f"vision attention implementation {config._attn_implementation!r} is not sdpa"
    block = visual.blocks[0]
    for name in ("norm1", "norm2", "attn", "mlp"):
        if not hasattr(block, name):
            return f"the vision block has no {name}"
    if not all(hasattr(block.attn, name) for name in ("qkv", "proj", "num_heads", "scaling")):
        return "the vision attention is not a fused qkv projection"
    if not all(hasattr(block.mlp, name) for name in ("linear_fc1", "linear_fc2")):
        return "the vision MLP is not two linear layers"
    return None


def fuse_vision_blocks(visual: torch.nn.Module) -> None:
    approximate = GELU_APPROXIMATIONS[visual.config.hidden_act]
    for block in visual.blocks:
        if "forward" not in vars(block):
            block.forward = types.MethodType(_make_forward(block.forward, approximate), block)


def unfuse_vision_blocks(visual: torch.nn.Module) -> None:
    for block in visual.blocks:
        if "forward" in vars(block):
            del block.forward


@torch.inference_mode()
def fuse_and_verify(visual: torch.nn.Module) -> str | None:
    """Fuse the vision tower's blocks, compile them on a probe of pictures of two sizes and compare
    with eager: None when they are in place, else why not (the blocks are then left eager)."""
    reason = unsupported_reason(visual)
    if reason is not None:
        return reason
    weight = visual.blocks[0].attn.qkv.weight
    generator = torch.Generator().manual_seed(0)
    head_dim = weight.shape[1] // visual.blocks[0].attn.num_heads

    def probe(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=weight.device, dtype=weight.dtype)

    # Three pictures: two of 16 patches, one of 24 (two runs), as consecutive blocks see them.
    hidden, cos, sin = probe(56, weight.shape[1]), probe(56, head_dim), probe(56, head_dim)
    cu_seqlens = torch.tensor([0, 16, 32, 56], dtype=torch.int32, device=weight.device)
    expected = hidden
    for block in visual.blocks[:2]:
        expected = block(expected, cu_seqlens=cu_seqlens, position_embeddings=(cos, sin))
    compiled = fused._compiled()
    compiled.enabled, compiled.failure = True, None
    fuse_vision_blocks(visual)
    try:
        actual = hidden
        for block in visual.blocks[:2]:
            actual = block(actual, cu_seqlens=cu_seqlens, position_embeddings=(cos, sin))
    except Exception as exc:  # the fused block code does not fit this transformers version
        unfuse_vision_blocks(visual)
        return f"fused vision blocks failed: {type(exc).__name__}: {fused._first_line(exc)}"
    if compiled.failure is not None:
        unfuse_vision_blocks(visual)
        compiled.enabled = True
        return f"compiling the vision blocks failed: {compiled.failure}"
    error = fused._relative_error(actual, expected)
    tolerance = 1e-4 if weight.dtype == torch.float32 else 1e-1  # see fused.fuse_and_verify
    if not error <= tolerance:
        unfuse_vision_blocks(visual)
        return f"compiled vision blocks differ from eager by {error:.2e} (relative), more than {tolerance:.0e}"
    return None
