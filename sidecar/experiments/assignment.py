"""A/B assignment: a stable hash of (salt, experiment, user id) picks an arm, the same in every process."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sidecar.experiments.errors import ExperimentError


def unit_hash(*parts: str) -> float:
    """A number in [0, 1) fixed by the parts (SHA-256; Python's hash() differs between processes)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_id(user_id: str, salt: str) -> str:
    """A user id as logged when ids are hashed: stable for one salt, not reversible without it."""
    return hashlib.sha256(f"{salt}\x1f{user_id}".encode()).hexdigest()[:32]


def assign(user_id: str, arms: Sequence[str], weights: Sequence[float], *, experiment: str, salt: str) -> str:
    """The arm `user_id` sees: sticky (same inputs, same arm) and split in proportion to `weights`."""
    if not user_id:
        raise ExperimentError("an A/B experiment needs a user_id or session_id to assign an arm")
    point = unit_hash(salt, experiment, user_id) * sum(weights)
    for arm, weight in zip(arms, weights):
        if point < weight:
            return arm
        point -= weight
    return arms[-1]  # float rounding at the top end
