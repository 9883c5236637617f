"""JSON bodies of the HTTP face <-> engine objects, with validation that names the field path.

Dialects (one parser and one response builder each; every route is thin over them):

* **Cohere / Jina** (`POST /v2/rerank`, `POST /v1/rerank`). Request: `query` (string, or an object
  `{text?, image?, images?}`), `documents` (each a string or an object `{text?, image?, images?}`),
  optional `top_n` (>= 1; default all), `return_documents`, `model` (accepted, not used: this
  server scores with the model it loaded), `instruction` (extension: the reranker's task
  instruction), `media_in_strings` (extension, default true: see below). `max_tokens_per_doc`
  (Cohere) is checked to be a positive integer and otherwise ignored, like `rank_fields`,
  `api_version` and any unknown field: the engine truncates each pair at the model's maximum
  length, keeping the end of the prompt, instead of cutting each document.
  Cohere and Jina requests are compatible, so both routes parse one superset and answer one
  superset: `{id, model, results: [{index, relevance_score, document?}], meta: {api_version,
  billed_units: {search_units}, tokens: {input_tokens}}, usage: {total_tokens}}` (each client
  reads its own fields and ignores the others). The one behaviour that differs is the
  `return_documents` default: Jina's is true, Cohere's false. A request is Jina-style, and
  defaults to true, when its query is an object or any document object has `image`/`images`
  (Cohere has neither); any other request defaults to false. Send `return_documents` explicitly
  to be independent of this rule.
* **TEI** (`POST /rerank`): `{query, texts: [str], raw_scores?, return_text?, truncate?,
  truncation_direction?}` -> `[{index, score, text?}]`, best first. `score` is the probability
  sigmoid(logit_yes - logit_no), or that logit itself with `raw_scores: true`. `truncate` and
  `truncation_direction` are accepted and ignored (the engine always truncates as above).

Images as `image` values (and in the media strings below): an `http(s)://` URL, a `data:` URI, a
bare base64 string of a PNG/JPEG/GIF/WebP/BMP file (recognised by the decoded file signature), or
otherwise a path under the server's `--media-root` (`file://` optional).

**Media strings** (images through OpenSearch, Milvus and other string-only callers). A query or
document given as a *string* is plain text, always, unless the whole string (surrounding
whitespace aside) is a JSON object whose keys are all among `text`, `image`, `images` and that has
`image` (one reference) or `images` (a list of references), for example::

    {"text": "A red bicycle leaning on a wall", "image": "https://cdn.example.com/bike.jpg"}

Such a string is scored as that text plus those images, exactly as the object form would be.
Everything else keeps its meaning as text: a string that is a URL or a path, a line such as
`image: x.png` (YAML and docker-compose files contain such lines), JSON with any other key, or a
JSON object without `image`/`images`. Once a string is recognised, a wrong type or an unusable
reference is an error naming the document, never a silent fallback to text. A request can turn
recognition off with `"media_in_strings": false`, e.g. where indexed text comes from untrusted
authors (references are fetched under the same limits and private-address refusal as any image
URL). OpenSearch's rerank processor concatenates its `document_fields` without a separator, so
store the whole JSON in one field and name only that one.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.api.convert import ranked, sigmoid
from sidecar.errors import Kind, SidecarError, invalid
from sidecar.types import ItemInput, MediaRef, RerankInput, Timings


def json_score(value: float) -> float:
    """A score at float32 precision (9 significant digits, what gRPC carries).

    Short numbers also keep OpenSearch ML-commons' stock Cohere post-process working: its JSON
    reader turns numbers longer than 18 characters into BigDecimal and the cast to Double fails.
    """
    return float(f"{value:.9g}")


MEDIA_STRING_KEYS = frozenset({"text", "image", "images"})
SEARCH_UNIT_DOCUMENTS = 100  # Cohere bills one search unit per query and up to 100 documents
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


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
    """One wire format: a parser (body, max_documents) and a response builder."""

    name: str
    parse: Callable[[object, int], ParsedRerank]
    render: Callable[[ParsedRerank, list[float], Timings, str], object]


# ---- field helpers -------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{where} must be a string, not {_type_name(value)}")
    return value


def _optional_string(body: dict, key: str) -> str:
    value = body.get(key)
    return "" if value is None else _string(value, key)


def _bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise invalid(f"{key} must be a boolean, not {_type_name(value)}")
    return value


def _object(body: object) -> dict:
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, not {_type_name(body)}")
    return body


def _list(body: dict, key: str, max_items: int) -> list:
    if key not in body:
        raise invalid(f"{key} is missing")
    value = body[key]
    if not isinstance(value, list):
        raise invalid(f"{key} must be an array, not {_type_name(value)}")
    if len(value) > max_items:
        raise invalid(f"{key} has {len(value)} entries; this server accepts at most {max_items}")
    return value


def _optional_int(body: dict, key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{key} must be an integer, not {_type_name(value)}")
    if value < minimum:
        raise invalid(f"{key} must be at least {minimum}, got {value}")
    return value


# ---- media -----------------------------------------------------------------------------------


def media_ref(value: object, where: str) -> MediaRef:
    """An image reference: URL, data: URI, bare base64 image, or media-root path (see module doc)."""
    text = _string(value, where).strip()
    if not text:
        raise invalid(f"{where} is empty")
    if text.startswith("data:") or text.split("://", 1)[0].lower() in ("http", "https", "file"):
        return MediaRef(uri=text)
    data = _base64_image(text)
    return MediaRef(data=data) if data is not None else MediaRef(uri=text)


def _base64_image(text: str) -> bytes | None:
    """The decoded bytes when `text` is base64 of a known image format; None otherwise."""
    compact = "".join(text.split())
    if len(compact) < 16 or not set(compact) <= _BASE64_CHARS:
        return None
    try:
        data = base64.b64decode(compact.replace("-", "+").replace("_", "/") + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if data.startswith(_IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return data
    return None


def _images(obj: dict, where: str) -> tuple[MediaRef, ...]:
    if "image" in obj and "images" in obj:
        raise invalid(f"{where} has both image and images; use one")
    if "image" in obj:
        return (media_ref(obj["image"], f"{where}.image"),)
    refs = obj.get("images", [])
    if not isinstance(refs, list):
        raise invalid(f"{where}.images must be an array, not {_type_name(refs)}")
    return tuple(media_ref(ref, f"{where}.images[{i}]") for i, ref in enumerate(refs))


def _item_object(obj: dict, where: str) -> ItemInput:
    """`{text?, image?, images?}`; other keys are ignored."""
    if not {"text", "image", "images"} & set(obj):
        raise invalid(f"{where} has no text, image or images")
    text = _string(obj.get("text", ""), f"{where}.text")
    return ItemInput(text=text, images=_images(obj, where))


def parse_media_string(value: str, where: str, enabled: bool = True) -> ItemInput:
    """A query or document string: plain text, or a media string (the module docstring's rule)."""
    stripped = value.strip()
    if not enabled or not (stripped.startswith("{") and stripped.endswith("}")):
        return ItemInput(text=value)
    try:
        obj = json.loads(stripped)
    except ValueError:
        return ItemInput(text=value)
    if not isinstance(obj, dict) or not set(obj) <= MEDIA_STRING_KEYS or not {"image", "images"} & set(obj):
        return ItemInput(text=value)
    return _item_object(obj, f"{where} (media string)")


def _item(value: object, where: str, media_strings: bool) -> ItemInput:
    if isinstance(value, str):
        return parse_media_string(value, where, media_strings)
    if isinstance(value, dict):
        return _item_object(value, where)
    raise invalid(f"{where} must be a string or an object, not {_type_name(value)}")


def _echo(value: object) -> dict:
    """A document as sent, in Cohere/Jina result form."""
    if isinstance(value, str):
        return {"text": value}
    return {k: value[k] for k in ("text", "image", "images") if k in value}


def _query(body: dict, media_strings: bool) -> ItemInput:
    if "query" not in body:
        raise invalid("query is missing")
    query = _item(body["query"], "query", media_strings)
    if query.is_empty():
        raise invalid("query has no text or image")
    return query


def _scores_are_finite(logits: list[float]) -> None:
    for index, logit in enumerate(logits):
        if not math.isfinite(logit):
            raise SidecarError(Kind.BACKEND, f"the model produced a non-finite score for documents[{index}]")


# ---- Cohere / Jina ------------------------------------------------------------------------------


def parse_rerank(body: object, max_documents: int, api_version: str = "2") -> ParsedRerank:
    """Cohere `/v1|v2/rerank` and Jina `/v1/rerank` request (one superset; see the module doc)."""
    body = _object(body)
    media_strings = _bool(body, "media_in_strings", True)
    _optional_string(body, "model")  # checked for type, then ignored: this server scores with its own model
    instruction = _optional_string(body, "instruction").strip()
    _optional_int(body, "max_tokens_per_doc", 1)  # checked for type, then ignored (see module doc)
    query = _query(body, media_strings)
    raw = _list(body, "documents", max_documents)
    documents = tuple(_item(d, f"documents[{i}]", media_strings) for i, d in enumerate(raw))
    jina_style = isinstance(body["query"], dict) or any(
        isinstance(d, dict) and {"image", "images"} & set(d) for d in raw
    )
    return ParsedRerank(
        input=RerankInput(query=query, documents=documents, instruction=instruction),
        echoes=tuple(_echo(d) for d in raw),
        top_n=_optional_int(body, "top_n", 1) or 0,
        return_documents=_bool(body, "return_documents", jina_style),
        api_version=api_version,
    )


def rerank_body(parsed: ParsedRerank, logits: list[float], timings: Timings, model: str) -> dict:
    """The Cohere + Jina response (each client reads its own fields)."""
    _scores_are_finite(logits)
    results = []
    for index in ranked(logits, parsed.top_n):
        result: dict[str, Any] = {"index": index, "relevance_score": json_score(sigmoid(logits[index]))}
        if parsed.return_documents:
            result["document"] = parsed.echoes[index]
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


# ---- TEI ---------------------------------------------------------------------------------------


def parse_tei(body: object, max_documents: int) -> ParsedRerank:
    """TEI `/rerank` request; `truncate` and `truncation_direction` are ignored (see module doc)."""
    body = _object(body)
    media_strings = _bool(body, "media_in_strings", True)
    instruction = _optional_string(body, "instruction").strip()
    if not isinstance(body.get("query", ""), str):
        raise invalid(f"query must be a string, not {_type_name(body['query'])}")
    query = _query(body, media_strings)
    raw = _list(body, "texts", max_documents)
    texts = tuple(_string(t, f"texts[{i}]") for i, t in enumerate(raw))
    documents = tuple(parse_media_string(t, f"texts[{i}]", media_strings) for i, t in enumerate(texts))
    return ParsedRerank(
        input=RerankInput(query=query, documents=documents, instruction=instruction, documents_field="texts"),
        echoes=texts,
        return_documents=_bool(body, "return_text", False),
        raw_scores=_bool(body, "raw_scores", False),
    )


def tei_body(parsed: ParsedRerank, logits: list[float], timings: Timings, model: str) -> list[dict]:
    """TEI response: `[{index, score, text?}]`, best first."""
    _scores_are_finite(logits)
    results = []
    for index in ranked(logits, 0):
        result: dict[str, Any] = {
            "index": index,
            "score": json_score(logits[index] if parsed.raw_scores else sigmoid(logits[index])),
        }
        if parsed.return_documents:
            result["text"] = parsed.echoes[index]
        results.append(result)
    return results


COHERE_V1 = Dialect("cohere-jina-v1", functools.partial(parse_rerank, api_version="1"), rerank_body)
COHERE_V2 = Dialect("cohere-jina-v2", parse_rerank, rerank_body)
TEI = Dialect("tei", parse_tei, tei_body)
