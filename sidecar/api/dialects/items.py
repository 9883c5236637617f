"""Queries and documents in JSON: strings, `{text?, image?, images?}` objects, image references and
the media-string convention.

Images as `image` values (and in media strings): an `http(s)://` URL, a `data:` URI, a bare base64
string of a PNG/JPEG/GIF/WebP/BMP file (recognised by the decoded file signature), or otherwise a
path under the server's `--media-root` (`file://` optional).

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
import json

from sidecar.api.dialects.fields import array, string, type_name
from sidecar.errors import invalid
from sidecar.types import ItemInput, MediaRef

MEDIA_STRING_KEYS = frozenset({"text", "image", "images"})
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def media_ref(value: object, where: str) -> MediaRef:
    """An image reference: URL, data: URI, bare base64 image, or media-root path (see module doc)."""
    text = string(value, where).strip()
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


def parse_images(obj: dict, where: str) -> tuple[MediaRef, ...]:
    """The `image` or `images` of an object (neither: no images)."""
    if "image" in obj and "images" in obj:
        raise invalid(f"{where} has both image and images; use one")
    if "image" in obj:
        return (media_ref(obj["image"], f"{where}.image"),)
    refs = obj.get("images", [])
    if not isinstance(refs, list):
        raise invalid(f"{where}.images must be an array, not {type_name(refs)}")
    return tuple(media_ref(ref, f"{where}.images[{i}]") for i, ref in enumerate(refs))


def item_object(obj: dict, where: str) -> ItemInput:
    """`{text?, image?, images?}`; other keys are ignored."""
    if not MEDIA_STRING_KEYS & set(obj):
        raise invalid(f"{where} has no text, image or images")
    text = string(obj.get("text", ""), f"{where}.text")
    return ItemInput(text=text, images=parse_images(obj, where))


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
    return item_object(obj, f"{where} (media string)")


def parse_item(value: object, where: str, media_strings: bool) -> ItemInput:
    """A string (text or media string) or a `{text?, image?, images?}` object."""
    if isinstance(value, str):
        return parse_media_string(value, where, media_strings)
    if isinstance(value, dict):
        return item_object(value, where)
    raise invalid(f"{where} must be a string or an object, not {type_name(value)}")


def parse_query(body: dict, media_strings: bool, strings_only: bool = False) -> ItemInput:
    """The request's `query`, which must hold text or an image; `strings_only` for dialects without objects."""
    if "query" not in body:
        raise invalid("query is missing")
    if strings_only:
        string(body["query"], "query")
    parsed = parse_item(body["query"], "query", media_strings)
    if parsed.is_empty():
        raise invalid("query has no text or image")
    return parsed


def parse_strings(body: dict, key: str, max_items: int, media_strings: bool) -> tuple[list[str], tuple[ItemInput, ...]]:
    """A required array of strings (TEI `texts`, vLLM/Weaviate `documents`): as sent, and parsed."""
    raw = array(body, key, max_items)
    sent = [string(value, f"{key}[{i}]") for i, value in enumerate(raw)]
    return sent, tuple(parse_media_string(value, f"{key}[{i}]", media_strings) for i, value in enumerate(sent))
