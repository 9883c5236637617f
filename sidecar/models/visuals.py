"""Item -> model inputs: decoded media through the Qwen3-VL image/video processors, and prompt expansion.

Shared by the reranker and the embedder. A `Visual` is one processed image or video with its
placeholder: the full run of vision tokens it occupies in a prompt, as the Qwen3-VL processor expands it.
With a feature cache (models/features.py), a picture whose bytes the cache knows becomes a Visual that
holds the cached entry instead of pixels; one it does not know carries its cache key, so the model
thread keeps the features it computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import torch

from sidecar.errors import Kind, SidecarError, invalid
from sidecar.media import MediaResolver, VideoFrames
from sidecar.media.images import FACTOR
from sidecar.media.video import frame_list_video, sampled_frames
from sidecar.models.features import CachedPicture, FeatureCache
from sidecar.types import ItemInput

IMAGE, VIDEO = 1, 2  # mm_token_type_ids values
DEFAULT_VIDEO_FPS = 1.0  # the reranker reference samples video files at 1 frame per second
RESERVED_MARKERS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


@dataclass
class Visual:
    """One processed image or video."""

    kind: int  # IMAGE or VIDEO
    pixel_values: torch.Tensor | None  # None once the features are known (`cached`)
    grid_thw: torch.Tensor  # (3,)
    placeholder: str  # what replaces the compact placeholder in the prompt
    frames: int = 0
    key: str | None = None  # the feature cache key of a picture (None: not cacheable, or no cache)
    cached: CachedPicture | None = None  # its features, from the cache or computed by an earlier forward


def placeholder_for(tokens: int) -> str:
    return "<|vision_start|>" + "<|image_pad|>" * tokens + "<|vision_end|>"


@dataclass
class ProcessedItem:
    """An item's text and its visuals in prompt order (videos first, then images)."""

    text: str
    visuals: list[Visual]

    @property
    def n_videos(self) -> int:
        return sum(v.kind == VIDEO for v in self.visuals)

    @property
    def n_images(self) -> int:
        return sum(v.kind == IMAGE for v in self.visuals)


class VisualProcessor:
    """Runs the checkpoint's image and video processors on resolved media."""

    def __init__(self, processor, reject_vision_markers: bool = False) -> None:
        # Where text may encode special tokens ("reference" mode), vision markers in it would misalign
        # the image and video tokens with their features, so such text is refused.
        self.reject_vision_markers = reject_vision_markers
        self.image_processor = processor.image_processor
        self.video_processor = processor.video_processor
        self.merge = self.image_processor.merge_size**2
        self.temporal_patch = self.video_processor.temporal_patch_size

    def image(self, image, key: str | None = None) -> Visual:
        """A picture already resized to the model's bounds (`MediaResolver.image`)."""
        out = self.image_processor(images=[image], do_resize=False, return_tensors="pt")
        grid = out["image_grid_thw"][0]
        return Visual(IMAGE, out["pixel_values"], grid, placeholder_for(int(grid.prod()) // self.merge), key=key)

    @staticmethod
    def cached_image(entry: CachedPicture) -> Visual:
        """A picture whose features the cache holds: no pixels."""
        return Visual(IMAGE, None, entry.grid_thw, placeholder_for(entry.tokens), key=entry.key, cached=entry)

    def video(self, video: VideoFrames) -> Visual:
        from transformers.video_utils import VideoMetadata

        n_frames = video.frames.shape[0]
        metadata = VideoMetadata(total_num_frames=n_frames, fps=video.fps, frames_indices=video.frame_indices)
        out = self.video_processor(
            videos=[video.frames],
            video_metadata=[metadata],
            do_resize=False,
            do_sample_frames=False,
            return_tensors="pt",
        )
        grid = out["video_grid_thw"][0]
        per_frame = int(grid[1] * grid[2]) // self.merge
        stamps = [i / video.fps for i in video.frame_indices]
        step = self.temporal_patch
        placeholder = ""
        for t in range(int(grid[0])):
            group = stamps[t * step : (t + 1) * step]
            seconds = (group[0] + group[-1]) / 2
            placeholder += f"<{seconds:.1f} seconds><|vision_start|>" + "<|video_pad|>" * per_frame + "<|vision_end|>"
        return Visual(VIDEO, out["pixel_values_videos"], grid, placeholder, frames=n_frames)

    def items(
        self,
        items: Sequence[tuple[ItemInput, str]],
        resolver: MediaResolver,
        pool: Executor | None = None,
        cache: FeatureCache | None = None,
    ) -> list[ProcessedItem]:
        """`item` for each (item, where), in order; with `pool`, items with media are processed concurrently.

        A request's images are fetched, decoded and resized in parallel (network waits, PIL and
        torch release the GIL). Errors stay deterministic: the first failing item in order raises.
        """
        with_media = sum(1 for item, _ in items if item.images or item.videos)
        if pool is None or with_media < 2:
            return [self.item(item, where, resolver, cache) for item, where in items]
        futures = [pool.submit(self.item, item, where, resolver, cache) for item, where in items]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()  # after an error: the rest need not run

    def item(
        self, item: ItemInput, where: str, resolver: MediaResolver, cache: FeatureCache | None = None
    ) -> ProcessedItem:
        """Resolve and process every part of `item`; errors name `where` and the part. With `cache`,
        pictures it holds are not decoded."""
        if self.reject_vision_markers and any(marker in item.text for marker in RESERVED_MARKERS):
            raise invalid(f"{where}.text contains a reserved vision token")
        visuals: list[Visual] = []
        for v, video in enumerate(item.videos):
            label = f"{where}.videos[{v}]"
            try:
                if video.frames:  # only the sampled frames are decoded, one at a time
                    picks = sampled_frames(len(video.frames))
                    frames = frame_list_video(
                        (resolver.frame(video.frames[f], f"{label}.frames[{f}]") for f in picks), len(picks)
                    )
                else:
                    frames = resolver.video(video.uri or "", video.fps or DEFAULT_VIDEO_FPS, f"{label}.uri")
                visuals.append(self.video(frames))
            except SidecarError:
                raise
            except ValueError as exc:
                raise invalid(f"{label}: {exc}") from None
        lookup = cache.lookup if cache is not None else None
        pictures = [resolver.picture(ref, f"{where}.images[{i}]", lookup) for i, ref in enumerate(item.images)]
        tokens = sum(int(v.grid_thw.prod()) // self.merge for v in visuals) + sum(
            p.cached.tokens if p.cached is not None else p.image.width * p.image.height // (FACTOR * FACTOR)
            for p in pictures
        )
        cap = resolver.budget.max_pair_tokens
        if cap is not None and tokens > cap:  # checked before the pictures are turned into model input
            raise SidecarError(
                Kind.TOO_LARGE,
                f"{where} has {tokens} image and video tokens, over the limit of {cap} per pair (--max-pair-tokens)",
            )
        processed: dict[int, Visual] = {}  # a picture repeated in the item is processed once
        for i, picture in enumerate(pictures):
            if picture.cached is not None:
                visuals.append(self.cached_image(picture.cached))
                continue
            try:
                if id(picture.image) not in processed:
                    key = cache.key(picture.digest) if cache is not None else None
                    processed[id(picture.image)] = self.image(picture.image, key)
                visuals.append(processed[id(picture.image)])
            except ValueError as exc:
                raise invalid(f"{where}.images[{i}]: {exc}") from None
        return ProcessedItem(item.text, visuals)


def stack_visuals(visuals: list[Visual]) -> dict[str, torch.Tensor]:
    """Keyword arguments for transformers' own forward (pixel values and grids) of visuals in sequence
    order; each needs its pixels (prepared without a feature cache). Fine-tuning uses it."""
    kwargs: dict[str, torch.Tensor] = {}
    for kind, values_key, grid_key in (
        (IMAGE, "pixel_values", "image_grid_thw"),
        (VIDEO, "pixel_values_videos", "video_grid_thw"),
    ):
        chosen = [v for v in visuals if v.kind == kind]
        if chosen:
            kwargs[values_key] = torch.cat([v.pixel_values for v in chosen])
            kwargs[grid_key] = torch.stack([v.grid_thw for v in chosen])
    return kwargs


def visual_grids(visuals: list[Visual]) -> dict[str, torch.Tensor]:
    """`image_grid_thw` and `video_grid_thw` (what mRoPE positions need) for visuals in sequence order."""
    grids: dict[str, torch.Tensor] = {}
    for kind, grid_key in ((IMAGE, "image_grid_thw"), (VIDEO, "video_grid_thw")):
        chosen = [v.grid_thw for v in visuals if v.kind == kind]
        if chosen:
            grids[grid_key] = torch.stack(chosen)
    return grids
