"""Typed errors for engines reached over HTTP (Elasticsearch, OpenSearch), and turning HTTP answers into them.

They subclass `EngineError`, so `except EngineError` still catches them all:

EngineError
├── EngineUnavailableError   the engine could not be reached (refused, DNS, TLS, timeout); names the URL
├── EngineAuthError          HTTP 401/403: missing, wrong or insufficient credentials
├── EngineVersionError       the server is not the product or major version the client speaks
└── IndexNotFoundError       the index (or alias) does not exist

(Candidates for `connectors.errors`; they live here until they move there.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from connectors.errors import ConnectorError, EngineError


class EngineUnavailableError(EngineError):
    """The engine at `url` could not be reached: connection refused, name resolution, TLS or timeout."""

    def __init__(self, engine: str, operation: str, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(engine, operation, f"cannot reach {engine} at {url}: {reason}")


class EngineAuthError(EngineError):
    """The engine refused the credentials (401) or the privileges (403) for an operation."""

    def __init__(self, engine: str, operation: str, url: str, status: int, reason: str) -> None:
        self.url, self.status, self.reason = url, status, reason
        if status == 401:
            hint = "authentication failed: give credentials (basic_auth=(user, password) or api_key=...) or a client that has them"
        else:
            hint = "authenticated, but not authorized: the user or API key lacks a privilege this operation needs"
        super().__init__(engine, operation, f"{hint} (HTTP {status} from {url}: {reason})")


class EngineVersionError(EngineError):
    """The server is not the engine, or not the major version, that the client library speaks."""


class IndexNotFoundError(EngineError):
    """The index (or alias) does not exist."""

    def __init__(self, engine: str, operation: str, index: str, url: str, reason: str) -> None:
        self.index, self.url = index, url
        super().__init__(engine, operation, f"index {index!r} does not exist at {url} ({reason})")


def error_reason(body: Any) -> tuple[str, str]:
    """(error type, most specific reason) from an engine's JSON error body (or any text)."""
    if not isinstance(body, Mapping):
        return "", str(body or "").strip()
    error = body.get("error", body)
    if not isinstance(error, Mapping):
        return str(error), str(error)
    kind, reason = str(error.get("type", "")), str(error.get("reason", ""))
    causes = [c for c in error.get("root_cause") or [] if isinstance(c, Mapping)]
    for failed in error.get("failed_shards") or []:
        if isinstance(failed, Mapping) and isinstance(failed.get("reason"), Mapping):
            causes.append(failed["reason"])
    if isinstance(error.get("caused_by"), Mapping):
        causes.append(error["caused_by"])
    for cause in causes:  # "all shards failed" says nothing; the root cause does
        if cause.get("reason") and cause.get("reason") != reason:
            return str(cause.get("type") or kind), f"{reason}: {cause['reason']}" if reason else str(cause["reason"])
    return kind, reason


def http_error(engine: str, operation: str, url: str, index: str, status: int | None, body: Any) -> EngineError:
    """The typed error for an HTTP error answer (status and JSON body) of `engine`."""
    kind, reason = error_reason(body)
    reason = reason or kind or "no details"
    if status in (401, 403):
        return EngineAuthError(engine, operation, url, status, reason)
    if kind == "index_not_found_exception":
        return IndexNotFoundError(engine, operation, index, url, reason)
    if kind == "media_type_header_exception" or "compatible-with" in reason:
        return EngineVersionError(
            engine, operation,
            f"the server at {url} refused the client's API version ({reason}); elasticsearch-py N talks to "
            "Elasticsearch N only: install the client whose major version matches the server",
        )  # fmt: skip
    return EngineError(engine, operation, f"HTTP {status} {kind}: {reason}" if kind else f"HTTP {status}: {reason}")


@contextlib.contextmanager
def translated(translate: Callable[[BaseException], EngineError | None]) -> Iterator[None]:
    """Re-raise an engine client's exception as the `EngineError` that `translate` makes of it."""
    try:
        yield
    except ConnectorError:
        raise
    except Exception as exc:
        error = translate(exc)
        if error is None:
            raise
        raise error from exc
