"""`POST /rerank` with `documents`: Milvus 2.6's vLLM rerank provider and Weaviate's reranker-transformers.

Both post `{query, documents: [str]}` to `/rerank` (Weaviate adds `"property": ""`, Milvus may add
`truncate_prompt_tokens`, vLLM's own clients `model` and `top_n`), but they read different keys,
so the response carries both:

* `results: [{index, relevance_score, document: {text}}]`, best first, cut to `top_n` (vLLM's
  response; Milvus sorts it by `index` and maps the scores by position, so every document comes
  back unless `top_n` is sent);
* `scores: [{document, score}]`, one per document in request order (Weaviate's
  reranker-transformers `RankResponse`: its module maps the scores to its objects by position).

The long-document extensions (`long_documents`, `max_tokens_per_doc`, `chunk_overlap`) are the
other routes'. Scores are probabilities. `truncate_prompt_tokens` (vLLM: keep that many tokens) is checked to be
an integer and ignored: the engine truncates each pair at the model's maximum length. Errors are
TEI's body, whose `error` is the string Weaviate's module reads.
"""

from __future__ import annotations

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
from sidecar.api.dialects.fields import boolean, json_object, optional_int, optional_string
from sidecar.api.dialects.items import parse_query, parse_strings
from sidecar.api.dialects.tei import tei_error
from sidecar.types import RerankInput, Timings


def parse_documents(body: object, max_documents: int) -> ParsedRerank:
    """A `{query, documents}` request on `/rerank` (see the module doc)."""
    body = json_object(body)
    media_strings = boolean(body, "media_in_strings", True)
    optional_string(body, "model")  # checked for type, then ignored: this server scores with its own model
    optional_string(body, "property")  # Weaviate: the property the documents come from
    optional_int(body, "truncate_prompt_tokens", -1)  # checked for type, then ignored (see module doc)
    instruction = optional_string(body, "instruction").strip()
    query = parse_query(body, media_strings, strings_only=True)
    texts, documents = parse_strings(body, "documents", max_documents, media_strings)
    return ParsedRerank(
        input=RerankInput(query=query, documents=documents, instruction=instruction, **long_document_options(body)),
        echoes=tuple(texts),
        top_n=optional_int(body, "top_n", 0) or 0,
        return_documents=boolean(body, "return_documents", True),
    )


def documents_body(parsed: ParsedRerank, logits: list[float], timings: Timings, model: str, chunks: list) -> dict:
    """vLLM's `results` and Weaviate's `scores` in one body."""
    check_finite(logits)
    scores = [json_score(sigmoid(logit)) for logit in logits]
    results = []
    for index in ranked(logits, parsed.top_n):
        result: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if parsed.return_documents:
            result["document"] = {"text": parsed.echoes[index]}
        if chunks:
            result["chunk"] = chunk_field(chunks[index])
        results.append(result)
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "model": model,
        "usage": {"total_tokens": timings.input_tokens},
        "results": results,
        "scores": [{"document": text, "score": score} for text, score in zip(parsed.echoes, scores)],
    }


VLLM_WEAVIATE = Dialect("vllm-weaviate", parse_documents, documents_body, tei_error)
