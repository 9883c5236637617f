"""Deterministic benchmark inputs: queries, ~200-token text documents, image documents."""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image

from sidecar.types import ItemInput, MediaRef

QUERY_TEXT = "lightweight waterproof trail running shoes with a grippy sole for muddy winter races"
WORDS = (
    "shoe sole grip trail road running waterproof breathable mesh upper heel toe cushion foam carbon plate "
    "lightweight durable winter summer race training comfort fit size wide narrow colour red blue black white "
    "green orange review price delivery return warranty material rubber lace support stability drop stack "
    "marathon ultra mud rock snow wet dry ankle arch neutral pronation spike track daily tempo recovery"
).split()


def text_of_tokens(tokenizer, rng: random.Random, low: int, high: int) -> str:
    """Random product-like prose whose token count lies in [low, high]."""
    target = rng.randint(low, high)
    words: list[str] = []
    estimate = 0
    while estimate < target:  # cheap running estimate, corrected exactly below
        word = rng.choice(WORDS)
        words.append(word)
        estimate += _word_tokens(tokenizer, word)
    while len(tokenizer.encode(" ".join(words))) > target:
        words.pop()
    return " ".join(words).capitalize() + "."


_WORD_TOKENS: dict[str, int] = {}


def _word_tokens(tokenizer, word: str) -> int:
    if word not in _WORD_TOKENS:
        _WORD_TOKENS[word] = len(tokenizer.encode(" " + word))
    return _WORD_TOKENS[word]


def random_image(size: int, seed: int) -> bytes:
    """A PNG of random pixels: the model's cost depends on the size, not the content."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def text_query() -> ItemInput:
    return ItemInput(text=QUERY_TEXT)


def image_query(size: int = 448) -> ItemInput:
    return ItemInput(text=QUERY_TEXT, images=(MediaRef(data=random_image(size, seed=1)),))


def text_documents(tokenizer, count: int, low: int = 150, high: int = 250, seed: int = 0) -> tuple[ItemInput, ...]:
    rng = random.Random(seed)
    return tuple(ItemInput(text=text_of_tokens(tokenizer, rng, low, high), id=f"t{i}") for i in range(count))


def image_documents(tokenizer, count: int, size: int = 320, seed: int = 0) -> tuple[ItemInput, ...]:
    """Documents of one image and a ~30-token caption each."""
    rng = random.Random(seed)
    return tuple(
        ItemInput(
            text=text_of_tokens(tokenizer, rng, 20, 40),
            images=(MediaRef(data=random_image(size, 100 + i)),),
            id=f"i{i}",
        )
        for i in range(count)
    )
