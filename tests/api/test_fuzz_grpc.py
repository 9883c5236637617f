"""Property-based fuzzing of the gRPC face: Hypothesis strategies built from the proto descriptors, plus raw
bytes through a generic (bytes in, bytes out) call, against a live server.

Every call must end OK or with a status of the INVALID_ARGUMENT family (INVALID_ARGUMENT,
RESOURCE_EXHAUSTED, UNIMPLEMENTED where no model serves the method) and a message that names the
field; never UNKNOWN or INTERNAL. The server must answer health afterwards. Bounded by `EXAMPLES`.
"""

from __future__ import annotations

import re

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from tests.api.conftest import IMAGE

EXAMPLES = 30
ACCEPTABLE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,  # Embed: this server loads no embedding model
}
LEADING_FIELD = re.compile(r"^(the request|[A-Za-z_]\w*)")
SERVICE = pb.DESCRIPTOR.services_by_name["Reranker"]
# Strings a caller plausibly sends, besides arbitrary text: media references good and bad, reserved tokens.
INTERESTING_TEXT = [
    "",
    " ",
    "red.png",
    "../secret.png",
    "file://red.png",
    "data:image/png;base64,AAAA",
    "<|image_pad|>",
]


def scalar(field: FieldDescriptor) -> st.SearchStrategy:
    kinds = {
        FieldDescriptor.TYPE_STRING: st.sampled_from(INTERESTING_TEXT) | st.text(max_size=40),
        FieldDescriptor.TYPE_BYTES: st.sampled_from([b"", IMAGE]) | st.binary(max_size=64),
        FieldDescriptor.TYPE_BOOL: st.booleans(),
        FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
        FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
        FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
        FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
        FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
        FieldDescriptor.TYPE_DOUBLE: st.floats(),
    }
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([value.number for value in field.enum_type.values])
    return kinds[field.type]


def messages(descriptor: Descriptor, overrides: dict | None = None, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`'s type: any subset of fields set, repeated fields short, one member per oneof.

    `overrides` maps a field's full name (rerank.v1.Media.uri) to the strategy for its value(s); a field
    named in `required` is always set.
    """
    overrides = overrides or {}
    cls = GetMessageClass(descriptor)
    values, required = {}, overrides.get("required", frozenset())
    for field in descriptor.fields:
        if field.full_name in overrides:
            values[field.name] = overrides[field.full_name]
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            value = messages(field.message_type, overrides, depth + 1)
        else:
            value = scalar(field)
        values[field.name] = st.lists(value, max_size=3) if field.is_repeated else value
    oneof_members = {field.name: oneof.name for oneof in descriptor.oneofs for field in oneof.fields}

    def build(chosen: dict) -> Message:
        message, taken = cls(), set()
        for name, value in chosen.items():
            oneof = oneof_members.get(name)
            if oneof is not None and oneof in taken:
                continue
            taken.add(oneof)
            field = descriptor.fields_by_name[name]
            if field.is_repeated:
                getattr(message, name).extend(value)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(message, name).SetInParent()  # present even when empty
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    always = {name: value for name, value in values.items() if descriptor.fields_by_name[name].full_name in required}
    optional = {name: value for name, value in values.items() if name not in always}
    return st.fixed_dictionaries(always, optional=optional).map(build)


def check_outcome(call, request: Message | bytes) -> None:
    """One call: OK, or an acceptable status whose message names a field of the request."""
    try:
        call(request, timeout=60)
    except grpc.RpcError as exc:
        assert exc.code() in ACCEPTABLE, (exc.code(), exc.details(), request)
        named = LEADING_FIELD.match(exc.details() or "")
        assert named, exc.details()
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and isinstance(request, Message):
            fields = {field.name for field in request.DESCRIPTOR.fields}
            assert named.group(1) in fields | {"the request"}, exc.details()


METHODS = list(SERVICE.methods_by_name)
# Arbitrary messages are nearly always invalid somewhere; "plausible" ones use usable media, so that many
# reach the model and the engine is fuzzed too (text, instructions, top_n, empty items, repeated images).
PLAUSIBLE = {
    "rerank.v1.Media.uri": st.sampled_from(["red.png", "nested/blue.png", "file://red.png"]),
    "rerank.v1.Media.data": st.just(IMAGE),
    "rerank.v1.Item.videos": st.just([]),
    "rerank.v1.Item.images": st.lists(
        messages(pb.Media.DESCRIPTOR, {"rerank.v1.Media.data": st.just(IMAGE)}), max_size=2
    ),
    "required": frozenset({"rerank.v1.RerankRequest.query", "rerank.v1.Item.text"}),
}
STYLES = {"arbitrary": None, "plausible": PLAUSIBLE}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("method", METHODS)
def test_generated_messages_get_ok_or_an_invalid_argument_family_status(fuzzed_server, method, style):
    descriptor = SERVICE.methods_by_name[method]
    response_class = GetMessageClass(descriptor.output_type)
    with grpc.insecure_channel(fuzzed_server.target) as channel:
        call = channel.unary_unary(
            f"/{SERVICE.full_name}/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )

        @given(request=messages(descriptor.input_type, STYLES[style]))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def exchange(request: Message) -> None:
            check_outcome(call, request)

        exchange()


@pytest.mark.parametrize("method", METHODS)
def test_raw_bytes_get_ok_or_an_invalid_argument_family_status(fuzzed_server, method):
    with grpc.insecure_channel(fuzzed_server.target) as channel:
        call = channel.unary_unary(f"/{SERVICE.full_name}/{method}")  # bytes in, bytes out: nothing parsed here

        @given(raw=st.binary(max_size=256) | messages(SERVICE.methods_by_name[method].input_type).map(_corrupt))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def exchange(raw: bytes) -> None:
            check_outcome(call, raw)

        exchange()


def _corrupt(message: Message) -> bytes:
    """A valid encoding with its last byte flipped (or one stray byte): near-misses of the wire format."""
    data = bytearray(message.SerializeToString() or b"\x00")
    data[-1] ^= 0xA5
    return bytes(data)


def test_the_server_answers_health_after_the_fuzzing(fuzzed_server):
    with grpc.insecure_channel(fuzzed_server.target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert fuzzed_server.process.poll() is None and "Traceback" not in fuzzed_server.log()
