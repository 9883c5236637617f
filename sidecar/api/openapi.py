"""The OpenAPI 3.1 document of the HTTP face (`GET /openapi.json`) and its docs page (`GET /docs`).

Each dialect contributes a `DialectDoc`: its request and response bodies as JSON Schema, plus an
example. A route answered by several dialects (one path, bodies told apart by their fields) gets
the `anyOf` of their schemas. Adding a dialect to the document is adding one `DialectDoc` to
`DIALECT_DOCS` under the dialect's name; the routes themselves come from the HTTP app's table.
The docs page is rendered here from the document, with no script or asset from elsewhere.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

from sidecar import __version__ as VERSION


@dataclass(frozen=True)
class DialectDoc:
    """One dialect's share of the document."""

    title: str  # e.g. "Cohere v2 / Jina"
    request: dict  # JSON Schema of the request body
    response: dict  # JSON Schema of the 200 body
    example: dict  # a request body that the server accepts
    error: dict  # JSON Schema of its error body (what its callers read)


@dataclass(frozen=True)
class OperationDoc:
    """One route: `dialects` for a JSON POST, `response` (schema) and `media_type` for a GET."""

    path: str
    method: str
    summary: str
    dialects: tuple[str, ...] = ()
    response: dict = field(default_factory=dict)
    media_type: str = "application/json"
    errors: tuple[int, ...] = ()
    request: dict = field(default_factory=dict)  # a JSON POST's body schema (routes outside the dialects)
    example: dict = field(default_factory=dict)  # and an example body


def _nullable(schema: dict) -> dict:
    """`schema` or null: the dialects read a null option as "not set" (clients send it so)."""
    return {"anyOf": [schema, {"type": "null"}]}


_STRING_LIST = {"type": "array", "items": {"type": "string"}}
_ITEM_OBJECT = {
    "type": "object",
    "description": "Text and/or image(s). An image is an http(s) URL, a data: URI, bare base64 of an image file, "
    "or a path under the server's --media-root.",
    "properties": {"text": {"type": "string"}, "image": {"type": "string"}, "images": _STRING_LIST},
    "anyOf": [{"required": ["text"]}, {"required": ["image"]}, {"required": ["images"]}],
}
_ITEM = {"anyOf": [{"type": "string", "description": "text, or a media string (see the README)"}, _ITEM_OBJECT]}
_COMMON_EXTENSIONS = {
    "instruction": {"type": "string", "description": "the reranker's task instruction (default: the reference's)"},
    "media_in_strings": {"type": "boolean", "default": True, "description": "read JSON media strings as images"},
    "long_documents": _nullable(
        {
            "enum": ["truncate", "chunk"],
            "description": "truncate (default: the reference rule) or chunk: score overlapping windows of each "
            "document's text and keep the best",
        }
    ),
    "chunk_overlap": _nullable(
        {"type": "integer", "minimum": 0, "description": "chunk: tokens consecutive windows share (default: 1/8)"}
    ),
}
_MAX_TOKENS_PER_DOC = _nullable(
    {
        "type": "integer",
        "minimum": 1,
        "description": "each document's text is cut to this many tokens (chunk: per window)",
    }
)
_CHUNK = {
    "type": "object",
    "description": "chunked requests: the window of the document that gave the score",
    "required": ["index", "count", "start", "end"],
    "properties": {
        "index": {"type": "integer", "minimum": 0},
        "count": {"type": "integer", "minimum": 1},
        "start": {"type": "integer", "minimum": 0, "description": "code points of the document's text, [start, end)"},
        "end": {"type": "integer", "minimum": 0},
    },
}
_USAGE = {"type": "object", "properties": {"total_tokens": {"type": "integer"}}}


def _cohere_request(top_n_minimum: int, return_documents: str, extra: dict) -> dict:
    return {
        "type": "object",
        "required": ["query", "documents"],
        "properties": {
            "query": _ITEM,
            "documents": {"type": "array", "items": _ITEM},
            "top_n": _nullable({"type": "integer", "minimum": top_n_minimum, "description": "results (default: all)"}),
            "return_documents": _nullable({"type": "boolean", "description": return_documents}),
            "rank_fields": _nullable(
                {**_STRING_LIST, "description": "fields of object documents scored as `key: value` lines (Cohere v1)"}
            ),
            "model": _nullable(
                {"type": "string", "description": "accepted and ignored: the server scores with its model"}
            ),
            "max_tokens_per_doc": _MAX_TOKENS_PER_DOC,
            **extra,
            **_COMMON_EXTENSIONS,
        },
    }


_RESULTS = {  # best first
    "type": "array",
    "items": {
        "type": "object",
        "required": ["index", "relevance_score"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "relevance_score": {"type": "number", "minimum": 0, "maximum": 1},
            "document": {"type": "object", "description": "the document as sent (a string as {text})"},
            "chunk": _CHUNK,
        },
    },
}
_COHERE_RESPONSE = {
    "type": "object",
    "required": ["id", "results", "meta"],
    "properties": {
        "id": {"type": "string"},
        "model": {"type": "string"},
        "results": _RESULTS,
        "meta": {"type": "object"},
        "usage": _USAGE,
    },
}
_CODE = {"type": "string", "description": "this server's error code: validation, too_large, overloaded, ..."}
_MESSAGE = {"type": "string", "description": "what is wrong, naming the field (documents[3].image)"}

COHERE_V2 = DialectDoc(
    title="Cohere v2",
    request=_cohere_request(1, "default false", {}),
    response=_COHERE_RESPONSE,
    example={"query": "red bike", "documents": ["a red bicycle", {"text": "a car"}], "top_n": 1},
    error={"type": "object", "required": ["message", "code"], "properties": {"message": _MESSAGE, "code": _CODE}},
)

COHERE_V1_JINA = DialectDoc(
    title="Cohere v1 and Jina",
    request=_cohere_request(
        0,
        "default true (Jina's default; Cohere v1 clients ignore the documents)",
        {
            "max_chunks_per_doc": _nullable(
                {
                    "type": "integer",
                    "minimum": 1,
                    "description": "chunk long documents (as long_documents: chunk) into at most this many windows",
                }
            )
        },
    ),
    response=_COHERE_RESPONSE,
    example={"query": "red bike", "documents": [{"text": "a red bicycle"}, "a car"], "top_n": 0},
    error={
        "type": "object",
        "required": ["message", "detail", "code"],
        "properties": {"message": _MESSAGE, "detail": {**_MESSAGE, "description": "the message (Jina)"}, "code": _CODE},
    },
)

_TEI_ERROR = {
    "type": "object",
    "required": ["error", "error_type", "code"],
    "properties": {
        "error": _MESSAGE,
        "error_type": {"enum": ["Validation", "Overloaded", "Unhealthy", "Backend"]},
        "code": _CODE,
    },
}

TEI = DialectDoc(
    title="TEI",
    request={
        "type": "object",
        "required": ["query", "texts"],
        "properties": {
            "query": {"type": "string"},
            "texts": _STRING_LIST,
            "raw_scores": _nullable(
                {"type": "boolean", "description": "return logit(yes) - logit(no) instead of a probability"}
            ),
            "return_text": _nullable({"type": "boolean"}),
            "truncate": _nullable(
                {"type": "boolean", "description": "false: an over-long pair is an error (default true)"}
            ),
            "truncation_direction": _nullable(
                {
                    "enum": ["right", "left", "Right", "Left"],
                    "description": "which end of a text is kept (default right)",
                }
            ),
            "max_tokens_per_doc": _MAX_TOKENS_PER_DOC,
            **_COMMON_EXTENSIONS,
        },
    },
    response={
        "type": "array",
        "items": {
            "type": "object",
            "required": ["index", "score"],
            "properties": {
                "index": {"type": "integer"},
                "score": {"type": "number"},
                "text": {"type": "string"},
                "chunk": _CHUNK,
            },
        },
    },
    example={"query": "red bike", "texts": ["a red bicycle", "a car"], "raw_scores": False},
    error=_TEI_ERROR,
)

VLLM_WEAVIATE = DialectDoc(
    title="vLLM (Milvus's vllm provider) and Weaviate's reranker-transformers",
    request={
        "type": "object",
        "required": ["query", "documents"],
        "not": {"required": ["texts"]},
        "properties": {
            "query": {"type": "string"},
            "documents": _STRING_LIST,
            "top_n": _nullable({"type": "integer", "minimum": 0, "description": "results (default 0: all)"}),
            "return_documents": _nullable({"type": "boolean", "description": "default true"}),
            "model": _nullable({"type": "string", "description": "accepted and ignored"}),
            "property": _nullable({"type": "string", "description": "Weaviate's: accepted and ignored"}),
            "truncate_prompt_tokens": _nullable(
                {"type": "integer", "minimum": -1, "description": "accepted and ignored"}
            ),
            "max_tokens_per_doc": _MAX_TOKENS_PER_DOC,
            **_COMMON_EXTENSIONS,
        },
    },
    response={
        "type": "object",
        "required": ["results", "scores"],
        "properties": {
            "id": {"type": "string"},
            "model": {"type": "string"},
            "usage": _USAGE,
            "results": _RESULTS,  # vLLM's
            "scores": {
                "type": "array",
                "description": "one per document, in request order (Weaviate)",
                "items": {
                    "type": "object",
                    "required": ["document", "score"],
                    "properties": {"document": {"type": "string"}, "score": {"type": "number"}},
                },
            },
        },
    },
    example={"query": "red bike", "documents": ["a red bicycle", "a car"], "property": ""},
    error=_TEI_ERROR,
)

# Dialect name (as in `sidecar.api.dialects`) -> its document fragment.
DIALECT_DOCS: dict[str, DialectDoc] = {
    "cohere-jina-v2": COHERE_V2,
    "cohere-jina-v1": COHERE_V1_JINA,
    "tei": TEI,
    "vllm-weaviate": VLLM_WEAVIATE,
}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "validation, too_large, overloaded, invalid_json, ..."},
                "message": {"type": "string", "description": "what is wrong, naming the field (documents[3].image)"},
            },
        }
    },
}
_UBI_EVENT = {
    "type": "object",
    "required": ["action_name", "query_id"],
    "description": "a UBI 1.x event on a list logged by search_and_rerank(experiment=...)",
    "properties": {
        "action_name": {"type": "string", "description": "impression, click, add_to_cart, purchase, ..."},
        "query_id": {"type": "string", "description": "the served list's query_id"},
        "session_id": {"type": "string"}, "client_id": {"type": "string"}, "user_id": {"type": "string"},
        "timestamp": {"type": "string", "description": "ISO 8601; default: when received"},
        "event_id": {"type": "string", "description": "makes a retried event idempotent; default: a new id"},
        "event_attributes": {"type": "object", "properties": {
            "object": {"type": "object", "properties": {"object_id": {"type": "string"}}},
            "position": {"type": "object", "properties": {"ordinal": {"type": "integer", "minimum": 1}}},
        }},
    },
}  # fmt: skip
EVENTS_REQUEST = {
    "anyOf": [
        {"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": _UBI_EVENT}}},
        _UBI_EVENT,
    ]
}
EVENTS_EXAMPLE = {
    "events": [{"action_name": "click", "query_id": "3f2a...", "session_id": "s-1",
                "event_attributes": {"object": {"object_id": "d3"}, "position": {"ordinal": 2}}}]
}  # fmt: skip
ERROR_MEANINGS = {
    400: "not JSON, not UTF-8, or nested too deeply",
    413: "body, image or request larger than a limit",
    404: "the route is off (POST /v1/events: start the server with --events-db)",
    415: "Content-Type is not JSON",
    421: "Host header not among --trusted-hosts",
    422: "a field is invalid (the message names it)",
    429: "queue full; retry after the Retry-After header's seconds",
    499: "the client disconnected",
    501: "no model loaded for this operation",
    503: "not ready yet, or shutting down",
    504: "deadline passed",
}
POST_ERRORS = (400, 413, 415, 421, 422, 429, 501, 503)


def document(operations: list[OperationDoc], *, max_documents: int, max_body_bytes: int) -> dict:
    """The OpenAPI 3.1 document for these routes, with this server's limits in the schemas."""
    paths: dict[str, dict] = {}
    for op in operations:
        entry: dict = {"summary": op.summary, "operationId": _operation_id(op)}
        if op.dialects:
            fragments: list[DialectDoc] = []
            for name in op.dialects:  # one fragment may serve several dialects (Cohere v1 and v2)
                if DIALECT_DOCS[name] not in fragments:
                    fragments.append(DIALECT_DOCS[name])
            requests = [_with_limits(f.request, max_documents) for f in fragments]
            responses = [f.response for f in fragments]
            entry["requestBody"] = {
                "required": True,
                "description": f"at most {max_body_bytes} bytes; " + ", ".join(f.title for f in fragments),
                "content": {"application/json": {"schema": _one_or_any(requests), "example": fragments[0].example}},
            }
            entry["responses"] = {"200": _json_response("scores", _one_or_any(responses))}
            errors = op.errors or POST_ERRORS
            # The dialect's own body, or the face's for refusals made before the body is read (415, 421).
            error_schema = {"anyOf": [*(f.error for f in fragments), {"$ref": "#/components/schemas/Error"}]}
        else:
            if op.request:
                body = {"schema": op.request, "example": op.example}
                entry["requestBody"] = {"required": True, "content": {"application/json": body}}
            entry["responses"] = {"200": {"description": "OK", "content": {op.media_type: {"schema": op.response}}}}
            errors = op.errors
            error_schema = {"$ref": "#/components/schemas/Error"}
        for status in errors:
            entry["responses"][str(status)] = _json_response(ERROR_MEANINGS[status], error_schema)
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rerank-sidecar HTTP API",
            "version": VERSION,
            "description": "Multimodal reranking (Qwen3-VL-Reranker) in the Cohere, Jina, TEI, vLLM and Weaviate "
            "dialects.",
        },
        "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }


def _operation_id(op: OperationDoc) -> str:
    name = op.path.strip("/").replace("/", "_").replace(".", "_") or "root"
    return f"{op.method.lower()}_{name}"


def _with_limits(schema: dict, max_documents: int) -> dict:
    limited = json.loads(json.dumps(schema))
    for key in ("documents", "texts"):
        if key in limited.get("properties", {}):
            limited["properties"][key]["maxItems"] = max_documents
    return limited


def _one_or_any(schemas: list[dict]) -> dict:
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def docs_page(doc: dict) -> str:
    """A self-contained HTML page listing every operation with its schemas and an example call."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rerank-sidecar HTTP API</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "pre{background:#f4f4f4;padding:.6rem;overflow-x:auto;font-size:.85rem}"
        "h2{font-family:monospace;border-top:1px solid #ccc;padding-top:1rem}"
        "summary{cursor:pointer}</style></head><body>",
        f"<h1>{html.escape(doc['info']['title'])} <small>{html.escape(doc['info']['version'])}</small></h1>",
        f"<p>{html.escape(doc['info']['description'])} Machine-readable: <a href='/openapi.json'>/openapi.json</a>."
        " Errors on a rerank route come in its dialect's body (Cohere <code>{message}</code>, Jina"
        ' <code>{detail}</code>, TEI <code>{error, error_type}</code>); elsewhere <code>{"error": {"code",'
        ' "message"}}</code>.</p>',
    ]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            parts.append(f"<h2>{method.upper()} {html.escape(path)}</h2><p>{html.escape(op['summary'])}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                example = json.dumps(body["example"])
                call = f"curl -s localhost:8080{path} -H 'content-type: application/json' -d '{example}'"
                parts.append(f"<pre>{html.escape(call)}</pre>")
                parts.append(_details("request body", body["schema"]))
            for status, response in op["responses"].items():
                schema = next(iter(response.get("content", {}).values()), {}).get("schema")
                label = f"{status}: {response['description']}"
                parts.append(
                    _details(label, schema) if status == "200" and schema else f"<div>{html.escape(label)}</div>"
                )
    parts.append("</body></html>")
    return "".join(parts)


def _details(label: str, schema: dict) -> str:
    text = json.dumps(schema, indent=2)
    return f"<details><summary>{html.escape(label)}</summary><pre>{html.escape(text)}</pre></details>"
