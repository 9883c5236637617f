"""Typed readers for JSON request fields: each checks one field and names it in its error."""

from __future__ import annotations

from sidecar.errors import invalid


def type_name(value: object) -> str:
    """How an error names a JSON value's type ("an object", "a string", ...)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{where} must be a string, not {type_name(value)}")
    return value


def optional_string(body: dict, key: str) -> str:
    """`body[key]` as a string; "" when absent or null."""
    value = body.get(key)
    return "" if value is None else string(value, key)


def boolean(body: dict, key: str, default: bool) -> bool:
    """`body[key]` as a boolean; `default` when absent or null (clients send null for "not set")."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{key} must be a boolean, not {type_name(value)}")
    return value


def json_object(body: object) -> dict:
    """The request body, which must be a JSON object."""
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, not {type_name(body)}")
    return body


def array(body: dict, key: str, max_items: int) -> list:
    """The required array `body[key]`, at most `max_items` long."""
    if key not in body:
        raise invalid(f"{key} is missing")
    value = body[key]
    if not isinstance(value, list):
        raise invalid(f"{key} must be an array, not {type_name(value)}")
    if len(value) > max_items:
        raise invalid(f"{key} has {len(value)} entries; this server accepts at most {max_items}")
    return value


def optional_int(body: dict, key: str, minimum: int) -> int | None:
    """`body[key]` as an integer >= `minimum`; None when absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{key} must be an integer, not {type_name(value)}")
    if value < minimum:
        raise invalid(f"{key} must be at least {minimum}, got {value}")
    return value


def string_list(body: dict, key: str) -> list[str] | None:
    """`body[key]` as a list of strings; None when absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid(f"{key} must be an array of strings, not {type_name(value)}")
    return [string(item, f"{key}[{i}]") for i, item in enumerate(value)]
