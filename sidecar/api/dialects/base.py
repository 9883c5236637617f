"""What every dialect is made of: a parsed request, and the parse / render / error triple."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.api.convert import check_chunking
from sidecar.api.dialects.fields import optional_int, type_name
from sidecar.errors import Kind, SidecarError, invalid
from sidecar.types import RerankInput, Timings

LONG_DOCUMENTS = ("truncate", "chunk")


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
    model, chunks)` builds the response from the engine's logits and, when chunking, each
    document's best window (both in request order; `chunks` is empty otherwise); `error(code, message)`
    builds the error body its callers read (the status comes from `sidecar.api.status`).
    """

    name: str
    parse: Callable[[object, int], ParsedRerank]
    render: Callable[[ParsedRerank, list[float], Timings, str, list], object]
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


def long_document_options(body: dict, chunk_by_default: bool = False) -> dict[str, Any]:
    """The long-document fields every rerank body takes, as `RerankInput` keyword arguments.

    `long_documents` ("truncate", the reference rule, or "chunk": score overlapping windows of each
    document's text and keep the best), `max_tokens_per_doc` (text tokens per document, or per
    window) and `chunk_overlap` (tokens consecutive windows share; chunking only).
    `chunk_by_default` is what an absent `long_documents` means.
    """
    mode = body.get("long_documents")
    if mode is None:
        mode = "chunk" if chunk_by_default else "truncate"
    elif mode not in LONG_DOCUMENTS:
        shown = repr(mode) if isinstance(mode, str) else type_name(mode)
        raise invalid(f'long_documents must be "truncate" or "chunk", not {shown}')
    max_tokens = optional_int(body, "max_tokens_per_doc", 1) or 0
    overlap = optional_int(body, "chunk_overlap", 0) or 0
    check_chunking(mode == "chunk", max_tokens, overlap)
    return {"long_documents": mode, "max_tokens_per_doc": max_tokens, "chunk_overlap": overlap}


def chunk_field(chunk: Any) -> dict[str, int]:
    """A result's `chunk`: the window of its document that gave the score (text span in code points)."""
    return {"index": chunk.index, "count": chunk.count, "start": chunk.start, "end": chunk.end}
