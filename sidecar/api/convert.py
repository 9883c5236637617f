"""Protobuf messages <-> engine objects, with field-by-field validation that names the field."""

from __future__ import annotations

import math

from sidecar._proto.rerank.v1 import reranker_pb2 as pb
from sidecar.errors import invalid
from sidecar.types import ItemInput, MediaRef, RerankInput, Timings, VideoRef


def media_from_pb(message: pb.Media, where: str) -> MediaRef:
    source = message.WhichOneof("source")
    if source == "data":
        if not message.data:
            raise invalid(f"{where}.data is empty")
        return MediaRef(data=message.data)
    if source == "uri":
        if not message.uri.strip():
            raise invalid(f"{where}.uri is empty")
        return MediaRef(uri=message.uri.strip())
    raise invalid(f"{where} has neither data nor uri")


def item_from_pb(message: pb.Item, where: str) -> ItemInput:
    videos = []
    for v, video in enumerate(message.videos):
        label = f"{where}.videos[{v}]"
        if not video.frames and not video.uri:
            raise invalid(f"{label} has neither frames nor uri")
        if video.fps < 0 or math.isnan(video.fps):
            raise invalid(f"{label}.fps must be positive")
        frames = tuple(media_from_pb(f, f"{label}.frames[{i}]") for i, f in enumerate(video.frames))
        videos.append(VideoRef(frames=frames, uri=video.uri or None, fps=video.fps))
    images = tuple(media_from_pb(m, f"{where}.images[{i}]") for i, m in enumerate(message.images))
    return ItemInput(text=message.text, images=images, videos=tuple(videos), id=message.id)


def rerank_from_pb(request: pb.RerankRequest, max_documents: int) -> RerankInput:
    """Validate shape and limits; media are checked later, when they are resolved."""
    if not request.HasField("query"):
        raise invalid("query is missing")
    query = item_from_pb(request.query, "query")
    if query.is_empty():
        raise invalid("query has no text, image or video")
    if len(request.documents) > max_documents:
        raise invalid(f"documents has {len(request.documents)} entries; this server accepts at most {max_documents}")
    documents = tuple(item_from_pb(d, f"documents[{i}]") for i, d in enumerate(request.documents))
    chunk = request.long_documents == pb.LONG_DOCUMENTS_CHUNK
    if request.long_documents not in (pb.LONG_DOCUMENTS_TRUNCATE, pb.LONG_DOCUMENTS_CHUNK):
        raise invalid(f"long_documents {request.long_documents} is not a LongDocuments value")
    check_chunking(chunk, request.max_tokens_per_doc, request.chunk_overlap)
    return RerankInput(
        query=query,
        documents=documents,
        instruction=request.instruction.strip(),
        long_documents="chunk" if chunk else "truncate",
        max_tokens_per_doc=request.max_tokens_per_doc,
        chunk_overlap=request.chunk_overlap,
    )


def check_chunking(chunk: bool, max_tokens_per_doc: int, chunk_overlap: int) -> None:
    """The long-document options every face accepts: an overlap only when chunking, smaller than the window."""
    if chunk_overlap and not chunk:
        raise invalid("chunk_overlap applies only when long_documents is chunk")
    if chunk_overlap and max_tokens_per_doc and chunk_overlap >= max_tokens_per_doc:
        raise invalid(f"chunk_overlap ({chunk_overlap}) must be smaller than max_tokens_per_doc ({max_tokens_per_doc})")


def embed_from_pb(request: pb.EmbedRequest, max_inputs: int, hidden_size: int) -> tuple[ItemInput, ...]:
    if len(request.inputs) > max_inputs:
        raise invalid(f"inputs has {len(request.inputs)} entries; this server accepts at most {max_inputs}")
    if request.dimensions > hidden_size:
        raise invalid(f"dimensions {request.dimensions} exceeds the model's {hidden_size}")
    # An input with nothing in it is embedded as the text "NULL", as the reference embeds it.
    return tuple(item_from_pb(item, f"inputs[{i}]") for i, item in enumerate(request.inputs))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def ranked(logits: list[float], top_n: int) -> list[int]:
    """Document indices best first (ties keep request order), cut to top_n when positive."""
    order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))
    return order[:top_n] if top_n else order


def usage_to_pb(timings: Timings) -> pb.Usage:
    return pb.Usage(
        input_tokens=timings.input_tokens,
        computed_tokens=timings.computed_tokens,
        images=timings.images,
        video_frames=timings.video_frames,
        feature_cache_hits=timings.feature_cache_hits,
        feature_cache_misses=timings.feature_cache_misses,
        queue_ms=timings.queue_ms,
        preprocessing_ms=timings.preprocessing_ms,
        inference_ms=timings.inference_ms,
    )


def rerank_response(
    request: pb.RerankRequest, logits: list[float], timings: Timings, model: str, chunks: list | None = None
) -> pb.RerankResponse:
    results = []
    for index in ranked(logits, request.top_n):
        result = pb.RerankResult(
            index=index, id=request.documents[index].id, score=sigmoid(logits[index]), logit=logits[index]
        )
        if request.return_documents:
            result.document.CopyFrom(request.documents[index])
        if chunks and chunks[index] is not None:
            c = chunks[index]
            result.chunk.CopyFrom(pb.Chunk(index=c.index, count=c.count, start=c.start, end=c.end))
        results.append(result)
    return pb.RerankResponse(results=results, model=model, usage=usage_to_pb(timings))
