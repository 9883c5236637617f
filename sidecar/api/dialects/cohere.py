"""Cohere `/v2/rerank`, and Cohere v1 + Jina `/v1/rerank` (one superset: each client reads its own keys).

Request: `query` (a string, or an object `{text?, image?, images?}`: Jina's image queries),
`documents` (each a string or an object), optional `top_n`, `return_documents`, `rank_fields`,
`model` (accepted, not used: this server scores with the model it loaded), `instruction`
(extension: the reranker's task instruction) and `media_in_strings` (extension, default true; see
`sidecar.api.dialects.items`). `max_tokens_per_doc` (Cohere v2) cuts each document's text to that
many tokens, as Cohere does. Cohere v1's `max_chunks_per_doc` chunks long documents as Cohere
does (each document's text in windows, the document scored by its best window; Cohere's
reranking best practices describe the procedure), with at most that many windows (the server's
--max-chunks-per-document caps it). The extensions `long_documents` ("truncate" | "chunk") and
`chunk_overlap` choose the same on either route; each result of a chunked request carries
`chunk: {index, count, start, end}`. Beyond these, the engine truncates each pair at the model's
maximum length.

Where the originals differ, each route follows its own:

* `return_documents` defaults to false on `/v2/rerank` (Cohere) and to true on `/v1/rerank`
  (Jina returns documents unless told not to, and its clients read `results[].document.text`;
  Cohere v1 clients ignore a document they did not ask for).
* `top_n: 0` on `/v1/rerank` means all documents, as Jina treats a zero `top_n`; Cohere v2 requires
  at least 1.
* Errors: Cohere's SDK reads `message`, Jina's clients read `detail` (`/v1/rerank` sends both).

`rank_fields` (Cohere v1 semi-structured documents): the named fields of an object document are
scored, in the order given, as `key: value` lines (Cohere reranks "using the values in title,
author, text sequentially", and recommends the same YAML-like form for v2, which dropped
`rank_fields`). Without `rank_fields`, or with Cohere's default `["text"]`, an object is scored on
its `text`. `image`/`images` keys are images whatever `rank_fields` says. A document comes back
(`return_documents`) exactly as it was sent, all its fields kept, as Cohere does.

Response: `{id, model, results: [{index, relevance_score, document?}], meta: {api_version,
billed_units: {search_units}, tokens: {input_tokens, output_tokens}}, usage: {total_tokens}}`.
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

from sidecar.api.convert import ranked, sigmoid
from sidecar.api.dialects.base import (
    Dialect,
    ParsedRerank,
    check_finite,
    chunk_field,
    json_score,
    long_document_options,
)
from sidecar.api.dialects.fields import (
    array,
    boolean,
    json_object,
    optional_int,
    optional_string,
    string_list,
)
from sidecar.api.dialects.items import parse_images, parse_item, parse_query
from sidecar.errors import invalid
from sidecar.types import ItemInput, RerankInput, Timings

SEARCH_UNIT_DOCUMENTS = 100  # Cohere bills one search unit per query and up to 100 documents
DEFAULT_RANK_FIELDS = ["text"]


def parse_rerank(body: object, max_documents: int, api_version: str = "2") -> ParsedRerank:
    """A Cohere (`api_version` "2": `/v2/rerank`) or Cohere v1 / Jina ("1": `/v1/rerank`) request."""
    body = json_object(body)
    media_strings = boolean(body, "media_in_strings", True)
    optional_string(body, "model")  # checked for type, then ignored: this server scores with its own model
    instruction = optional_string(body, "instruction").strip()
    max_chunks = optional_int(body, "max_chunks_per_doc", 1) if api_version == "1" else None
    long_documents = long_document_options(body, chunk_by_default=max_chunks is not None)
    rank_fields = string_list(body, "rank_fields")
    query = parse_query(body, media_strings)
    raw = array(body, "documents", max_documents)
    documents = tuple(_document(d, f"documents[{i}]", media_strings, rank_fields) for i, d in enumerate(raw))
    v1 = api_version == "1"
    return ParsedRerank(
        input=RerankInput(
            query=query, documents=documents, instruction=instruction, max_chunks=max_chunks or 0, **long_documents
        ),
        echoes=tuple({"text": d} if isinstance(d, str) else d for d in raw),
        top_n=optional_int(body, "top_n", 0 if v1 else 1) or 0,
        return_documents=boolean(body, "return_documents", v1),
        api_version=api_version,
    )


def _document(value: object, where: str, media_strings: bool, rank_fields: list[str] | None) -> ItemInput:
    """A document; an object with `rank_fields` other than the default is scored on those fields."""
    if rank_fields is None or rank_fields == DEFAULT_RANK_FIELDS or not isinstance(value, dict):
        return parse_item(value, where, media_strings)
    fields = [f for f in rank_fields if f in value and f not in ("image", "images")]
    images = parse_images(value, where)
    if not fields and not images:
        raise invalid(f"{where} has none of rank_fields {rank_fields}")
    text = "\n".join(f"{field}: {_field_text(value[field])}" for field in fields)
    return ItemInput(text=text, images=images)


def _field_text(value: object) -> str:
    """A field's value as text: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def rerank_body(parsed: ParsedRerank, logits: list[float], timings: Timings, model: str, chunks: list) -> dict:
    """The Cohere + Jina response (each client reads its own fields)."""
    check_finite(logits)
    results = []
    for index in ranked(logits, parsed.top_n):
        result: dict[str, Any] = {"index": index, "relevance_score": json_score(sigmoid(logits[index]))}
        if parsed.return_documents:
            result["document"] = parsed.echoes[index]
        if chunks:
            result["chunk"] = chunk_field(chunks[index])
        results.append(result)
    units = -(-len(logits) // SEARCH_UNIT_DOCUMENTS) if logits else 0
    return {
        "id": str(uuid.uuid4()),
        "model": model,
        "results": results,
        "meta": {
            "api_version": {"version": parsed.api_version},
            "billed_units": {"search_units": units},
            "tokens": {"input_tokens": timings.input_tokens, "output_tokens": 0},
        },
        "usage": {"total_tokens": timings.input_tokens},
    }


def cohere_error(code: str, message: str) -> dict:
    """Cohere's error body: the SDK reads `message`; `code` is this server's error code."""
    return {"message": message, "code": code}


def cohere_jina_error(code: str, message: str) -> dict:
    """`/v1/rerank`'s error body: Cohere's `message` and Jina's `detail` (its clients raise with it)."""
    return {"message": message, "detail": message, "code": code}


COHERE_V1 = Dialect("cohere-jina-v1", functools.partial(parse_rerank, api_version="1"), rerank_body, cohere_jina_error)
COHERE_V2 = Dialect("cohere-jina-v2", parse_rerank, rerank_body, cohere_error)
