"""Inputs built to exhaust a server stay within their budgets, over the wire, on a live server.

Each case sends one hostile request to a real `serve` process and checks the answer, the peak
resident memory the request added (the kernel's high-water mark, reset before each request) and
that it was answered at all within a generous bound (a hang detector, not a speed target). The
memory bounds are several times what the budgets allow and far below what each input cost before
it had a budget (4 to 9 GB).
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
from PIL import Image

from sidecar.client import RerankerClient
from tests.conftest import ServerProcess, png_bytes

REQUEST_PIXELS = 100_000_000  # this server's --max-request-pixels: one 7999x7999 picture fits, two do not
MiB = 1024 * 1024


def tagged(png: bytes, tag: int) -> bytes:
    """The same picture with a distinct text chunk: distinct bytes (no de-duplication), same pixels."""
    body = b"Comment\x00" + str(tag).encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:33] + chunk + png[33:]  # after the signature and IHDR


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (7999, 7999), (40, 90, 200)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def write_video(path: Path, frames: int, size: int = 2048) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        black = np.zeros((size, size, 3), dtype=np.uint8)
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(black, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def hostile(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-media")
    write_video(root / "short.mp4", frames=20)  # 20 x 4.2 M decoded pixels: within the budget
    write_video(root / "long.mp4", frames=70)  # 70 x 4.2 M: over it, refused before decoding
    (root / "large.png").write_bytes(png_bytes(1344, 1344, seed=2))
    log = tmp_path_factory.mktemp("logs") / "hostile.log"
    args = ["--model", str(tiny_model_dir), "--media-root", str(root), "--max-request-pixels", str(REQUEST_PIXELS)]
    with ServerProcess(args, log) as server, RerankerClient(server.target, timeout=120, retries=0) as client:
        client.rerank("warm", ["up", {"images": [png_bytes(64, 64, seed=1)]}])
        yield server, client


def peak_added_mib(server: ServerProcess, call) -> tuple[float, object]:
    """Run `call`, returning the peak resident memory it added (MiB) and its outcome."""
    status = Path(f"/proc/{server.process.pid}/status")

    def read(field: str) -> float:
        line = next(x for x in status.read_text().splitlines() if x.startswith(field))
        return int(line.split()[1]) / 1024

    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # reset the high-water mark
    before = read("VmRSS:")
    started = time.monotonic()
    try:
        outcome = call()
    except grpc.RpcError as exc:
        outcome = exc
    assert time.monotonic() - started < 120, "the server did not answer in time"
    return read("VmHWM:") - before, outcome


def refused(outcome: object, *words: str) -> None:
    assert isinstance(outcome, grpc.RpcError), outcome
    assert outcome.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome.details()
    for word in words:
        assert word in outcome.details()


def test_twelve_huge_pictures_are_refused_after_the_budget(hostile, huge_png):
    server, client = hostile
    documents = [{"images": [tagged(huge_png, i)]} for i in range(12)]
    added, outcome = peak_added_mib(server, lambda: client.rerank("q", documents))
    refused(outcome, "--max-request-pixels")
    assert added < 1200  # one or two 7999x7999 decodes at a time (3 bytes a pixel), never twelve (4 GB)


def test_a_frame_list_of_huge_pictures_is_refused_before_decoding(hostile, huge_png):
    server, client = hostile
    frames = [tagged(huge_png, 100 + i) for i in range(12)]
    added, outcome = peak_added_mib(server, lambda: client.rerank("q", [{"videos": [frames]}]))
    refused(outcome, "--max-frame-pixels", "documents[0].videos[0].frames[0]")
    assert added < 200  # was 9 GB


def test_a_frame_list_of_large_frames_stays_within_the_pixel_budget(hostile):
    server, client = hostile
    buffer = io.BytesIO()
    Image.new("RGB", (4096, 4096), (200, 90, 40)).save(buffer, "PNG", compress_level=1)
    frames = [tagged(buffer.getvalue(), 200 + i) for i in range(12)]  # 12 x 16.8 M pixels > 100 M
    added, outcome = peak_added_mib(server, lambda: client.rerank("q", [{"videos": [frames]}]))
    refused(outcome, "--max-request-pixels", "documents[0].videos[0].frames[")
    assert added < 1200  # frames are decoded and resized one at a time


def test_a_video_file_is_decoded_one_frame_at_a_time(hostile):
    server, client = hostile
    added, outcome = peak_added_mib(server, lambda: client.rerank("q", [{"videos": ["short.mp4"]}]))
    assert not isinstance(outcome, grpc.RpcError), outcome
    assert added < 400  # a 2048x2048 frame is 12 MiB; all 20 resized at full size would be 6.7 GB in float
    added, outcome = peak_added_mib(server, lambda: client.rerank("q", [{"videos": ["long.mp4"]}]))
    refused(outcome, "--max-request-pixels", "documents[0].videos[0]")
    assert added < 200  # refused from the frame size and count, before decoding


def test_a_huge_query_costs_a_window_of_it(hostile):
    server, client = hostile
    query = "red bicycle with a basket, " * 200_000  # 5.4 MB
    added, outcome = peak_added_mib(server, lambda: client.rerank(query, [f"document {i}" for i in range(8)]))
    assert not isinstance(outcome, grpc.RpcError), outcome
    assert len(outcome.results) == 8 and outcome.usage.input_tokens == 8 * 10245
    assert added < 600  # was +3.1 GB and 43 s: the query is encoded once, as far as a pair can keep it


def test_special_token_strings_cost_what_text_costs(hostile):
    server, client = hostile
    added, outcome = peak_added_mib(server, lambda: client.rerank("q", ["<|endoftext|>" * 100_000, "short"]))
    assert not isinstance(outcome, grpc.RpcError), outcome
    assert outcome.usage.input_tokens < 2 * 10245 + 100  # truncated like text (was 100,008 tokens, 43 s)
    assert added < 600


def test_twenty_copies_of_a_large_picture_exceed_the_pair_cap(hostile):
    server, client = hostile
    added, outcome = peak_added_mib(server, lambda: client.rerank("q", [{"images": ["large.png"] * 20}]))
    refused(outcome, "documents[0]", "--max-pair-tokens")
    assert added < 600  # decoded once, refused before any model work (was 35,328 tokens, +2.4 GB)
