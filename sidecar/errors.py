"""The one error type the engine raises.

Core modules raise `SidecarError` with a `Kind` and know nothing of transports; the API layer
owns the one table from kinds to status codes (`sidecar.api.status`).
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    """Why a request failed. Each kind maps to exactly one gRPC status."""

    VALIDATION = "validation"  # the request is malformed or names something unusable
    TOO_LARGE = "too_large"  # a payload or an image exceeds a configured limit
    OVERLOADED = "overloaded"  # the queue is full; retry later
    DEADLINE = "deadline"  # the caller's deadline passed before the work finished
    CANCELLED = "cancelled"  # the caller went away
    UNAVAILABLE = "unavailable"  # the model is not loaded (yet) or is shutting down
    NOT_SERVED = "not_served"  # this server has no model for the requested operation
    BACKEND = "backend"  # the model failed on valid input
    UNAUTHENTICATED = "unauthenticated"  # the API key is missing or not one the server accepts


class SidecarError(Exception):
    """A failure with a kind and a message that names the offending field or document."""

    def __init__(self, kind: Kind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"SidecarError({self.kind.value}, {self.message!r})"


def invalid(message: str) -> SidecarError:
    """Shorthand for a validation error."""
    return SidecarError(Kind.VALIDATION, message)
