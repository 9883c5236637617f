"""The errors the connectors raise: one base class, one subclass per failure a caller handles differently.

ConnectorError
├── FieldMappingError      the field mapping names fields the collection does not have
├── EngineError            the search engine failed (engine, operation, message)
└── SidecarCallError       a sidecar RPC failed (target, operation, gRPC code, details)
    ├── RerankUnavailableError   Rerank: sidecar unreachable, overloaded or past its deadline
    └── EmbedUnavailableError    Embed: the same, for the query or document vectors
"""

from __future__ import annotations

import grpc

# gRPC codes that mean "the sidecar could not answer now" rather than "the request is wrong".
UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class ConnectorError(Exception):
    """Base class of every error raised by `connectors`."""


class FieldMappingError(ConnectorError, ValueError):
    """A `FieldMapping` names fields or vectors that the collection does not have."""

    def __init__(self, engine: str, collection: str, missing: list[str], available: list[str]) -> None:
        self.engine, self.collection, self.missing, self.available = engine, collection, missing, available
        known = ", ".join(available) if available else "none"
        super().__init__(
            f"{engine} collection {collection!r} has no {', '.join(missing)} (the field mapping names "
            f"{'it' if len(missing) == 1 else 'them'}); available: {known}"
        )


class EngineError(ConnectorError):
    """The search engine refused or failed an operation (search, create_collection, insert, ...)."""

    def __init__(self, engine: str, operation: str, message: str) -> None:
        self.engine, self.operation, self.message = engine, operation, message
        super().__init__(f"{engine} {operation} failed: {message}")


class SidecarCallError(ConnectorError):
    """A call to the sidecar failed; `code` is the gRPC status code."""

    def __init__(self, target: str, operation: str, code: grpc.StatusCode | None, details: str) -> None:
        self.target, self.operation, self.code, self.details = target, operation, code, details
        code_name = code.name if code is not None else "ERROR"
        super().__init__(f"sidecar {operation} at {target} failed with {code_name}: {details}")


class RerankUnavailableError(SidecarCallError):
    """The sidecar at `target` could not rerank: unreachable, overloaded, or the deadline passed."""


class EmbedUnavailableError(SidecarCallError):
    """The sidecar at `target` could not embed: unreachable, overloaded, or the deadline passed."""


def sidecar_error(exc: grpc.RpcError, target: str, operation: str) -> SidecarCallError:
    """Turn a gRPC error from `sidecar.client` into the matching typed error."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    if code in UNAVAILABLE_CODES:
        cls = RerankUnavailableError if operation == "rerank" else EmbedUnavailableError
        return cls(target, operation, code, details)
    return SidecarCallError(target, operation, code, details)
