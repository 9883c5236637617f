"""Hugging Face text-embeddings-inference (TEI): `POST /rerank` with `texts`, and TEI's `/info` keys.

Request: `{query: str, texts: [str], raw_scores?, return_text?, truncate?, truncation_direction?}`
plus this server's `instruction`, `media_in_strings` and long-document (`long_documents`,
`max_tokens_per_doc`, `chunk_overlap`) extensions. Response: `[{index, score,
text?}]`, best first; `score` is the probability sigmoid(logit_yes - logit_no), or that logit with
`raw_scores: true`.

Truncation follows TEI: a pair longer than the model's maximum is cut unless `truncate` is false
(then it is an error naming the text); absent `truncate` means true, as TEI's `--auto-truncate`
default. `truncation_direction` `"right"` (TEI's default: the reference rule) or `"left"` (the
document keeps its end); TEI accepts `Left`/`Right` too, and so does this server.

Errors are TEI's body, `{"error": message, "error_type": ...}` with TEI's types (`Validation`,
`Overloaded`, `Unhealthy`, `Backend`), plus this server's `code`. TEI answers an empty `texts`
with an error; this server answers `[]`.
"""

from __future__ import annotations

from typing import Any

from sidecar import __version__
from sidecar.api.convert import ranked, sigmoid
from sidecar.api.dialects.base import (
    Dialect,
    ParsedRerank,
    check_finite,
    chunk_field,
    json_score,
    long_document_options,
)
from sidecar.api.dialects.fields import boolean, json_object, optional_string, type_name
from sidecar.api.dialects.items import parse_query, parse_strings
from sidecar.errors import invalid
from sidecar.types import RerankInput, Timings

DIRECTIONS = {"right": "right", "Right": "right", "left": "left", "Left": "left"}
# This server's error codes -> TEI's error_type (router/src/lib.rs ErrorType in TEI).
ERROR_TYPES = {
    "overloaded": "Overloaded",
    "unavailable": "Unhealthy",
    "not_served": "Unhealthy",
    "backend": "Backend",
    "deadline": "Backend",
    "cancelled": "Backend",
}


def parse_tei(body: object, max_documents: int) -> ParsedRerank:
    """TEI `/rerank` request (see the module doc)."""
    body = json_object(body)
    media_strings = boolean(body, "media_in_strings", True)
    instruction = optional_string(body, "instruction").strip()
    query = parse_query(body, media_strings, strings_only=True)
    texts, documents = parse_strings(body, "texts", max_documents, media_strings)
    return ParsedRerank(
        input=RerankInput(
            query=query,
            documents=documents,
            instruction=instruction,
            truncate=boolean(body, "truncate", True),
            truncation_direction=truncation_direction(body.get("truncation_direction")),
            documents_field="texts",
            **long_document_options(body),
        ),
        echoes=tuple(texts),
        return_documents=boolean(body, "return_text", False),
        raw_scores=boolean(body, "raw_scores", False),
    )


def truncation_direction(value: object) -> str:
    """TEI's `truncation_direction` as the engine's "right" / "left" (absent: "right")."""
    if value is None:
        return "right"
    if not isinstance(value, str) or value not in DIRECTIONS:
        shown = repr(value) if isinstance(value, str) else type_name(value)
        raise invalid(f'truncation_direction must be "right" or "left", not {shown}')
    return DIRECTIONS[value]


def tei_body(parsed: ParsedRerank, logits: list[float], timings: Timings, model: str, chunks: list) -> list[dict]:
    """TEI response: `[{index, score, text?}]`, best first."""
    check_finite(logits)
    results = []
    for index in ranked(logits, 0):
        result: dict[str, Any] = {
            "index": index,
            "score": json_score(logits[index] if parsed.raw_scores else sigmoid(logits[index])),
        }
        if parsed.return_documents:
            result["text"] = parsed.echoes[index]
        if chunks:
            result["chunk"] = chunk_field(chunks[index])
        results.append(result)
    return results


def tei_error(code: str, message: str) -> dict:
    """TEI's error body (Haystack's and Weaviate's clients read `error` as a string)."""
    return {"error": message, "error_type": ERROR_TYPES.get(code, "Validation"), "code": code}


def tei_info(info, settings) -> dict[str, Any]:
    """TEI's `/info` keys for this server (`info`: the `rerank.v1.ModelInfo`; `settings`: `Settings`).

    `model_type` is TEI's form for a reranker: one label, the probability of "yes".
    """
    reranker = next((m for m in info.models if m.kind == "reranker"), None)
    return {
        "model_id": info.model,
        "model_sha": None,
        "model_dtype": reranker.dtype if reranker else "",
        "served_model_name": info.model,
        "model_type": {"reranker": {"id2label": {"0": "yes"}, "label2id": {"yes": 0}}},
        "max_concurrent_requests": settings.max_queued_pairs,  # every request holds at least one pair
        "max_input_length": reranker.max_length if reranker else 0,
        "max_batch_tokens": info.max_batch_tokens,
        "max_batch_requests": settings.max_batch_rows,
        "max_client_batch_size": settings.max_documents,
        "auto_truncate": True,
        "tokenization_workers": settings.preprocess_workers,
        "version": __version__,
        "sha": None,
        "docker_label": None,
    }


TEI = Dialect("tei", parse_tei, tei_body, tei_error)
