"""TEI's gRPC services on the sidecar's port: the wire is TEI's, byte for byte, and scores are the engine's.

The wire test builds TEI's RerankRequest bytes by hand from TEI's field numbers (tei.proto in
huggingface/text-embeddings-inference) and decodes the answer the same way, so it does not lean on
this repository's generated stubs.
"""

from __future__ import annotations

import struct

import grpc
import pytest

from sidecar._proto.tei.v1 import tei_pb2 as tei
from sidecar._proto.tei.v1 import tei_pb2_grpc as tei_grpc
from tests.api.conftest import MAX_DOCUMENTS
from tests.api.test_http_rerank import DOCS, QUERY
from tests.conftest import same_scores

# TEI's declarations: message -> {field: (number, type)}; enums -> {value name: number}.
TEI_MESSAGES = {
    "RerankRequest": {
        "query": (1, "string"),
        "texts": (2, "string"),
        "truncate": (3, "bool"),
        "raw_scores": (4, "bool"),
        "return_text": (5, "bool"),
        "truncation_direction": (6, "enum"),
    },
    "Rank": {"index": (1, "uint32"), "text": (2, "string"), "score": (3, "float")},
    "RerankResponse": {"ranks": (1, "message"), "metadata": (2, "message")},
    "Metadata": {
        "compute_chars": (1, "uint32"),
        "compute_tokens": (2, "uint32"),
        "total_time_ns": (3, "uint64"),
        "tokenization_time_ns": (4, "uint64"),
        "queue_time_ns": (5, "uint64"),
        "inference_time_ns": (6, "uint64"),
    },
    "InfoRequest": {},
    "InfoResponse": {
        "version": (1, "string"),
        "sha": (2, "string"),
        "docker_label": (3, "string"),
        "model_id": (4, "string"),
        "model_sha": (5, "string"),
        "model_dtype": (6, "string"),
        "model_type": (7, "enum"),
        "max_concurrent_requests": (8, "uint32"),
        "max_input_length": (9, "uint32"),
        "max_batch_tokens": (10, "uint32"),
        "max_batch_requests": (11, "uint32"),
        "max_client_batch_size": (12, "uint32"),
        "tokenization_workers": (13, "uint32"),
    },
}
TEI_ENUMS = {
    "ModelType": {"MODEL_TYPE_EMBEDDING": 0, "MODEL_TYPE_CLASSIFIER": 1, "MODEL_TYPE_RERANKER": 2},
    "TruncationDirection": {"TRUNCATION_DIRECTION_RIGHT": 0, "TRUNCATION_DIRECTION_LEFT": 1},
}
TYPE_NAMES = {9: "string", 8: "bool", 13: "uint32", 4: "uint64", 2: "float", 14: "enum", 11: "message"}


def test_declarations_are_teis():
    assert tei.DESCRIPTOR.package == "tei.v1"
    for name, fields in TEI_MESSAGES.items():
        message = tei.DESCRIPTOR.message_types_by_name[name]
        assert {f.name: (f.number, TYPE_NAMES[f.type]) for f in message.fields} == fields, name
    for name, values in TEI_ENUMS.items():
        assert {v.name: v.number for v in tei.DESCRIPTOR.enum_types_by_name[name].values} == values
    rerank = tei.DESCRIPTOR.services_by_name["Rerank"].methods_by_name["Rerank"]
    assert (rerank.input_type.name, rerank.output_type.name) == ("RerankRequest", "RerankResponse")
    info = tei.DESCRIPTOR.services_by_name["Info"].methods_by_name["Info"]
    assert (info.input_type.name, info.output_type.name) == ("InfoRequest", "InfoResponse")


# ---- protobuf wire, by hand ------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: str | bytes | int | bool) -> bytes:
    if isinstance(value, (bool, int)):
        return varint(number << 3) + varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def decode(data: bytes) -> dict[int, list]:
    """Field number -> values (varints as ints, 32-bit as float, length-delimited as bytes)."""
    fields: dict[int, list] = {}
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 5:
            value, i = struct.unpack("<f", data[i : i + 4])[0], i + 4
        elif wire == 2:
            length, i = read_varint(data, i)
            value, i = data[i : i + length], i + length
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


async def raw_rerank(channel, request: bytes) -> bytes:
    call = channel.unary_unary("/tei.v1.Rerank/Rerank", request_serializer=None, response_deserializer=None)
    return await call(request, timeout=60)


async def test_wire_is_teis_and_scores_are_the_engines(grpc_channel, grpc_client):
    request = field(1, QUERY) + b"".join(field(2, d) for d in DOCS) + field(5, True)
    answer = decode(await raw_rerank(grpc_channel, request))
    ranks = [decode(rank) for rank in answer[1]]
    expected = {r.index: r.score for r in (await grpc_client.rerank(QUERY, DOCS)).results}
    assert [rank.get(1, [0])[0] for rank in ranks] == [r.index for r in (await grpc_client.rerank(QUERY, DOCS)).results]
    assert {rank.get(1, [0])[0]: rank[3][0] for rank in ranks} == same_scores(expected)  # float32 probabilities
    assert {rank.get(1, [0])[0]: rank[2][0].decode() for rank in ranks} == dict(enumerate(DOCS))  # return_text
    metadata = decode(answer[2][0])
    assert metadata[1][0] == len(QUERY) * len(DOCS) + sum(len(d) for d in DOCS)  # compute_chars
    assert metadata[2][0] > 0 and metadata[3][0] > 0  # compute_tokens, total_time_ns


async def test_raw_scores_are_logits(grpc_channel, grpc_client):
    answer = decode(
        await raw_rerank(grpc_channel, field(1, QUERY) + b"".join(field(2, d) for d in DOCS) + field(4, True))
    )
    expected = {r.index: r.logit for r in (await grpc_client.rerank(QUERY, DOCS)).results}
    assert {decode(r).get(1, [0])[0]: decode(r)[3][0] for r in answer[1]} == same_scores(expected)
    assert all(2 not in decode(r) for r in answer[1])  # no text without return_text


async def test_stub_call_and_errors(grpc_channel):
    stub = tei_grpc.RerankStub(grpc_channel)
    response = await stub.Rerank(tei.RerankRequest(query=QUERY, texts=DOCS[:2], truncate=True), timeout=60)
    assert sorted(rank.index for rank in response.ranks) == [0, 1]
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await stub.Rerank(tei.RerankRequest(query=QUERY, texts=["x"] * (MAX_DOCUMENTS + 1)), timeout=60)
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        too_many.value.details()
        == f"texts has {MAX_DOCUMENTS + 1} entries; this server accepts at most {MAX_DOCUMENTS}"
    )
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.Rerank(tei.RerankRequest(query="", texts=["a"]), timeout=60)
    assert (
        empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT and empty.value.details() == "query has no text or image"
    )
    assert (await stub.Rerank(tei.RerankRequest(query=QUERY), timeout=60)).ranks == []


async def test_info(grpc_channel, runtime):
    info = await tei_grpc.InfoStub(grpc_channel).Info(tei.InfoRequest(), timeout=10)
    assert info.model_type == tei.MODEL_TYPE_RERANKER
    assert info.model_id == runtime.engine.reranker.name and info.model_dtype == "float32"
    assert info.max_input_length == 10240 and info.max_client_batch_size == runtime.settings.max_documents
    assert info.max_batch_requests == runtime.settings.max_batch_rows and info.version


async def test_calls_are_recorded_like_the_faces_own(grpc_channel, http):
    from tests.api.test_metrics import scrape

    before = await scrape(http)
    stub = tei_grpc.RerankStub(grpc_channel)
    await stub.Rerank(tei.RerankRequest(query=QUERY, texts=DOCS[:2]), timeout=60)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Rerank(tei.RerankRequest(query="", texts=["a"]), timeout=60)
    after = await scrape(http)
    requests = "rerank_sidecar_requests_total"

    def delta(status: str) -> float:
        key = (
            requests,
            frozenset({"face": "grpc", "route": "tei.v1.Rerank/Rerank", "dialect": "tei", "status": status}.items()),
        )
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert (delta("ok"), delta("validation")) == (1, 1)
