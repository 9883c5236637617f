"""What every dialect is made of: a parsed request, and the parse / render / error triple."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.errors import Kind, SidecarError
from sidecar.types import RerankInput, Timings


@dataclass(frozen=True)
class ParsedRerank:
    """A validated HTTP rerank request: the engine input plus what shapes the response."""

    input: RerankInput
    echoes: tuple[Any, ...]  # per document, what to copy back into its result (as sent)
    top_n: int = 0  # 0 = all documents
    return_documents: bool = False
    raw_scores: bool = False
    api_version: str = "2"  # Cohere API generation of the route: "1" or "2"


@dataclass(frozen=True)
class Dialect:
    """One wire format: its request parser, its response builder and its error body.

    `parse(body, max_documents)` validates a decoded JSON body; `render(parsed, logits, timings,
    model)` builds the response from the engine's logits (request order); `error(code, message)`
    builds the error body its callers read (the status comes from `sidecar.api.status`).
    """

    name: str
    parse: Callable[[object, int], ParsedRerank]
    render: Callable[[ParsedRerank, list[float], Timings, str], object]
    error: Callable[[str, str], dict]


def json_score(value: float) -> float:
    """A score at float32 precision (9 significant digits, what gRPC carries).

    Short numbers also keep OpenSearch ML-commons' stock Cohere post-process working: its JSON
    reader turns numbers longer than 18 characters into BigDecimal and the cast to Double fails.
    """
    return float(f"{value:.9g}")


def check_finite(logits: list[float]) -> None:
    """A non-finite score is the model's failure, never a number to send (JSON has no NaN)."""
    for index, logit in enumerate(logits):
        if not math.isfinite(logit):
            raise SidecarError(Kind.BACKEND, f"the model produced a non-finite score for documents[{index}]")


def generic_error(code: str, message: str) -> dict:
    """The sidecar's own error body, for routes that no other API defines."""
    return {"error": {"code": code, "message": message}}
