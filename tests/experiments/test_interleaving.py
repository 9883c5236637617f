"""Interleaving and A/B assignment: unbiased, order-preserving, sticky, split as weighted."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from sidecar.experiments.design import ExperimentPlan
from sidecar.experiments.errors import ExperimentError
from sidecar.experiments.interleaving import credit, interleave, winner

RANKING = st.lists(st.integers(0, 30).map(str), min_size=1, max_size=20, unique=True)


def random_clicks(n: int, rng: random.Random) -> list[int]:
    return [p for p in range(1, n + 1) if rng.random() < 0.6 / p]  # position-biased, independent of the arm


def test_identical_arms_win_equally_often() -> None:
    rng = random.Random(7)
    wins = {"a": 0, "b": 0}
    for q in range(4000):
        docs = [f"d{i}" for i in rng.sample(range(60), 20)]
        served = interleave({"a": docs, "b": docs}, "team_draft", 10, random.Random(q))
        best = winner(credit(served, random_clicks(len(served.hit_ids), rng)))
        if best:
            wins[best] += 1
    decided = wins["a"] + wins["b"]
    assert decided > 1000
    assert binomtest(wins["a"], decided, 0.5).pvalue > 0.01, wins


def test_balanced_identical_arms_always_tie() -> None:
    rng = random.Random(5)
    for q in range(500):
        docs = [f"d{i}" for i in rng.sample(range(60), 20)]
        served = interleave({"a": docs, "b": docs}, "balanced", 10, random.Random(q))
        assert winner(credit(served, random_clicks(10, rng))) is None


def test_unbiased_on_different_rankings_with_random_clicks() -> None:
    """Clicks that ignore relevance must not favour either of two different rankings (team draft)."""
    rng = random.Random(11)
    wins = {"a": 0, "b": 0}
    for q in range(4000):
        docs = [f"d{i}" for i in range(30)]
        a, b = rng.sample(docs, 15), rng.sample(docs, 15)
        served = interleave({"a": a, "b": b}, "team_draft", 10, random.Random(q))
        best = winner(credit(served, random_clicks(len(served.hit_ids), rng)))
        if best:
            wins[best] += 1
    assert binomtest(wins["a"], wins["a"] + wins["b"], 0.5).pvalue > 0.01, wins


@settings(max_examples=300, deadline=None)
@given(rankings=st.lists(RANKING, min_size=2, max_size=4), seed=st.integers(0, 2**32), length=st.integers(1, 40))
def test_merged_list_keeps_every_arm_order(rankings: list[list[str]], seed: int, length: int) -> None:
    arms = {f"arm{i}": r for i, r in enumerate(rankings)}
    served = interleave(arms, "team_draft", length, random.Random(seed))
    assert len(served.hit_ids) == len(set(served.hit_ids)) == len(served.teams)
    assert len(served.hit_ids) == min(length, len({h for r in rankings for h in r}))
    for arm, ranking in arms.items():
        contributed = [h for h, t in zip(served.hit_ids, served.teams) if t == arm]
        assert contributed == [h for h in ranking if h in contributed]  # in the arm's own order
    for position, (hit, arm) in enumerate(zip(served.hit_ids, served.teams)):
        # each pick is its arm's best hit not already shown: no arm's order is ever skipped over
        shown = set(served.hit_ids[:position])
        assert hit == next(h for h in arms[arm] if h not in shown)


@settings(max_examples=200, deadline=None)
@given(a=RANKING, b=RANKING, seed=st.integers(0, 2**32))
def test_balanced_shows_prefixes_of_both_rankings(a: list[str], b: list[str], seed: int) -> None:
    served = interleave({"a": a, "b": b}, "balanced", 50, random.Random(seed))
    assert set(served.hit_ids) == set(a) | set(b)
    for k in range(1, len(served.hit_ids) + 1):
        top = set(served.hit_ids[:k])
        # every prefix of the merged list is a prefix of a joined with a prefix of b (their tops differ by <= 1)
        depth_a = next((i for i, h in enumerate(a) if h not in top), len(a))
        depth_b = next((i for i, h in enumerate(b) if h not in top), len(b))
        assert top == set(a[:depth_a]) | set(b[:depth_b])


def test_team_draft_alternates_contributions() -> None:
    served = interleave({"a": list("abcdef"), "b": list("fedcba")}, "team_draft", 6, random.Random(3))
    counts = [served.teams[: 2 * k].count("a") for k in range(1, 4)]
    assert counts == [1, 2, 3]  # each round one pick per arm


def test_multileaving_credits_three_arms() -> None:
    rankings = {"x": list("abc"), "y": list("def"), "z": list("ghi")}
    served = interleave(rankings, "team_draft", 9, random.Random(0))
    assert sorted(served.teams) == sorted("xxxyyyzzz")
    clicked = [served.teams.index("z") + 1]
    assert winner(credit(served, clicked)) == "z"
    assert winner(credit(served, [])) is None


def test_ab_assignment_is_sticky_and_split_by_weight() -> None:
    plan = ExperimentPlan(name="split", arms=("a", "b"), design="ab", weights=(3, 1))
    users = [f"user-{i}" for i in range(8000)]
    first = [plan.assign(u) for u in users]
    assert first == [plan.assign(u) for u in users]  # sticky
    assert first == [
        ExperimentPlan(name="split", arms=("a", "b"), design="ab", weights=(3, 1)).assign(u) for u in users
    ]
    share = first.count("a")
    assert binomtest(share, len(users), 0.75).pvalue > 0.01, share
    reshuffled = ExperimentPlan(name="split", arms=("a", "b"), design="ab", weights=(3, 1), salt="new")
    assert sum(x != reshuffled.assign(u) for x, u in zip(first, users)) > 1000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"arms": ()}, "has no arms"),
        ({"arms": ("a",)}, "at least two arms"),
        ({"arms": ("a", "a")}, "names an arm twice"),
        ({"arms": ("a", "b"), "design": "ab", "weights": (1, -1)}, "non-negative"),
        ({"arms": ("a", "b"), "design": "ab", "weights": (1,)}, "1 weights for 2 arms"),
        ({"arms": ("a", "b", "c"), "method": "balanced"}, "exactly two arms"),
        ({"arms": ("a", "b"), "method": "coin"}, "unknown interleaving method"),
        ({"arms": ("a", "b"), "design": "abc"}, "unknown design"),
    ],
)
def test_bad_plans_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        ExperimentPlan(name="bad", **kwargs)


def test_unknown_arm_and_missing_ranking() -> None:
    plan = ExperimentPlan(name="e", arms=("a", "b"))
    with pytest.raises(ExperimentError, match="unknown arm 'c'"):
        plan.merge({"a": ["1"], "b": ["2"], "c": ["3"]}, "q", 5)
    with pytest.raises(ExperimentError, match="no ranking for arm 'b'"):
        plan.merge({"a": ["1"]}, "q", 5)
    ab = ExperimentPlan(name="e", arms=("a", "b"), design="ab")
    with pytest.raises(ExperimentError, match="unknown arm 'z'"):
        ab.query_record(user_query="q", hit_ids_served=["1"], user_id="u", arm="z")


def test_query_record_hashes_users_and_can_drop_query_text() -> None:
    plan = ExperimentPlan(name="e", arms=("a", "b"), store_query_text=False)
    served = plan.merge({"a": ["1", "2"], "b": ["2", "3"]}, "q1", 3)
    record = plan.query_record(user_query="secret", hit_ids_served=served.hit_ids, user_id="alice", served=served)
    assert record.user_query == "" and record.client_id != "alice" and len(record.client_id) == 32
    assert record.query_attributes["teams"] == list(served.teams)
    plain = ExperimentPlan(name="e", arms=("a", "b"), hash_user_ids=False)
    assert (
        plain.query_record(user_query="q", hit_ids_served=served.hit_ids, user_id="alice", served=served).client_id
        == "alice"
    )
