"""Video files (Video.uri): decoded and sampled as the reference samples them, and scored the same."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from sidecar.errors import SidecarError
from sidecar.media import MediaPolicy, MediaResolver
from sidecar.types import ItemInput, RerankInput, VideoRef
from tests.reference import reference_logit


def write_video(path, frames: int = 45, fps: int = 10, size=(96, 64)) -> None:
    """A short MPEG-4 clip whose frames differ (a moving bar over a gradient)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            image[:, :, 0] = np.linspace(0, 255, size[0], dtype=np.uint8)
            image[:, (i * 2) % size[0] : (i * 2) % size[0] + 8, 1] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def pyav_reader(ele):
    """The reference's torchvision reader, re-done with PyAV (the test machine has no torchvision video IO)."""
    from qwen_vl_utils.vision_process import smart_nframes

    path = ele["video"].removeprefix("file://")
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [
            torch.from_numpy(f.to_ndarray(format="rgb24").transpose(2, 0, 1).copy()) for f in container.decode(stream)
        ]
        video_fps = float(stream.average_rate)
    video = torch.stack(frames)
    total = video.shape[0]
    nframes = smart_nframes(ele, total_frames=total, video_fps=video_fps)
    idx = torch.linspace(0, total - 1, nframes).round().long()
    metadata = dict(fps=video_fps, frames_indices=idx, total_num_frames=total, video_backend="pyav")
    return video[idx], metadata, nframes / total * video_fps


@pytest.fixture
def clip(tmp_path, monkeypatch):
    from qwen_vl_utils import vision_process

    monkeypatch.setitem(vision_process.VIDEO_READER_BACKENDS, "torchvision", pyav_reader)
    path = tmp_path / "clip.mp4"
    write_video(path)
    return path


@pytest.mark.parametrize("reuse_prefix", [False, True])
def test_video_file_scores_match_reference(reranker, tiny_loaded, clip, reuse_prefix):
    model, processor = tiny_loaded
    expected = reference_logit(model, processor, {"text": "a moving bar"}, {"video_file": clip})
    document = ItemInput(videos=(VideoRef(uri=clip.name, fps=1.0),))
    request = RerankInput(ItemInput(text="a moving bar"), (document, document))
    prepared = reranker.prepare(request, MediaResolver(MediaPolicy(media_root=clip.parent)), reuse_prefix)
    reranker.forward_prefix(prepared.prefix)
    for logit in reranker.forward_rows(prepared.rows).tolist():
        assert abs(logit - expected) < 1e-4
    # 4.5 s at 1 fps -> 4 frames (the minimum, even), for each of the two documents
    assert prepared.video_frames == 8


def test_broken_and_oversized_videos_are_named(reranker, tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 100)
    write_video(tmp_path / "ok.mp4")
    resolver = MediaResolver(MediaPolicy(media_root=tmp_path, max_video_bytes=10))
    with pytest.raises(SidecarError, match=r"documents\[0\]\.videos\[0\]\.uri: .*exceeds"):
        reranker.visual_processor.item(ItemInput(videos=(VideoRef(uri="ok.mp4"),)), "documents[0]", resolver)
    resolver = MediaResolver(MediaPolicy(media_root=tmp_path))
    with pytest.raises(SidecarError, match=r"documents\[1\]\.videos\[0\]\.uri: not a decodable video"):
        reranker.visual_processor.item(ItemInput(videos=(VideoRef(uri="junk.mp4"),)), "documents[1]", resolver)
