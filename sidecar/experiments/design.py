"""`ExperimentPlan`: what an experiment is, independent of where its rankings come from.

The plan assigns A/B arms, merges interleaved rankings, and writes the served list as a UBI query record
whose `query_attributes` say which experiment, design and arm(s) produced it. `connectors.experiment` runs a
plan inside `search_and_rerank()`; the simulator runs it over rankings of its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sidecar.experiments.assignment import assign, hash_id, unit_hash
from sidecar.experiments.errors import ExperimentError
from sidecar.experiments.interleaving import METHODS, Interleaved, interleave
from sidecar.experiments.records import UbiQuery, hit_ids, new_query_id

Design = Literal["interleave", "ab"]


@dataclass(frozen=True, kw_only=True)
class ExperimentPlan:
    """An experiment over named arms.

    Args:
        name: the experiment's name, logged with every served list.
        arms: arm names, at least two for interleaving, at least one for A/B.
        design: "interleave" (every query sees a merge of all arms) or "ab" (a user sees one arm).
        method: interleaving method, "team_draft" (any number of arms) or "balanced" (two).
        weights: A/B traffic split per arm (default equal); ignored by interleaving.
        salt: mixes into the A/B hash; change it to reshuffle users between experiments (default: the name).
        hash_user_ids: log user ids hashed with the salt instead of as given.
        store_query_text: log the query text as UBI's `user_query`; False logs "" (nothing a user typed
            is stored).
    """

    name: str
    arms: tuple[str, ...]
    design: Design = "interleave"
    method: str = "team_draft"
    weights: tuple[float, ...] | None = None
    salt: str | None = None
    hash_user_ids: bool = True
    store_query_text: bool = True
    _weights: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ExperimentError("the experiment needs a name")
        arms = tuple(self.arms)
        if not arms:
            raise ExperimentError(f"experiment {self.name!r} has no arms")
        if any(not isinstance(a, str) or not a for a in arms):
            raise ExperimentError(f"experiment {self.name!r}: every arm needs a non-empty name")
        if len(set(arms)) != len(arms):
            raise ExperimentError(f"experiment {self.name!r} names an arm twice: {list(arms)}")
        if self.design not in ("interleave", "ab"):
            raise ExperimentError(f"unknown design {self.design!r}; use 'interleave' or 'ab'")
        if self.design == "interleave":
            if len(arms) < 2:
                raise ExperimentError(f"interleaving needs at least two arms; {self.name!r} has {len(arms)}")
            if self.method not in METHODS:
                raise ExperimentError(f"unknown interleaving method {self.method!r}; use one of {', '.join(METHODS)}")
            if self.method == "balanced" and len(arms) != 2:
                raise ExperimentError("balanced interleaving takes exactly two arms; use team_draft for more")
        weights = tuple(self.weights) if self.weights is not None else (1.0,) * len(arms)
        if len(weights) != len(arms):
            raise ExperimentError(f"{len(weights)} weights for {len(arms)} arms")
        if any(not isinstance(w, int | float) or not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ExperimentError(f"weights must be finite, non-negative and not all zero; got {list(weights)}")
        object.__setattr__(self, "arms", arms)
        object.__setattr__(self, "_weights", tuple(float(w) for w in weights))

    @property
    def salt_value(self) -> str:
        return self.name if self.salt is None else self.salt

    def check_arm(self, arm: str) -> str:
        """`arm` if the plan has it; ExperimentError naming the known arms otherwise."""
        if arm not in self.arms:
            raise ExperimentError(f"unknown arm {arm!r}; experiment {self.name!r} has {', '.join(self.arms)}")
        return arm

    def assign(self, user_id: str) -> str:
        """The A/B arm of `user_id` (sticky; split by the weights)."""
        return assign(str(user_id), self.arms, self._weights, experiment=self.name, salt=self.salt_value)

    def merge(self, rankings: Mapping[str, Sequence[str]], query_id: str, length: int) -> Interleaved:
        """Interleave the arms' rankings for one query; the coin flips are seeded by the query id."""
        unknown = set(rankings) - set(self.arms)
        if unknown:
            raise ExperimentError(
                f"unknown arm {sorted(unknown)[0]!r}; experiment {self.name!r} has {', '.join(self.arms)}"
            )
        missing = [a for a in self.arms if a not in rankings]
        if missing:
            raise ExperimentError(f"no ranking for arm {missing[0]!r}")
        ordered = {arm: hit_ids(rankings[arm]) for arm in self.arms}
        rng = random.Random(int(unit_hash(self.name, query_id) * 2**53))
        return interleave(ordered, self.method, length, rng)

    def client_id(self, user_id: str | None) -> str:
        """The id logged as UBI's client_id: the user id, hashed when `hash_user_ids`; "anonymous" without one."""
        if not user_id:
            return "anonymous"
        return hash_id(str(user_id), self.salt_value) if self.hash_user_ids else str(user_id)

    def query_record(
        self,
        *,
        user_query: str,
        hit_ids_served: Sequence[str],
        user_id: str | None,
        arm: str | None = None,
        served: Interleaved | None = None,
        query_id: str | None = None,
        application: str | None = None,
    ) -> UbiQuery:
        """The UBI query record of one served list: A/B gives `arm`, interleaving gives `served`."""
        attributes: dict[str, object] = {"experiment": self.name, "design": self.design, "arms": list(self.arms)}
        if self.design == "ab":
            attributes["arm"] = self.check_arm(arm or "")
        else:
            if served is None:
                raise ExperimentError("an interleaved list needs its teams")
            attributes["method"] = served.method
            attributes["teams"] = list(served.teams[: len(hit_ids_served)])
            if served.rankings is not None:
                attributes["rankings"] = {a: list(r) for a, r in served.rankings.items()}
        extra = {"application": application} if application else {}
        return UbiQuery(
            query_id=query_id or new_query_id(),
            client_id=self.client_id(user_id),
            user_query=user_query if self.store_query_text else "",
            query_response_hit_ids=hit_ids(hit_ids_served),
            query_attributes=attributes,
            **extra,
        )
