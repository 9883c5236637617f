"""The HTTP face's rerank dialects: JSON bodies <-> engine objects, one module per dialect.

| route        | dialect (module)                   | callers                                           |
|--------------|------------------------------------|---------------------------------------------------|
| `/v2/rerank` | `cohere-jina-v2` (`cohere`)        | Cohere v2 SDK, LangChain/LlamaIndex/Haystack Cohere rerankers, Milvus `cohere`, Elasticsearch `custom`, OpenSearch ML-commons |
| `/v1/rerank` | `cohere-jina-v1` (`cohere`)        | Cohere v1 SDK, Jina clients, Weaviate `reranker-cohere` (1.35) |
| `/rerank`    | `tei` (`tei`): body with `texts`   | TEI clients, Milvus `tei`, Haystack `HuggingFaceTEIRanker` |
| `/rerank`    | `vllm-weaviate` (`vllm_weaviate`): body with `documents` | Milvus `vllm`, Weaviate `reranker-transformers` |

Each dialect is a `Dialect`: a parser, a response builder and an error body (`base`); queries and
documents, images and media strings are read by `items`, single fields by `fields`. A route picks
its dialect in one place, `for_body`.
"""

from __future__ import annotations

from sidecar.api.dialects.base import Dialect, ParsedRerank, generic_error, json_score
from sidecar.api.dialects.cohere import COHERE_V1, COHERE_V2
from sidecar.api.dialects.tei import TEI, tei_info
from sidecar.api.dialects.vllm_weaviate import VLLM_WEAVIATE

# Route -> the dialect it answers in (and renders errors in, before the body is read).
RERANK_ROUTES: dict[str, Dialect] = {"/v2/rerank": COHERE_V2, "/v1/rerank": COHERE_V1, "/rerank": TEI}
DIALECTS: dict[str, Dialect] = {d.name: d for d in (COHERE_V2, COHERE_V1, TEI, VLLM_WEAVIATE)}


def for_body(route: Dialect, body: object) -> Dialect:
    """The dialect of a request: its route's, except that `/rerank` has three callers with two bodies.

    TEI sends `{query, texts}`; Milvus's vLLM provider and Weaviate's reranker-transformers send
    `{query, documents}`. A body with both or neither stays TEI, whose parser names what is missing.
    """
    if route is TEI and isinstance(body, dict) and "documents" in body and "texts" not in body:
        return VLLM_WEAVIATE
    return route


__all__ = [
    "COHERE_V1",
    "COHERE_V2",
    "DIALECTS",
    "RERANK_ROUTES",
    "TEI",
    "VLLM_WEAVIATE",
    "Dialect",
    "ParsedRerank",
    "for_body",
    "generic_error",
    "json_score",
    "tei_info",
]
