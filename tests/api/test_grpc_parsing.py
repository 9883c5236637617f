"""Messages that do not parse get INVALID_ARGUMENT saying why, never UNKNOWN and a traceback."""

from __future__ import annotations

import logging

import grpc
import pytest

from sidecar._proto.rerank.v1 import reranker_pb2 as pb


def _tag(number: int, wire_type: int) -> bytes:
    """A protobuf field key as a varint."""
    value, out = (number << 3) | wire_type, bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


REQUESTS = {"Rerank": pb.RerankRequest, "Embed": pb.EmbedRequest, "GetModelInfo": pb.GetModelInfoRequest}
TEXT = pb.Item.DESCRIPTOR.fields_by_name["text"].number
STRUCTURAL = {
    "corrupt bytes": b"\xff\xff\xff\xff",
    "a length past the end": _tag(1, 2) + b"\x7f" + b"abc",
    "groups nested 10,000 deep": _tag(99, 3) * 10_000 + _tag(99, 4) * 10_000,
    "an unterminated group": _tag(99, 3) * 200,
}


def bad_utf8(method: str) -> dict[str, bytes]:
    """A top-level and a nested string field of the method's request holding bytes that are not UTF-8."""
    fields = REQUESTS[method].DESCRIPTOR.fields_by_name
    out = {}
    if "instruction" in fields:
        out["invalid UTF-8 in a string field"] = _tag(fields["instruction"].number, 2) + b"\x02\xff\xfe"
    item_field = fields.get("query") or fields.get("inputs")
    if item_field is not None:
        out["invalid UTF-8 in a nested string"] = _tag(item_field.number, 2) + b"\x04" + _tag(TEXT, 2) + b"\x02\xc3\x28"
    return out


CASES = [(method, what, raw) for method in REQUESTS for what, raw in (STRUCTURAL | bad_utf8(method)).items()]


@pytest.mark.parametrize("method, what, raw", CASES, ids=[f"{m}-{w}" for m, w, _ in CASES])
async def test_unparsable_messages_are_invalid_argument(grpc_target, grpc_client, method, what, raw, caplog):
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        call = channel.unary_unary(f"/rerank.v1.Reranker/{method}")  # raw bytes in and out
        with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as info:
            await call(raw, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    details = info.value.details()
    assert f"not a valid rerank.v1.{method}Request message" in details
    if "UTF-8" in what:
        assert "bad UTF-8" in details
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]  # no traceback logged
    assert any(
        r.getMessage().startswith(f"{method} ") and "status=validation" in r.getMessage() for r in caplog.records
    )
    assert len((await grpc_client.rerank("still serving?", ["yes"])).results) == 1


STOCK = [
    ("/grpc.health.v1.Health/Check", "unary_unary"),
    ("/grpc.health.v1.Health/Watch", "unary_stream"),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "stream_stream"),
]


@pytest.mark.parametrize("path, kind", STOCK, ids=[p for p, _ in STOCK])
@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b"\x0a\x02\xff\xfe"], ids=["corrupt", "bad UTF-8"])
async def test_health_and_reflection_refuse_unparsable_messages_too(grpc_target, path, kind, raw, caplog):
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        call = getattr(channel, kind)(path)
        with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as info:
            if kind == "unary_unary":
                await call(raw, timeout=10)
            else:
                async for _ in call(raw if kind == "unary_stream" else iter([raw]), timeout=10):
                    pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert f"{path}: the request is not a valid message" in info.value.details()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert await check(b"", timeout=10) is not None  # an empty request is valid: the server answers
