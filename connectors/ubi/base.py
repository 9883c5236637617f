"""What every engine-backed experiment log shares: one error type for its client's failures, and the refusal of
query ids already logged before anything is written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.errors import EngineError
from sidecar.experiments.errors import ExperimentError
from sidecar.experiments.records import UbiQuery


class EngineUbiStore:
    """Base of the engine stores; subclasses give `product` and `known_queries`."""

    product = "engine"

    def known_queries(self, query_ids: Any) -> dict[str, UbiQuery]:
        raise NotImplementedError

    def _guard(self, call, *args: Any, **kwargs: Any) -> Any:
        """Run a client call; its failure becomes an `EngineError` naming the engine and the call."""
        try:
            return call(*args, **kwargs)
        except ExperimentError:
            raise
        except Exception as exc:  # each client has its own error hierarchy; callers get one
            raise EngineError(
                self.product,
                f"experiment log {getattr(call, '__name__', 'call').strip('_')}",
                f"{type(exc).__name__}: {exc}",
            ) from exc

    def _refuse_logged(self, queries: Sequence[UbiQuery]) -> None:
        """ExperimentError, before any write, when a query id repeats in the batch or is stored already."""
        ids = [q.query_id for q in queries]
        if len(set(ids)) != len(ids):
            raise ExperimentError("a query_id appears twice in one batch")
        taken = self.known_queries(ids)
        if taken:
            raise ExperimentError(f"query_id {sorted(taken)[0]!r} is already logged")
