"""Prompt text for Qwen3-VL-Reranker and Qwen3-VL-Embedding, and the reference truncation rule.

The strings reproduce what the official reference renders through the Qwen3-VL chat template:
content parts are concatenated with no separator, an image part renders as
`<|vision_start|><|image_pad|><|vision_end|>` and a video part as
`<|vision_start|><|video_pad|><|vision_end|>`; the processor later expands the pads.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

RERANK_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
RERANK_DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
EMBED_DEFAULT_INSTRUCTION = "Represent the user's input."

RERANK_MAX_LENGTH = 10240
EMBED_MAX_LENGTH = 8192
# The reference truncates everything but the final tokens: "<|im_end|>\n<|im_start|>assistant\n".
KEPT_TAIL_TOKENS = 5

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
GENERATION_PROMPT = "<|im_start|>assistant\n"


def side_content(text: str | None, n_images: int, n_videos: int) -> str:
    """Render one side (query or document): videos, then images, then text; "NULL" when empty."""
    if not text and not n_images and not n_videos:
        return "NULL"
    return VIDEO_PLACEHOLDER * n_videos + IMAGE_PLACEHOLDER * n_images + (text or "")


def rerank_query_prefix(instruction: str | None, query_content: str) -> str:
    """Everything of a rerank prompt up to and including the query side."""
    return (
        f"<|im_start|>system\n{RERANK_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n<Instruct>: {instruction or RERANK_DEFAULT_INSTRUCTION}<Query>:{query_content}"
    )


def rerank_document_suffix(document_content: str) -> str:
    """The rest of a rerank prompt after the query side, generation prompt included."""
    return f"\n<Document>:{document_content}<|im_end|>\n{GENERATION_PROMPT}"


def embed_instruction(instruction: str | None) -> str:
    """The embedding system message: the instruction, with a final punctuation mark added if missing."""
    instruction = (instruction or "").strip()
    if not instruction:
        return EMBED_DEFAULT_INSTRUCTION
    if not unicodedata.category(instruction[-1]).startswith("P"):
        instruction += "."
    return instruction


def embed_prompt(instruction: str | None, content: str) -> str:
    """A full embedding prompt for one input."""
    return (
        f"<|im_start|>system\n{embed_instruction(instruction)}<|im_end|>\n"
        f"<|im_start|>user\n{content}<|im_end|>\n{GENERATION_PROMPT}"
    )


def truncate_keeping_special(token_ids: Sequence[int], max_length: int, special_ids: Iterable[int]) -> list[int]:
    """The reference rule: keep every special token, and the first non-special tokens that fit.

    A sequence of at most `max_length` tokens is returned unchanged.
    """
    if len(token_ids) <= max_length:
        return list(token_ids)
    special = set(special_ids)
    budget = max_length - sum(1 for t in token_ids if t in special)
    kept: list[int] = []
    for t in token_ids:
        if t in special:
            kept.append(t)
        elif budget > 0:
            kept.append(t)
            budget -= 1
    return kept


def truncate_rerank_pair(token_ids: Sequence[int], max_length: int, special_ids: Iterable[int]) -> list[int]:
    """Reranker truncation: the final tokens are kept whole, the rest follows `truncate_keeping_special`."""
    head, tail = token_ids[:-KEPT_TAIL_TOKENS], token_ids[-KEPT_TAIL_TOKENS:]
    return truncate_keeping_special(head, max_length, special_ids) + list(tail)
