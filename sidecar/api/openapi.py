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
}
_USAGE = {"type": "object", "properties": {"total_tokens": {"type": "integer"}}}

COHERE_JINA = DialectDoc(
    title="Cohere (v1, v2) and Jina",
    request={
        "type": "object",
        "required": ["query", "documents"],
        "properties": {
            "query": _ITEM,
            "documents": {"type": "array", "items": _ITEM},
            "top_n": {"type": "integer", "minimum": 1, "description": "results returned (default: all)"},
            "return_documents": {
                "type": "boolean",
                "description": "default false (Cohere); true when the query is an object or a document has an image",
            },
            "model": {"type": "string", "description": "accepted and ignored: the server scores with its model"},
            "max_tokens_per_doc": {"type": "integer", "minimum": 1, "description": "accepted and ignored"},
            **_COMMON_EXTENSIONS,
        },
    },
    response={
        "type": "object",
        "required": ["id", "results", "meta"],
        "properties": {
            "id": {"type": "string"},
            "model": {"type": "string"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "relevance_score"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "relevance_score": {"type": "number", "minimum": 0, "maximum": 1},
                        "document": {"type": "object"},
                    },
                },
            },
            "meta": {"type": "object"},
            "usage": _USAGE,
        },
    },
    example={"query": "red bike", "documents": ["a red bicycle", {"text": "a car"}], "top_n": 1},
)

TEI = DialectDoc(
    title="TEI",
    request={
        "type": "object",
        "required": ["query", "texts"],
        "properties": {
            "query": {"type": "string"},
            "texts": _STRING_LIST,
            "raw_scores": {"type": "boolean", "description": "return logit(yes) - logit(no) instead of a probability"},
            "return_text": {"type": "boolean"},
            # Accepted with any value and ignored, so typed nowhere: the engine truncates (see the README).
            "truncate": {"description": "accepted and ignored (the engine truncates each pair)"},
            "truncation_direction": {"description": "accepted and ignored"},
            **_COMMON_EXTENSIONS,
        },
    },
    response={
        "type": "array",
        "items": {
            "type": "object",
            "required": ["index", "score"],
            "properties": {"index": {"type": "integer"}, "score": {"type": "number"}, "text": {"type": "string"}},
        },
    },
    example={"query": "red bike", "texts": ["a red bicycle", "a car"], "raw_scores": False},
)

# Dialect name (as in `sidecar.api.http_schemas`) -> its document fragment.
DIALECT_DOCS: dict[str, DialectDoc] = {"cohere-jina-v1": COHERE_JINA, "cohere-jina-v2": COHERE_JINA, "tei": TEI}

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
ERROR_MEANINGS = {
    400: "not JSON, not UTF-8, or nested too deeply",
    413: "body, image or request larger than a limit",
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
        else:
            entry["responses"] = {"200": {"description": "OK", "content": {op.media_type: {"schema": op.response}}}}
            errors = op.errors
        for status in errors:
            entry["responses"][str(status)] = _json_response(
                ERROR_MEANINGS[status], {"$ref": "#/components/schemas/Error"}
            )
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rerank-sidecar HTTP API",
            "version": VERSION,
            "description": "Multimodal reranking (Qwen3-VL-Reranker) in the Cohere, Jina and TEI dialects.",
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
        ' Errors are <code>{"error": {"code", "message"}}</code>.</p>',
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
