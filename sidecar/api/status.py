"""The one table from engine error kinds to transport status codes."""

from __future__ import annotations

import grpc

from sidecar.errors import Kind

GRPC_CODES: dict[Kind, grpc.StatusCode] = {
    Kind.VALIDATION: grpc.StatusCode.INVALID_ARGUMENT,
    Kind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Kind.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Kind.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    Kind.CANCELLED: grpc.StatusCode.CANCELLED,
    Kind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Kind.NOT_SERVED: grpc.StatusCode.UNIMPLEMENTED,
    Kind.BACKEND: grpc.StatusCode.INTERNAL,
}

HTTP_CODES: dict[Kind, int] = {
    Kind.VALIDATION: 422,
    Kind.TOO_LARGE: 413,
    Kind.OVERLOADED: 429,
    Kind.DEADLINE: 504,
    Kind.CANCELLED: 499,
    Kind.UNAVAILABLE: 503,
    Kind.NOT_SERVED: 501,
    Kind.BACKEND: 500,
}

# Failures that exist only in HTTP, answered before a request reaches a dialect: status -> code.
HTTP_ONLY_CODES: dict[int, str] = {
    400: "invalid_json",  # not JSON, not UTF-8, or nested too deeply
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",  # the body did not arrive in time
    415: "unsupported_media_type",  # a POST whose Content-Type is not JSON
    421: "untrusted_host",  # a Host header outside --trusted-hosts
    503: "unavailable",  # too many connections
}

# Seconds a client should wait before retrying an OVERLOADED (429) request.
RETRY_AFTER_SECONDS = 1
