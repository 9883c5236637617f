"""Reading an HTTP request body as JSON, with the checks JSON itself does not make.

* at most `--max-message-bytes` (413 `too_large`);
* JSON, UTF-8, no NaN/Infinity (400 `invalid_json`);
* nested at most `MAX_DEPTH` levels (400): real bodies are 3-4 deep, and Python's parser would
  otherwise fail with a RecursionError near 1,000;
* no lone surrogate (`"\\ud800"`) in any string or key (422 `validation`, naming the field): JSON
  allows the escape, but such a string is not text and would fail deep in the tokenizer.
"""

from __future__ import annotations

import json

from starlette.requests import ClientDisconnect, Request

from sidecar.errors import Kind, SidecarError, invalid

MAX_DEPTH = 32


class MalformedBody(Exception):
    """The body is not usable JSON (HTTP 400). Only HTTP has this failure: gRPC decodes protobuf itself."""


async def read_json(request: Request, limit: int) -> object:
    """The request body parsed and checked (module docstring); raises SidecarError or MalformedBody."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _too_large(None, limit)
    except ClientDisconnect:
        raise SidecarError(Kind.CANCELLED, "the client disconnected while sending the body") from None
    if not body.strip():
        raise MalformedBody("the request body is empty; send a JSON object")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise MalformedBody("the request body is not valid UTF-8") from None
    except RecursionError:
        raise MalformedBody(f"the JSON body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # raised by _reject_constant
        raise MalformedBody(str(exc)) from None
    check_json_text(value)
    return value


def check_json_text(value: object) -> None:
    """Depth and lone-surrogate checks over a parsed JSON value, iteratively (no recursion to exhaust)."""
    stack: list[tuple[object, str, int]] = [(value, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            _check_string(node, path or "the request body")
        elif isinstance(node, (dict, list)):
            if depth >= MAX_DEPTH:
                raise MalformedBody(f"the JSON body is nested more than {MAX_DEPTH} levels deep (at {path})")
            if isinstance(node, dict):
                children = []
                for key, item in node.items():
                    child = f"{path}.{key}" if path else key
                    _check_string(key, f"{child} (a key)")
                    children.append((item, child, depth + 1))
            else:
                children = [(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node)]
            stack.extend(reversed(children))  # popped in document order: the first bad field is named


def _check_string(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        where = where.encode("ascii", "backslashreplace").decode()  # a key may itself hold the surrogate
        raise invalid(
            f"{where} contains a lone surrogate (\\u{code:04x}) at character {exc.start}; text must be valid Unicode"
        ) from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON; send numbers only")


def _too_large(size: int | None, limit: int) -> SidecarError:
    what = f"the request body of {size} bytes" if size is not None else "the request body"
    return SidecarError(Kind.TOO_LARGE, f"{what} exceeds the limit of {limit} bytes (--max-message-bytes)")
