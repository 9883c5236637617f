"""Transport-neutral request objects: what the API layers hand to the engine."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MediaRef:
    """An image as encoded bytes or as a reference (data: URI, http(s) URL, or media-root path)."""

    data: bytes | None = None
    uri: str | None = None


@dataclass(frozen=True)
class VideoRef:
    """A video as frames, or as a file reference sampled at `fps`."""

    frames: tuple[MediaRef, ...] = ()
    uri: str | None = None
    fps: float = 0.0


@dataclass(frozen=True)
class ItemInput:
    """A query, document or embedding input: any mix of text, images and videos."""

    text: str = ""
    images: tuple[MediaRef, ...] = ()
    videos: tuple[VideoRef, ...] = ()
    id: str = ""

    def is_empty(self) -> bool:
        """Nothing to score: no image, no video, and no text but whitespace."""
        return not self.text.strip() and not self.images and not self.videos


@dataclass(frozen=True)
class RerankInput:
    """One rerank request, already checked for shape by the API layer."""

    query: ItemInput
    documents: tuple[ItemInput, ...]
    instruction: str = ""
    truncate: bool = True  # False: a pair over the model's length is an error instead of being cut
    truncation_direction: str = "right"  # "right": the reference rule; "left": a document keeps its end
    documents_field: str = "documents"  # how errors name the documents (TEI calls them "texts")
    long_documents: str = "truncate"  # "truncate" (the reference) or "chunk" (best of overlapping windows)
    max_tokens_per_doc: int = 0  # text tokens per document (truncate) or per window (chunk); 0 = what fits
    chunk_overlap: int = 0  # chunk: tokens shared by consecutive windows; 0 = an eighth of the window
    max_chunks: int = 0  # chunk: windows per document, at most the server's; 0 = the server's limit


@dataclass
class Timings:
    """Per-request usage, filled as the request moves through the engine."""

    queue_ms: float = 0.0
    preprocessing_ms: float = 0.0
    inference_ms: float = 0.0
    input_tokens: int = 0
    computed_tokens: int = 0
    images: int = 0
    video_frames: int = 0
    feature_cache_hits: int = 0  # pictures whose features came from the feature cache (not decoded)
    feature_cache_misses: int = 0  # pictures looked up in the feature cache and decoded
    overlap_ms: float = 0.0  # time the request's own forwards ran while it was still being prepared
    extra: dict[str, float] = field(default_factory=dict)
    # Wall-clock (time.time_ns) start and end of each stage: "media", "tokenization", "queue", "inference".
    stages: dict[str, tuple[int, int]] = field(default_factory=dict)
