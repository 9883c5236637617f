"""An independent reranker computation that follows the official Qwen3-VL-Reranker reference.

Conversation built as the reference builds it, rendered by the checkpoint's chat template,
media processed by `qwen-vl-utils` (the reference's own preprocessing library), tokens expanded
by the checkpoint's processor, truncated by the reference rule, then ONE un-batched forward of the
full model (lm_head included): logit = logits[yes] - logits[no] at the last position.
"""

from __future__ import annotations

import re

import torch

SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
FACTOR = 32


def side(prefix: str, text=None, images=(), frames=(), video_file=None, null="NULL", text_first=False) -> list[dict]:
    """One side as the reference builds it; `null` and `text_first` exist to build deliberately wrong
    variants (an empty side rendered otherwise, text before the media) for sensitivity checks."""
    content = [{"type": "text", "text": prefix}]
    if not text and not images and not frames and not video_file:
        return content + [{"type": "text", "text": null}]
    if text and text_first:
        content.append({"type": "text", "text": text})
    if video_file:
        content.append({"type": "video", "video": "file://" + str(video_file), "fps": 1.0, "max_frames": 64})
    if frames:
        frames = list(frames)
        if len(frames) > 64:
            import numpy as np

            frames = [frames[i] for i in np.linspace(0, len(frames) - 1, 64, dtype=int)]
        content.append({"type": "video", "video": frames, "total_pixels": 10 * 768 * FACTOR * FACTOR})
    for image in images:
        content.append(
            {"type": "image", "image": image, "min_pixels": 4 * FACTOR * FACTOR, "max_pixels": 1800 * FACTOR * FACTOR}
        )
    if text and not text_first:
        content.append({"type": "text", "text": text})
    return content


def conversation(
    query: dict, document: dict, instruction: str | None = None, system: str = SYSTEM, **rules
) -> list[dict]:
    user = [{"type": "text", "text": "<Instruct>: " + (instruction or INSTRUCTION)}]
    user += side("<Query>:", **query, **rules) + side("\n<Document>:", **document, **rules)
    return [{"role": "system", "content": [{"type": "text", "text": system}]}, {"role": "user", "content": user}]


def truncate(ids: list[int], max_length: int, special: set[int]) -> list[int]:
    if len(ids) <= max_length:
        return ids
    keep = max_length - sum(t in special for t in ids)
    out = []
    for t in ids:
        if t in special:
            out.append(t)
        elif keep > 0:
            out.append(t)
            keep -= 1
    return out


def _collapse_video_wrappers(text: str) -> str:
    """transformers 5.x keeps the template's outer <|vision_start|>..<|vision_end|> around an
    expanded video; transformers 4.57 (the reference's version, and the checkpoints' training
    format) replaces them. Undo the 5.x wrapper so both give the reference token sequence."""
    pattern = re.compile(
        r"<\|vision_start\|>((?:<[\d.]+ seconds><\|vision_start\|>(?:<\|video_pad\|>)+<\|vision_end\|>)+)<\|vision_end\|>"
    )
    return pattern.sub(r"\1", text)


def processed_conversation(processor, conv: list[dict], edit_ids=None):
    """Template, qwen-vl-utils media and the processor, as the reference runs them for one conversation.

    `edit_ids` may rewrite the token ids (the reranker's truncation) before masks and types are built.
    """
    from qwen_vl_utils import process_vision_info

    text = processor.apply_chat_template([conv], tokenize=False, add_generation_prompt=True)
    images, videos, video_kwargs = process_vision_info(
        [conv], image_patch_size=16, return_video_kwargs=True, return_video_metadata=True
    )
    metadata = None
    if videos is not None:
        videos, metadata = (list(x) for x in zip(*videos))
    inputs = processor(
        text=text,
        images=images,
        videos=videos,
        video_metadata=metadata,
        truncation=False,
        padding=False,
        do_resize=False,
        return_tensors="pt",
        **video_kwargs,
    )
    expanded = processor.tokenizer.decode(inputs["input_ids"][0])
    fixed = _collapse_video_wrappers(expanded)
    ids = (
        processor.tokenizer(fixed, add_special_tokens=False)["input_ids"]
        if fixed != expanded
        else inputs["input_ids"][0].tolist()
    )
    if edit_ids is not None:
        ids = edit_ids(ids)
    inputs["input_ids"] = torch.tensor([ids])
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    types = torch.zeros_like(inputs["input_ids"])
    types[inputs["input_ids"] == processor.image_token_id] = 1
    types[inputs["input_ids"] == processor.video_token_id] = 2
    inputs["mm_token_type_ids"] = types
    return inputs


def reference_inputs(
    processor, query: dict, document: dict, instruction: str | None = None, max_length: int = 10240, **variant
):
    special = set(processor.tokenizer.all_special_ids)
    return processed_conversation(
        processor,
        conversation(query, document, instruction, **variant),
        lambda ids: truncate(ids[:-5], max_length, special) + ids[-5:],
    )


@torch.no_grad()
def reference_logit(
    model, processor, query: dict, document: dict, instruction: str | None = None, max_length: int = 10240, **variant
) -> float:
    """`variant` (system=..., null=..., text_first=True) builds a deliberately wrong prompt instead."""
    inputs = reference_inputs(processor, query, document, instruction, max_length, **variant)
    logits = model(**inputs).logits[0, -1]
    vocab = processor.tokenizer.get_vocab()
    return float(logits[vocab["yes"]] - logits[vocab["no"]])


def embedding_conversation(item: dict, instruction: str | None = None) -> list[dict]:
    import unicodedata

    if instruction:
        instruction = instruction.strip()
        if instruction and not unicodedata.category(instruction[-1]).startswith("P"):
            instruction += "."
    content = (
        side("", **item)[1:]
        if (item.get("text") or item.get("images") or item.get("frames"))
        else [{"type": "text", "text": "NULL"}]
    )
    return [
        {"role": "system", "content": [{"type": "text", "text": instruction or "Represent the user's input."}]},
        {"role": "user", "content": content},
    ]


@torch.no_grad()
def reference_embedding(base_model, processor, item: dict, instruction: str | None = None) -> torch.Tensor:
    """One un-batched forward of the base model, last-token pooling, L2 normalisation."""
    inputs = processed_conversation(processor, embedding_conversation(item, instruction))
    hidden = base_model(**inputs).last_hidden_state[0, -1]
    return torch.nn.functional.normalize(hidden, p=2, dim=-1)
