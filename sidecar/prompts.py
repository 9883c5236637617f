"""Prompt text for Qwen3-VL-Reranker and Qwen3-VL-Embedding, the one place the prompts are written.

The pieces reproduce what the official reference renders through the Qwen3-VL chat template:
content parts are concatenated with no separator, an image part renders as
`<|vision_start|><|image_pad|><|vision_end|>` and a video part as
`<|vision_start|><|video_pad|><|vision_end|>` (a visual's own placeholder expands the pads). The
reranker's truncation rule (special tokens kept, the final 5 tokens kept) is in `models/pairs.py`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

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
DOCUMENT_LEAD = "\n<Document>:"  # every rerank document side starts so
TAIL = "<|im_end|>\n" + GENERATION_PROMPT  # the final KEPT_TAIL_TOKENS tokens of every prompt

# A prompt is a list of pieces: (text, trusted). Trusted template text may hold special-token
# markers; user text (queries, documents, instructions) is encoded as text (see models/tokens.py).
Piece = tuple[str, bool]


def side(text: str, placeholders: Sequence[str] = ()) -> list[Piece]:
    """One side (query or document): its visuals' placeholders (videos first, then images), then its
    text; "NULL" when it has neither."""
    if not text and not placeholders:
        return [("NULL", True)]
    return [(placeholder, True) for placeholder in placeholders] + ([(text, False)] if text else [])


def rerank_head(instruction: str | None, query_side: list[Piece]) -> list[Piece]:
    """A rerank prompt up to and including the query side (shared by all the request's pairs)."""
    return [
        (f"<|im_start|>system\n{RERANK_SYSTEM}<|im_end|>\n<|im_start|>user\n<Instruct>: ", True),
        (instruction or RERANK_DEFAULT_INSTRUCTION, not instruction),
        ("<Query>:", True),
        *query_side,
    ]


def rerank_document(document_side: list[Piece]) -> list[Piece]:
    """The rest of a rerank prompt after the query side, generation prompt included."""
    return [(DOCUMENT_LEAD, True), *document_side, (TAIL, True)]


def embed_instruction(instruction: str | None) -> str:
    """The embedding system message: the instruction, with a final punctuation mark added if missing."""
    instruction = (instruction or "").strip()
    if not instruction:
        return EMBED_DEFAULT_INSTRUCTION
    if not unicodedata.category(instruction[-1]).startswith("P"):
        instruction += "."
    return instruction


def embed_prompt(instruction: str | None, item_side: list[Piece]) -> list[Piece]:
    """A full embedding prompt for one input."""
    return [
        ("<|im_start|>system\n", True),
        (embed_instruction(instruction), not instruction),
        ("<|im_end|>\n<|im_start|>user\n", True),
        *item_side,
        (TAIL, True),
    ]


def render(pieces: list[Piece]) -> str:
    """The prompt as one string (what a chat template renders)."""
    return "".join(text for text, _ in pieces)
