"""Client-side reciprocal rank fusion (connectors.fusion), used by the Elasticsearch hybrid mode: pure functions."""

from __future__ import annotations

import pytest

from connectors.fusion import rrf


def ranked(*keys: str) -> list[tuple[str, str]]:
    return [(k, k.upper()) for k in keys]


def test_scores_follow_the_formula():
    fused = rrf([ranked("a", "b", "c"), ranked("c", "d")], k=60)
    scores = {f.key: f.score for f in fused}
    assert scores == pytest.approx({"a": 1 / 61, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62})
    assert [f.key for f in fused] == ["c", "a", "b", "d"]  # b and d tie: same best rank, b's list comes first
    assert fused[0].ranks == (3, 1) and fused[1].ranks == (1, None)
    assert fused[0].item == "C"


def test_a_document_in_both_lists_beats_one_leading_a_single_list():
    assert rrf([ranked("a", "b"), ranked("b", "c")])[0].key == "b"


def test_limit_k_and_empty_lists():
    assert [f.key for f in rrf([ranked("a", "b", "c")], limit=2)] == ["a", "b"]
    assert rrf([[], []]) == [] and rrf([]) == []
    steep, flat = rrf([ranked("a", "b")], k=1), rrf([ranked("a", "b")], k=1000)
    assert steep[0].score / steep[1].score > flat[0].score / flat[1].score
    with pytest.raises(ValueError, match="at least 1"):
        rrf([ranked("a")], k=0)


def test_a_key_repeated_in_one_list_counts_once_at_its_best_rank():
    fused = rrf([ranked("a", "b", "a")])
    assert [(f.key, f.ranks) for f in fused] == [("a", (1,)), ("b", (2,))]
