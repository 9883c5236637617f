"""Truncation follows the reference rule: specials kept, final 5 tokens kept, the rest cut at 10240."""

from __future__ import annotations

import math

from sidecar.media import MediaPolicy, MediaResolver
from sidecar.prompts import truncate_keeping_special, truncate_rerank_pair
from sidecar.types import ItemInput, RerankInput
from tests.reference import reference_logit


def test_rule_keeps_specials_and_the_first_ordinary_tokens():
    specials = {100, 101}
    tokens = [100, 1, 2, 3, 101, 4, 5, 6, 100]
    assert truncate_keeping_special(tokens, 6, specials) == [100, 1, 2, 3, 101, 100]
    assert truncate_keeping_special(tokens, 20, specials) == tokens
    assert truncate_rerank_pair(tokens + [7, 8, 9, 10, 11], 6, specials) == [100, 1, 2, 3, 101, 100, 7, 8, 9, 10, 11]


def test_overlong_document_is_truncated_and_still_scores(reranker, tiny_loaded):
    model, processor = tiny_loaded
    long_text = " ".join(f"word{i}" for i in range(6000))  # ~18k tokens
    query, document = {"text": "find word42"}, {"text": long_text}
    expected = reference_logit(model, processor, query, document)
    request = RerankInput(ItemInput(text=query["text"]), (ItemInput(text=long_text), ItemInput(text="short")))
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy()))
    row = prepared.rows[0]
    assert len(prepared.prefix) + len(row.ids) == 10240 + 5
    assert row.total_tokens == 10245
    reranker.forward_prefix(prepared.prefix)
    logits = reranker.forward_rows(prepared.rows).tolist()
    assert math.isfinite(logits[0])
    assert abs(logits[0] - expected) < 1e-4
    tail = processor.tokenizer.decode(row.ids[-5:])
    assert tail == "<|im_end|>\n<|im_start|>assistant\n"
