"""Compiled decoder layers for Qwen3-VL's text model.

Eager transformers spends about half of a GPU forward outside the matmuls: each layer's four
RMSNorms (upcast to float32, square, mean, rsqrt, scale, downcast), the rotary embedding (slices,
a concatenation, four products) and the SiLU gate are separate memory-bound kernels over the
whole activation. Here each decoder layer runs as two compiled graphs around its attention call —
norms, projections, rotary embedding, gate and residual adds fused into a few kernels between the
matmuls — while attention itself, the key/value cache and everything outside the layers
(embeddings, deepstack visual features, the final norm) stay transformers' own code.

The arithmetic is the layer's own, in the same order and precision (float32 norms); compiled
kernels may round an intermediate once instead of twice, far inside bfloat16's tolerance.
Both graphs take the layer's weights as inputs, so every layer of every loaded model shares one
compilation; the token count is a dynamic dimension, so no request shape triggers a recompile.

Rows that continue a query prefix (see models/reranker.py) take a third graph in place of the
first: it also lays out each row's keys and values after the prefix's, with the key/value heads
already repeated for grouped-query attention, in one pass. Through transformers' cache the same
layout costs four copies per layer (the prefix broadcast to every row, the concatenation with the
row's keys, the head repeat for keys and for values), about a sixth of a K=100 forward on a GPU.
A batch that mixes requests is ordered by prefix: each group of rows takes that graph with its own
prefix and attends on its own, while the output projection and the MLP run over the whole batch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen3's RMSNorm: normalise in float32, round back to the input dtype, then scale."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding over the last dimension (the "rotate half" convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _before_attention(
    hidden: torch.Tensor,  # (N, D): the layer's input, tokens flattened
    weights: tuple[torch.Tensor, ...],  # see _attention_weights
    cos: torch.Tensor,  # (N, head_dim)
    sin: torch.Tensor,
    eps: float,
    head_dim: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input norm, q/k/v projections, per-head q/k norms and rotary embedding: (N, heads, head_dim) each."""
    norm_w, q_w, k_w, v_w, q_norm_w, k_norm_w = weights
    x = _rms_norm(hidden, norm_w, eps)
    n = x.shape[0]
    q = _rms_norm(F.linear(x, q_w).view(n, -1, head_dim), q_norm_w, eps)
    k = _rms_norm(F.linear(x, k_w).view(n, -1, head_dim), k_norm_w, eps)
    v = F.linear(x, v_w).view(n, -1, head_dim)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return _rotate(q, cos, sin), _rotate(k, cos, sin), v


def _after_attention(
    attended: torch.Tensor,  # (N, heads * head_dim)
    residual: torch.Tensor,  # (N, D)
    o_w: torch.Tensor,
    norm_w: torch.Tensor,
    gate_w: torch.Tensor,
    up_w: torch.Tensor,
    down_w: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Output projection and residual, post-attention norm, SiLU-gated MLP and residual: (N, D)."""
    hidden = residual + F.linear(attended, o_w)
    x = _rms_norm(hidden, norm_w, eps)
    return hidden + F.linear(F.silu(F.linear(x, gate_w)) * F.linear(x, up_w), down_w)


def _before_attention_prefixed(
    hidden: torch.Tensor,  # (B, S, D): rows, right-padded
    weights: tuple[torch.Tensor, ...],
    cos: torch.Tensor,  # (B, S, head_dim)
    sin: torch.Tensor,
    prefix_k: torch.Tensor,  # (1, kv_heads, P, head_dim): the shared prefix's keys at this layer
    prefix_v: torch.Tensor,
    eps: float,
    head_dim: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_before_attention` for rows after a shared prefix: q (B, heads, S, head_dim) and the keys and
    values of prefix + row, (B, heads, P + S, head_dim), heads repeated as attention wants them."""
    b, s, width = hidden.shape
    flat = (hidden.reshape(b * s, width), weights, cos.reshape(b * s, head_dim), sin.reshape(b * s, head_dim))
    q, k, v = _before_attention(*flat, eps, head_dim)
    heads = q.shape[1]
    return (
        q.view(b, s, heads, head_dim).transpose(1, 2),
        _after_prefix(prefix_k, k, b, s, heads, head_dim),
        _after_prefix(prefix_v, v, b, s, heads, head_dim),
    )


def _after_prefix(prefix: torch.Tensor | None, rows: torch.Tensor, b: int, s: int, heads: int, head_dim: int):
    """Rows' keys or values (B * S, kv_heads, head_dim) laid out after the prefix's (1, kv_heads, P,
    head_dim), heads repeated for grouped-query attention: (B, heads, P + S, head_dim)."""
    rows = rows.view(b, s, -1, head_dim).transpose(1, 2)
    both = rows if prefix is None else torch.cat([prefix.expand(b, -1, -1, -1), rows], dim=2)
    repeat = heads // both.shape[1]
    return both[:, :, None].expand(-1, -1, repeat, -1, -1).reshape(b, heads, -1, head_dim)


@dataclass
class PrefixGroup:
    """Rows [start, end) of a batch that continue one prefix: its per-layer (keys, values), each
    (1, kv_heads, P, head_dim), or None for rows that hold their whole sequence."""

    kv: list[tuple[torch.Tensor, torch.Tensor]] | None
    start: int
    end: int
    prefix_id: int = 0  # identifies the prefix while groups are built


class _Groups(threading.local):
    groups: list[PrefixGroup] | None = None
    masks: dict | None = None


_GROUPS = _Groups()


@contextlib.contextmanager
def prefix_groups(groups: list[PrefixGroup]):
    """Within this block, fused layers run a batch whose rows continue the prefixes of `groups`
    (every row in exactly one group, in batch order); the model gets no cache."""
    _GROUPS.groups, _GROUPS.masks = groups, {}
    try:
        yield
    finally:
        _GROUPS.groups = _GROUPS.masks = None


def prefixed_rows_supported(text_model: torch.nn.Module) -> bool:
    """Whether `prefix_groups` can serve batches: the fused layers are in place and switched on."""
    fused_in_place = all("forward" in vars(layer) for layer in text_model.layers)
    return fused_in_place and _compiled().enabled


class CompiledLayers:
    """The compiled graphs shared by every fused layer, and a switch back to eager for comparisons."""

    def __init__(self) -> None:
        # dynamic=None: shapes are static except the dimensions marked dynamic per call (token counts;
        # batch, row and prefix lengths).
        self.before = torch.compile(_before_attention, dynamic=None, fullgraph=True)
        self.after = torch.compile(_after_attention, dynamic=None, fullgraph=True)
        self.before_prefixed = torch.compile(_before_attention_prefixed, dynamic=None, fullgraph=True)
        self.enabled = True
        self.failure: str | None = None  # the first failure since the last start-up check

    def run(self, compiled_fn, eager_fn, *args):
        """`compiled_fn(*args)`; if compiling or running it fails, the same math eagerly, and eager from then on.

        The start-up check compiles every graph the engine uses, so this is a safety net (a toolchain
        or compiler failure on some later input) that keeps requests answered, only slower. Running
        out of memory is not a compilation problem and is raised as it is.
        """
        if not self.enabled:  # switched off, possibly by an earlier layer of this very forward
            return eager_fn(*args)
        try:
            return compiled_fn(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            if self.failure is None:
                self.failure = f"{type(exc).__name__}: {_first_line(exc)}"
                log.error("compiled decoder layers failed, continuing with eager layers: %s", self.failure)
            self.enabled = False
            return eager_fn(*args)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


_COMPILED: CompiledLayers | None = None


def _compiled() -> CompiledLayers:
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = CompiledLayers()
    return _COMPILED


def wanted(setting: str, device: torch.device) -> bool:
    """Whether to compile the decoder layers: `setting` is the compile_layers setting (auto, on, off).

    Auto compiles on CUDA, where eager elementwise kernels take about half the forward time, and
    not on a CPU, where compiling costs tens of seconds at every start for a smaller gain.
    """
    if setting not in ("auto", "on", "off"):
        raise SystemExit(f"--compile-layers {setting}: choose auto, on or off")
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def set_enabled(enabled: bool) -> None:
    """Route fused layers through the compiled graphs (True) or transformers' eager code (False)."""
    _compiled().enabled = enabled


def unsupported_reason(text_model: torch.nn.Module) -> str | None:
    """Why the layers of `text_model` cannot be fused, or None when they can."""
    config = text_model.config
    if getattr(config, "hidden_act", None) != "silu":
        return f"hidden_act {getattr(config, 'hidden_act', None)!r} is not silu"
    if getattr(config, "attention_bias", False):
        return "the attention projections have biases"
    if config._attn_implementation != "sdpa":
        return f"attention implementation {config._attn_implementation!r} is not sdpa"
    layer = text_model.layers[0]
    for name in ("input_layernorm", "post_attention_layernorm", "self_attn", "mlp"):
        if not hasattr(layer, name):
            return f"the decoder layer has no {name}"
    if not all(hasattr(layer.self_attn, name) for name in ("q_norm", "k_norm")):
        return "the attention has no per-head q/k norms"
    norms = (layer.input_layernorm, layer.post_attention_layernorm, layer.self_attn.q_norm, layer.self_attn.k_norm)
    if len({norm.variance_epsilon for norm in norms}) != 1:
        return "the layer's norms use different epsilons"
    return None


def fuse_decoder_layers(text_model: torch.nn.Module) -> None:
    """Run every decoder layer of `text_model` through the compiled graphs (call `unsupported_reason` first)."""
    compiled = _compiled()
    for layer in text_model.layers:
        if "forward" not in vars(layer):
            layer.forward = types.MethodType(_make_forward(compiled, layer.forward), layer)


def unfuse_decoder_layers(text_model: torch.nn.Module) -> None:
    """Back to transformers' own layer code."""
    for layer in text_model.layers:
        if "forward" in vars(layer):
            del layer.forward


@torch.inference_mode()
def fuse_and_verify(base_model: torch.nn.Module) -> str | None:
    """Fuse the decoder layers of a Qwen3VLModel, compile them on a probe batch and compare with eager.

    Returns None when the fused layers are in place, or why they are not (unsupported layer, no
    compiler toolchain, a mismatch); in that case the model is left eager. Compiling takes from
    seconds (GPU) to tens of seconds (a small CPU).
    """
    text_model = base_model.language_model
    reason = unsupported_reason(text_model)
    if reason is not None:
        return reason
    parameter = next(text_model.parameters())
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, text_model.config.vocab_size, (2, 24), generator=generator).to(parameter.device)
    expected = base_model(input_ids=ids).last_hidden_state.float()
    compiled = _compiled()
    compiled.enabled, compiled.failure = True, None
    fuse_decoder_layers(text_model)
    try:
        actual = base_model(input_ids=ids).last_hidden_state.float()
    except Exception as exc:  # the fused layer code itself does not fit this transformers version
        unfuse_decoder_layers(text_model)
        return f"fused layers failed: {type(exc).__name__}: {_first_line(exc)}"
    error = _relative_error(actual, expected)
    if compiled.failure is None:
        error = max(error, _check_prefixed_graph(text_model.layers[0], generator))
    if compiled.failure is not None:  # no C++/Triton toolchain, an unsupported torch: stay eager, say why
        unfuse_decoder_layers(text_model)
        compiled.enabled = True
        return f"compiling failed: {compiled.failure}"
    # A broken compilation is off by order 1. In half precision, two correct computations of a deep
    # stack already differ by a few percent (measured for the 2B shape in bfloat16: 1.7e-2 between
    # eager runs of 12 and 24 tokens, 3e-2 between compiled and eager), hence the loose bound.
    tolerance = 1e-4 if parameter.dtype == torch.float32 else 1e-1
    if not error <= tolerance:
        unfuse_decoder_layers(text_model)
        return f"compiled layers differ from eager by {error:.2e} (relative), more than {tolerance:.0e}"
    log.info("decoder layers compiled and fused (relative difference to eager %.1e)", error)
    return None


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """|actual - expected| / |expected| (Frobenius norms, in float32)."""
    actual, expected = actual.float(), expected.float()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-12))


def _mark_prefixed_dynamic(rows, cos, sin, prefix_k, prefix_v) -> None:
    """Batch, row length and prefix length vary per call: compile once for all of them."""
    for tensor in (rows, cos, sin):
        torch._dynamo.maybe_mark_dynamic(tensor, 0)
        torch._dynamo.maybe_mark_dynamic(tensor, 1)
    for tensor in (prefix_k, prefix_v):
        torch._dynamo.maybe_mark_dynamic(tensor, 2)


def _attention_weights(layer: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """What `_before_attention` takes as `weights`, in its order."""
    attn = layer.self_attn
    return (
        layer.input_layernorm.weight,
        attn.q_proj.weight,
        attn.k_proj.weight,
        attn.v_proj.weight,
        attn.q_norm.weight,
        attn.k_norm.weight,
    )


def _check_prefixed_graph(layer: torch.nn.Module, generator: torch.Generator) -> float:
    """Compile the shared-prefix graph on a probe and return its relative difference to eager.

    Batch, row length and prefix length differ (3, 5, 7) so the compiler keeps them independent.
    """
    attn = layer.self_attn
    weight = attn.q_proj.weight
    kv_heads = attn.k_proj.weight.shape[0] // attn.head_dim

    def probe(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=weight.device, dtype=weight.dtype)

    rows, cos, sin = probe(3, 5, weight.shape[1]), probe(3, 5, attn.head_dim), probe(3, 5, attn.head_dim)
    prefix_k, prefix_v = probe(1, kv_heads, 7, attn.head_dim), probe(1, kv_heads, 7, attn.head_dim)
    _mark_prefixed_dynamic(rows, cos, sin, prefix_k, prefix_v)
    args = (rows, _attention_weights(layer), cos, sin, prefix_k, prefix_v, layer.input_layernorm.variance_epsilon)
    compiled = _compiled()
    actual = compiled.run(compiled.before_prefixed, _before_attention_prefixed, *args, attn.head_dim)
    expected = _before_attention_prefixed(*args, attn.head_dim)
    return max(_relative_error(a, e) for a, e in zip(actual, expected))


def _make_forward(compiled: CompiledLayers, eager_forward):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        groups = _GROUPS.groups
        tokens = hidden_states.shape[0] * hidden_states.shape[1]
        if groups is None and (not compiled.enabled or tokens < 2):
            return eager_forward(hidden_states, *args, **kwargs)
        position_embeddings = kwargs.get("position_embeddings", args[0] if args else None)
        attention_mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        attn, mlp = self.self_attn, self.mlp
        eps = self.input_layernorm.variance_epsilon
        batch, length, width = hidden_states.shape
        cos, sin = position_embeddings
        cos, sin = cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)
        flat = hidden_states.reshape(tokens, width)
        torch._dynamo.maybe_mark_dynamic(flat, 0)
        weights = _attention_weights(self)
        if groups is not None:
            parts = [_attend_group(compiled, self, group, hidden_states, cos, sin, weights) for group in groups]
            attended = parts[0] if len(parts) == 1 else torch.cat(parts)
        else:
            cos, sin = cos.reshape(tokens, -1), sin.reshape(tokens, -1)
            for tensor in (cos, sin):
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
            q, k, v = compiled.run(compiled.before, _before_attention, flat, weights, cos, sin, eps, attn.head_dim)
            # (N, heads, head_dim) -> (B, heads, S, head_dim), as attention and the cache expect.
            q, k, v = (t.view(batch, length, -1, attn.head_dim).transpose(1, 2) for t in (q, k, v))
            if cache is not None:
                k, v = cache.update(k, v, attn.layer_idx)
            attended, _ = sdpa_attention_forward(attn, q, k, v, attention_mask, dropout=0.0, scaling=attn.scaling)
            attended = attended.reshape(tokens, -1)
        torch._dynamo.maybe_mark_dynamic(attended, 0)
        out = compiled.run(
            compiled.after,
            _after_attention,
            attended,
            flat,
            attn.o_proj.weight,
            self.post_attention_layernorm.weight,
            mlp.gate_proj.weight,
            mlp.up_proj.weight,
            mlp.down_proj.weight,
            eps,
        )
        return out.view(batch, length, width)

    return forward


def _attend_group(compiled, layer, group: PrefixGroup, hidden, cos, sin, weights) -> torch.Tensor:
    """Attention of one prefix group's rows: (rows x length, heads x head_dim).

    The graph that lays out keys and values after the prefix serves groups of at least two rows
    after a prefix of at least two tokens (sizes of 0 or 1 would make the compiler specialise and
    recompile); a single row, or rows without a prefix, take the token-wise graph and the same
    layout eagerly.
    """
    attn, eps, head_dim = layer.self_attn, layer.input_layernorm.variance_epsilon, layer.self_attn.head_dim
    rows, cos, sin = hidden[group.start : group.end], cos[group.start : group.end], sin[group.start : group.end]
    b, s, width = rows.shape
    prefix_k, prefix_v = group.kv[attn.layer_idx] if group.kv is not None else (None, None)
    prefix = prefix_k.shape[2] if prefix_k is not None else 0
    if min(b, s, prefix) >= 2:
        _mark_prefixed_dynamic(rows, cos, sin, prefix_k, prefix_v)
        args = (rows, weights, cos, sin, prefix_k, prefix_v, eps, head_dim)
        q, k, v = compiled.run(compiled.before_prefixed, _before_attention_prefixed, *args)
    else:
        flat, cos, sin = rows.reshape(b * s, width), cos.reshape(b * s, -1), sin.reshape(b * s, -1)
        if b * s >= 2:
            for tensor in (flat, cos, sin):
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
            q, k, v = compiled.run(compiled.before, _before_attention, flat, weights, cos, sin, eps, head_dim)
        else:
            q, k, v = _before_attention(flat, weights, cos, sin, eps, head_dim)
        heads = q.shape[1]
        q = q.view(b, s, heads, head_dim).transpose(1, 2)
        k, v = (_after_prefix(p, t, b, s, heads, head_dim) for p, t in ((prefix_k, k), (prefix_v, v)))
    mask = _prefix_causal_mask(s, prefix, q.device)
    attended = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask[None, None].expand(b, 1, -1, -1), scale=attn.scaling
    )
    return attended.transpose(1, 2).reshape(b * s, -1)


def _prefix_causal_mask(length: int, prefix: int, device: torch.device) -> torch.Tensor:
    """(length, prefix + length) booleans: every row token sees the whole prefix and the row up to itself.

    Rows are right-padded, so this alone keeps padding out of real tokens' view. One per forward.
    """
    key = (length, prefix)
    if key not in _GROUPS.masks:
        _GROUPS.masks[key] = torch.ones(length, prefix + length, dtype=torch.bool, device=device).tril(prefix)
    return _GROUPS.masks[key]
