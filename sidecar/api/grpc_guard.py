"""A server interceptor that turns undecodable requests to any service into INVALID_ARGUMENT.

gRPC deserializes a request before the servicer runs, and answers a message that does not parse
(corrupt bytes, a string that is not UTF-8, nesting past protobuf's limit) with UNKNOWN and a
traceback in the log. Our own Reranker methods take raw bytes and parse them themselves
(`sidecar.api.grpc_server`); for the stock services (health, reflection) this interceptor does the
same: it swaps each handler's deserializer for one that answers INVALID_ARGUMENT saying why.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf.message import DecodeError


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Wraps every handler that deserializes its requests (handlers taking raw bytes pass unchanged)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return _guarded(handler, handler_call_details.method)


async def _parse(deserialize: Callable[[bytes], object], raw: bytes, method: str, context) -> object:
    try:
        return deserialize(raw)
    except (DecodeError, RecursionError, ValueError) as exc:
        reason = str(exc).rsplit(": ", 1)[-1] if isinstance(exc, DecodeError) else type(exc).__name__
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the request is not a valid message ({reason})"
        )


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    deserialize, serialize = handler.request_deserializer, handler.response_serializer

    async def requests(raw_requests: AsyncIterator[bytes], context) -> AsyncIterator[object]:
        async for raw in raw_requests:
            yield await _parse(deserialize, raw, method, context)

    if handler.unary_unary is not None:

        async def unary_unary(raw: bytes, context):
            return await handler.unary_unary(await _parse(deserialize, raw, method, context), context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=serialize)
    if handler.unary_stream is not None:
        behaviour = handler.unary_stream
        if inspect.isasyncgenfunction(behaviour):

            async def unary_stream(raw: bytes, context):
                async for response in behaviour(await _parse(deserialize, raw, method, context), context):
                    yield response

        else:  # a coroutine that writes its responses with context.write

            async def unary_stream(raw: bytes, context):
                await behaviour(await _parse(deserialize, raw, method, context), context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, response_serializer=serialize)
    if handler.stream_unary is not None:

        async def stream_unary(raw_requests, context):
            return await handler.stream_unary(requests(raw_requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, response_serializer=serialize)
    behaviour = handler.stream_stream
    if inspect.isasyncgenfunction(behaviour):

        async def stream_stream(raw_requests, context):
            async for response in behaviour(requests(raw_requests, context), context):
                yield response

    else:

        async def stream_stream(raw_requests, context):
            await behaviour(requests(raw_requests, context), context)

    return grpc.stream_stream_rpc_method_handler(stream_stream, response_serializer=serialize)
