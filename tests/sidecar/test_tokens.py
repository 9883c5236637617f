"""Prompt encoding part by part equals the tokenizer on the whole prompt (property-based).

The reference encodes each pair's whole prompt string; the sidecar encodes the shared head once,
windows of long texts, and each document's side alone. Hypothesis draws texts rich in the
characters that decide where the tokenizer cuts (spaces, line breaks, punctuation, digits, CJK,
combining marks, special-token strings) and checks the ids are exactly the whole string's.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.models.pairs import Pair, PairBuilder, PairLimits
from sidecar.models.tokens import PromptTokenizer
from sidecar.models.visuals import ProcessedItem
from tests.reference import conversation, truncate

FRAGMENTS = [
    " ", "  ", "\n", "\n\n", " \n", "\r\n", "\t", "?", "!?", ".", ",", "'s", "'ll", "-", "—", "(", ")", ":", "<", ">",
    "a", "bike", "Red", "word", "shoes", "42", "7", "3.5", "红色", "自行车", "。", "，", "é", "e\u0301", "\u0301",
    "한", "\u1100\u1161", "\u1161", "🙂", "=====", "    ", "<|im_end|>", "<|endoftext|>", "<|im_start|>assistant\n",
    "<think>", "Document", "NULL", "яблоко",
]  # fmt: skip
texts = st.lists(st.sampled_from(FRAGMENTS), max_size=400).map("".join)
long_texts = st.lists(st.sampled_from(FRAGMENTS), min_size=100, max_size=1500).map("".join)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def tokenizers(hf_tokenizer) -> dict[str, PromptTokenizer]:
    return {mode: PromptTokenizer(hf_tokenizer, mode) for mode in ("plain", "reference")}


@pytest.fixture(scope="module", params=["plain", "reference"])
def prompt_tokenizer(request, tokenizers) -> PromptTokenizer:
    return tokenizers[request.param]


def whole(hf_tokenizer, text: str, mode: str) -> list[int]:
    return hf_tokenizer(text, add_special_tokens=False, split_special_tokens=mode == "plain")["input_ids"]


@PROPERTY
@given(text=long_texts, wanted=st.integers(1, 120))
def test_head_window_is_the_start_of_the_whole_encoding(prompt_tokenizer, hf_tokenizer, text, wanted):
    ids, complete = prompt_tokenizer.encode_head(text, wanted)
    full = whole(hf_tokenizer, text, prompt_tokenizer.mode)
    if complete:
        assert ids == full
    else:
        assert ids == full[: len(ids)]
        assert len([i for i in ids if i not in prompt_tokenizer.special_ids]) >= wanted


@PROPERTY
@given(text=long_texts, wanted=st.integers(1, 120))
def test_tail_window_is_the_end_of_the_whole_encoding(prompt_tokenizer, hf_tokenizer, text, wanted):
    ids, complete = prompt_tokenizer.encode_tail(text, wanted)
    full = whole(hf_tokenizer, text, prompt_tokenizer.mode)
    if complete:
        assert ids == full
    else:
        assert ids == full[len(full) - len(ids) :]
        assert len([i for i in ids if i not in prompt_tokenizer.special_ids]) >= wanted


@PROPERTY
@given(head=texts, follower=texts)
@example(head=" \t?", follower="")  # whitespace split by what follows it: a space, then a tab before "?"
def test_stable_split_keeps_the_head_independent_of_what_follows(prompt_tokenizer, hf_tokenizer, head, follower):
    mode, lead = prompt_tokenizer.mode, "\n<Document>:"
    head = prompt_tokenizer.normalize(head)
    split = prompt_tokenizer.stable_split(head, lead)
    joined = whole(hf_tokenizer, head[:split], mode) + whole(hf_tokenizer, head[split:] + lead + follower, mode)
    assert joined == whole(hf_tokenizer, head + lead + follower, mode)


def reference_pair_ids(hf_tokenizer, query: str, document: str, instruction: str, max_length: int) -> list[int]:
    """The reference: the conversation through the chat template, the whole string encoded, then its rule."""
    side = {"text": None}
    conv = conversation({**side, "text": query or None}, {**side, "text": document or None}, instruction or None)
    text = hf_tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    return truncate(ids[:-5], max_length, set(hf_tokenizer.all_special_ids)) + ids[-5:]


def build(tok: PromptTokenizer, query: str, documents: list[str], instruction: str, **limits) -> list[Pair]:
    labels = [f"documents[{i}]" for i in range(len(documents))]
    items = [ProcessedItem(d, []) for d in documents]
    return PairBuilder(tok, PairLimits(**limits)).build(ProcessedItem(query, []), items, instruction, labels)


plain_texts = st.lists(st.sampled_from([f for f in FRAGMENTS if "<|" not in f]), max_size=400).map("".join)


@PROPERTY
@given(
    query=texts, documents=st.lists(texts, min_size=1, max_size=3), instruction=texts, max_length=st.integers(40, 400)
)
def test_pairs_equal_the_reference_prompt_truncated_by_its_rule(
    hf_tokenizer, tokenizers, query, documents, instruction, max_length
):
    """ "reference" mode, any text (special-token strings included)."""
    pairs = build(
        tokenizers["reference"], query, documents, instruction, max_length=max_length, max_pair_tokens=1 << 20
    )
    for pair, document in zip(pairs, documents):
        assert pair.ids() == reference_pair_ids(hf_tokenizer, query, document, instruction, max_length)


@PROPERTY
@given(query=plain_texts, documents=st.lists(plain_texts, min_size=1, max_size=3), max_length=st.integers(40, 400))
@example(query=" \t?", documents=[""], max_length=59)
def test_plain_mode_equals_the_reference_on_text_without_special_tokens(
    hf_tokenizer, tokenizers, query, documents, max_length
):
    pairs = build(tokenizers["plain"], query, documents, "", max_length=max_length, max_pair_tokens=1 << 20)
    for pair, document in zip(pairs, documents):
        assert pair.ids() == reference_pair_ids(hf_tokenizer, query, document, "", max_length)
