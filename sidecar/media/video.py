"""Videos: frame lists and video files sampled and resized exactly as the reference does, one frame at a time.

Frames are resized as soon as they are decoded, so memory holds one full-size frame at a time
(plus the small model-ready ones) however large the source frames are. Resizing frames one by one
gives the same values as resizing the stacked video (each frame is resized on its own either way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from io import BytesIO

from PIL import Image

from sidecar.media.images import (
    FACTOR,
    FRAME_PRE_FACTOR,
    FRAME_PRE_MAX_PIXELS,
    FRAME_PRE_MIN_PIXELS,
    resize_image,
    smart_resize,
)

VIDEO_FRAME_MIN_PIXELS = 128 * FACTOR * FACTOR
VIDEO_FRAME_MAX_PIXELS = 768 * FACTOR * FACTOR
VIDEO_TOTAL_PIXELS = 10 * VIDEO_FRAME_MAX_PIXELS
VIDEO_MAX_FRAMES = 64
FRAME_LIST_FPS = 2.0  # the timestamp rate the reference assumes for frame lists
VIDEO_FILE_MIN_FRAMES = 4
# For video files the reference leaves the total-pixel budget at qwen-vl-utils' default.
VIDEO_FILE_TOTAL_PIXELS = 128000 * FACTOR * FACTOR * 0.9


@dataclass
class VideoFrames:
    """A video ready for the video processor: float frames (T, C, H, W) and timing metadata."""

    frames: object  # torch.Tensor; typed loosely so this module imports without torch
    fps: float
    frame_indices: list[int]


def sampled_frames(count: int) -> list[int]:
    """Which of `count` listed frames the reference uses: all, or 64 spread evenly."""
    if count <= VIDEO_MAX_FRAMES:
        return list(range(count))
    import numpy as np

    return np.linspace(0, count - 1, VIDEO_MAX_FRAMES, dtype=int).tolist()


def frame_list_video(frames: Iterator[Image.Image], count: int) -> VideoFrames:
    """A frame-list video from `count` sampled frames, each already resized as the reference first
    resizes it (`pre_resize_frame`), yielded one at a time: padded to an even count, resized again."""
    padded = count + count % 2
    resized = []
    size = None
    for frame in frames:
        if size is None:
            size = frame.size
            max_pixels = _frame_max_pixels(padded, VIDEO_TOTAL_PIXELS)
            target = smart_resize(frame.height, frame.width, VIDEO_FRAME_MIN_PIXELS, max_pixels)
        elif frame.size != size:
            raise ValueError("frames differ in size")
        resized.append(_resize_frame(_to_tensor(frame), target))
    if count % 2:
        resized.append(resized[-1])
    import torch

    return VideoFrames(frames=torch.cat(resized), fps=FRAME_LIST_FPS, frame_indices=list(range(padded)))


def pre_resize_frame(frame: Image.Image) -> Image.Image:
    """The reference's first resize of a listed frame (its doubled patch factor reproduced)."""
    return resize_image(frame, FRAME_PRE_MIN_PIXELS, FRAME_PRE_MAX_PIXELS, FRAME_PRE_FACTOR)


def prepare_video_frames(frames: list[Image.Image]) -> VideoFrames:
    """A frame list of decoded images as the reference turns it into a video tensor."""
    picks = sampled_frames(len(frames))
    return frame_list_video((pre_resize_frame(frames[i]) for i in picks), len(picks))


def video_file_frames(
    data: bytes,
    fps: float,
    max_frame_pixels: int,
    charge: Callable[[int], None] = lambda pixels: None,
    hold: Callable[[int], AbstractContextManager] = lambda pixels: nullcontext(),
    max_frames: int = VIDEO_MAX_FRAMES,
) -> VideoFrames:
    """Decode a video file and sample it as the reference does: `fps` frames per second, 4 to
    `max_frames` frames (an even count), evenly spaced, resized under the per-frame pixel bounds.

    Before decoding, the frame size is checked against `max_frame_pixels` and `charge` is called
    with the pixels that will be decoded (every frame up to the last one sampled); decoding runs
    inside `hold(frame pixels)` (one full-size frame is held at a time).
    """
    import av
    import numpy as np
    import torch

    try:
        with av.open(BytesIO(data)) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_frame_pixels:
                from sidecar.errors import Kind, SidecarError

                raise SidecarError(
                    Kind.TOO_LARGE,
                    f"video frames of {width}x{height} pixels exceed the limit of {max_frame_pixels} "
                    "(--max-frame-pixels)",
                )
            video_fps = float(stream.average_rate or stream.guessed_rate or 0)
            total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            if total < 2 or video_fps <= 0:
                raise ValueError("the video has fewer than 2 frames or no frame rate")
            container.seek(0)
            limit = min(max_frames, total)
            nframes = min(max(total / video_fps * fps, VIDEO_FILE_MIN_FRAMES), limit // 2 * 2, total)
            nframes = int(nframes // 2 * 2)
            if nframes < 2:
                raise ValueError("the video is too short to sample")
            picks = torch.linspace(0, total - 1, nframes).round().long().tolist()
            charge((picks[-1] + 1) * max(width * height, 1))
            max_pixels = _frame_max_pixels(nframes, VIDEO_FILE_TOTAL_PIXELS)
            target = smart_resize(height, width, VIDEO_FRAME_MIN_PIXELS, max_pixels)
            wanted: dict[int, object] = {}
            with hold(width * height):
                for position, frame in enumerate(container.decode(stream)):
                    if position in picks and position not in wanted:
                        array = np.ascontiguousarray(frame.to_ndarray(format="rgb24").transpose(2, 0, 1))
                        wanted[position] = _resize_frame(torch.from_numpy(array)[None], target)
                    if position >= picks[-1]:
                        break
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"not a decodable video ({type(exc).__name__})") from None
    if len(wanted) < len(set(picks)):
        raise ValueError("the video ended before its declared frame count")
    return VideoFrames(frames=torch.cat([wanted[i] for i in picks]), fps=video_fps, frame_indices=picks)


def _frame_max_pixels(frames: int, total_pixels: float) -> float:
    return max(min(VIDEO_FRAME_MAX_PIXELS, total_pixels / frames * 2), int(VIDEO_FRAME_MIN_PIXELS * 1.05))


def _to_tensor(frame: Image.Image):
    import numpy as np
    import torch

    return torch.from_numpy(np.array(frame).transpose(2, 0, 1))[None]


def _resize_frame(frame, target: tuple[int, int]):
    """(1, C, H, W) uint8 -> float, resized as the reference resizes the stacked video."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    return tvf.resize(frame, list(target), interpolation=InterpolationMode.BICUBIC, antialias=True).float()
