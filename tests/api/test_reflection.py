"""Server reflection answers in both versions, v1 (current tools ask it first) and v1alpha."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

from sidecar._proto.grpc.reflection.v1 import reflection_pb2 as v1
from sidecar._proto.grpc.reflection.v1 import reflection_pb2_grpc as v1_grpc

SERVED = {
    "rerank.v1.Reranker",
    "tei.v1.Rerank",
    "tei.v1.Info",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}
VERSIONS = [(v1, v1_grpc), (v1alpha, v1alpha_grpc)]


async def ask(grpc_channel, version, stub_module, **request):
    stub = stub_module.ServerReflectionStub(grpc_channel)
    call = stub.ServerReflectionInfo(iter([version.ServerReflectionRequest(**request)]), timeout=10)
    return [response async for response in call][0]


@pytest.mark.parametrize("version, stub_module", VERSIONS, ids=["v1", "v1alpha"])
async def test_lists_every_service(grpc_channel, version, stub_module):
    response = await ask(grpc_channel, version, stub_module, list_services="")
    assert {s.name for s in response.list_services_response.service} == SERVED


@pytest.mark.parametrize("version, stub_module", VERSIONS, ids=["v1", "v1alpha"])
@pytest.mark.parametrize("symbol", sorted(SERVED))
async def test_describes_every_listed_service(grpc_channel, version, stub_module, symbol):
    response = await ask(grpc_channel, version, stub_module, file_containing_symbol=symbol)
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in response.file_descriptor_response.file_descriptor_proto
    ]
    package, _, name = symbol.rpartition(".")
    assert any(f.package == package and name in [s.name for s in f.service] for f in files), files


@pytest.mark.parametrize("version, stub_module", VERSIONS, ids=["v1", "v1alpha"])
async def test_unknown_symbols_are_not_found(grpc_channel, version, stub_module):
    response = await ask(grpc_channel, version, stub_module, file_containing_symbol="no.such.Service")
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_v1_is_v1alpha_under_its_final_name():
    """One servicer answers both because the two files declare the same messages, byte for byte."""
    ours, theirs = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    v1.DESCRIPTOR.CopyToProto(ours)
    v1alpha.DESCRIPTOR.CopyToProto(theirs)

    def shape(file: descriptor_pb2.FileDescriptorProto, package: str) -> list:
        messages = [
            (m.name, [(f.name, f.number, f.type, f.label, f.type_name.replace(package, "")) for f in m.field])
            for m in file.message_type
        ]
        methods = [
            (m.name, m.input_type.replace(package, ""), m.client_streaming, m.server_streaming)
            for s in file.service
            for m in s.method
        ]
        return sorted(messages) + sorted(methods)

    assert ours.package == "grpc.reflection.v1"
    assert shape(ours, ".grpc.reflection.v1.") == shape(theirs, ".grpc.reflection.v1alpha.")
