"""gRPC server reflection in both versions: v1 (what current tools ask first) and v1alpha (older ones).

grpcio-reflection ships only the v1alpha service. v1 is the same messages under another package
name, byte for byte, so one servicer answers both: the v1 method is registered with the v1alpha
message classes as its (de)serializers. `sidecar._proto.grpc.reflection.v1` (generated from
proto/grpc/reflection/v1/reflection.proto) puts the v1 service's own descriptor in the pool, so a
client can describe it like any other listed service.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

from sidecar._proto.grpc.reflection.v1 import reflection_pb2 as v1

V1_SERVICE = v1.DESCRIPTOR.services_by_name["ServerReflection"].full_name  # grpc.reflection.v1.ServerReflection


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1 and v1alpha for `service_names` (the reflection services are added to them)."""
    servicer = reflection.aio.ReflectionServicer([*service_names, reflection.SERVICE_NAME, V1_SERVICE])
    server.add_generic_rpc_handlers(
        (
            _handler(reflection.SERVICE_NAME, servicer),
            _handler(V1_SERVICE, servicer),
        )
    )


def _handler(service: str, servicer: reflection.aio.ReflectionServicer) -> grpc.GenericRpcHandler:
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha.ServerReflectionRequest.FromString,
        response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": method})
