"""Media resolution: sources, limits, SSRF refusal, and resizing identical to the reference's."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from sidecar.errors import Kind, SidecarError
from sidecar.media import MediaPolicy, MediaResolver, prepare_video_frames, resize_image, smart_resize
from sidecar.types import ItemInput, MediaRef
from tests.conftest import png_bytes


def test_smart_resize_matches_reference_library():
    from qwen_vl_utils.vision_process import smart_resize as reference

    for h, w in [(1, 1), (31, 33), (150, 200), (4000, 3000), (64, 6000), (1080, 1920), (17, 3000)]:
        for lo, hi in [(4 * 1024, 1800 * 1024), (128 * 1024, 768 * 1024)]:
            assert smart_resize(h, w, lo, hi) == reference(h, w, factor=32, min_pixels=lo, max_pixels=hi)


def test_image_resize_matches_reference_pixels():
    from qwen_vl_utils.vision_process import fetch_image

    image = Image.open(io.BytesIO(png_bytes(333, 123, seed=5)))
    ours = resize_image(image.convert("RGB"))
    theirs = fetch_image({"image": image, "min_pixels": 4 * 1024, "max_pixels": 1800 * 1024}, image_patch_size=16)
    assert ours.size == theirs.size
    assert np.array_equal(np.array(ours), np.array(theirs))


def test_frames_match_reference_video_tensor():
    from qwen_vl_utils.vision_process import fetch_video

    frames = [Image.open(io.BytesIO(png_bytes(150, 100, seed=40 + i))).convert("RGB") for i in range(3)]
    ours = prepare_video_frames(list(frames))
    theirs, metadata = fetch_video(
        {"video": frames, "total_pixels": 10 * 768 * 1024}, image_patch_size=16, return_video_metadata=True
    )
    assert torch.equal(ours.frames, theirs)
    assert ours.frame_indices == metadata["frames_indices"] and ours.fps == metadata["fps"]


def test_more_than_64_frames_are_sampled_evenly():
    frames = [Image.new("RGB", (64, 64), (i, i, i)) for i in range(100)]
    video = prepare_video_frames(frames)
    assert video.frames.shape[0] == 64


def resolve(ref: MediaRef, policy: MediaPolicy | None = None) -> Image.Image:
    return MediaResolver(policy or MediaPolicy()).image(ref, "documents[2].images[0]")


def test_bytes_and_data_uri_decode_to_the_same_pixels():
    data = png_bytes(40, 30, seed=1)
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert np.array_equal(np.array(resolve(MediaRef(data=data))), np.array(resolve(MediaRef(uri=uri))))


@pytest.mark.parametrize(
    "ref, message",
    [
        (MediaRef(data=b"not an image at all"), "not a decodable image"),
        (MediaRef(uri="data:image/png;base64,@@@"), "invalid base64"),
        (MediaRef(uri="data:image/png,rawtext"), "base64"),
        (MediaRef(uri="ftp://example.com/a.png"), "unsupported URI scheme"),
        (MediaRef(uri="relative/a.png"), "local paths are disabled"),
    ],
)
def test_bad_references_name_the_document_and_reason(ref, message):
    with pytest.raises(SidecarError) as info:
        resolve(ref)
    assert info.value.kind is Kind.VALIDATION
    assert info.value.message.startswith("documents[2].images[0]: ")
    assert message in info.value.message


def test_truncated_image_is_reported_as_corrupt():
    data = png_bytes(200, 200, seed=2)
    with pytest.raises(SidecarError, match="corrupt|decodable"):
        resolve(MediaRef(data=data[: len(data) // 2]))


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(SidecarError) as info:
        resolve(MediaRef(data=png_bytes(300, 300, seed=3)), MediaPolicy(max_pixels=50_000))
    assert info.value.kind is Kind.TOO_LARGE


def test_media_root_paths_and_escapes(media_root):
    policy = MediaPolicy(media_root=media_root)
    assert resolve(MediaRef(uri="red.png"), policy).size == (96, 64)
    assert resolve(MediaRef(uri="file://nested/blue.png"), policy).size == (64, 96)
    assert resolve(MediaRef(uri=str(media_root / "red.png")), policy).size == (96, 64)
    for escape in ["../secret.png", "nested/../../secret.png", str(media_root.parent / "secret.png")]:
        with pytest.raises(SidecarError, match="outside the media root"):
            resolve(MediaRef(uri=escape), policy)
    with pytest.raises(SidecarError, match="no file"):
        resolve(MediaRef(uri="missing.png"), policy)


def test_private_addresses_are_refused_by_default():
    for url in [
        "http://127.0.0.1:9/x.png",
        "http://localhost/x.png",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/a",
        "http://[::127.0.0.1]/x.png",  # IPv4-compatible
        "http://[::ffff:127.0.0.1]/x.png",  # IPv4-mapped
        "http://[64:ff9b::a9fe:a9fe]/latest",  # NAT64 of 169.254.169.254
        "http://[2002:7f00:1::]/x.png",  # 6to4 of 127.0.0.1
    ]:
        with pytest.raises(SidecarError, match="non-public address"):
            resolve(MediaRef(uri=url))


@pytest.mark.parametrize(
    "address, public",
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),  # NAT64 of a public address
        ("::127.0.0.1", False),
        ("::ffff:10.1.2.3", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b:1::c0a8:1", False),  # local-use NAT64 of 192.168.0.1
        ("2002:7f00:1::", False),
        ("2002:a9fe:a9fe::1", False),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo whose client is 127.0.0.1
        ("fe80::1%eth0", False),
        ("ff02::1", False),
    ],
)
def test_addresses_embedding_private_ipv4_are_not_public(address, public):
    from sidecar.media.fetch import is_public

    assert is_public(address) is public


def test_phone_mpo_jpegs_decode_to_their_primary_picture():
    """A multi-picture JPEG (the format phone cameras write) is read as its first picture."""
    primary = Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    second = Image.new("RGB", (64, 48), (255, 0, 0))
    buffer = io.BytesIO()
    primary.save(buffer, "MPO", save_all=True, append_images=[second])
    data = buffer.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    as_jpeg = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(as_jpeg, "PNG")  # the first picture, decoded as Pillow reads it
    expected = resize_image(Image.open(io.BytesIO(as_jpeg.getvalue())).convert("RGB"))
    assert np.array_equal(np.array(resolve(MediaRef(data=data))), np.array(expected))


def test_a_request_pixel_budget_refuses_before_decoding():
    """Charged from the header: the image that would pass the budget is never decoded."""
    from sidecar.budgets import RequestBudget

    budget = RequestBudget(max_pixels=100 * 100 + 50 * 50)
    resolver = MediaResolver(MediaPolicy(), budget)
    resolver.image(MediaRef(data=png_bytes(100, 100, seed=1)), "documents[0].images[0]")
    resolver.image(MediaRef(data=png_bytes(50, 50, seed=2)), "documents[1].images[0]")
    with pytest.raises(SidecarError) as info:
        resolver.image(MediaRef(data=png_bytes(10, 10, seed=3)), "documents[2].images[0]")
    assert info.value.kind is Kind.TOO_LARGE
    assert info.value.message.startswith("documents[2].images[0]:") and "--max-request-pixels" in info.value.message
    assert resolver.decoded == 2


def test_image_tokens_count_against_the_request_before_decoding():
    from sidecar.budgets import RequestBudget

    resolver = MediaResolver(MediaPolicy(), RequestBudget(max_tokens=40))
    data = png_bytes(160, 160, seed=4)  # 5 x 5 blocks of 32 = 25 tokens
    resolver.image(MediaRef(data=data), "documents[0].images[0]")
    with pytest.raises(SidecarError, match="--max-request-tokens") as info:
        resolver.image(MediaRef(data=data), "documents[1].images[0]")  # the same picture used again: 50 > 40
    assert info.value.message.startswith("documents[1].images[0]:")


def test_a_cancelled_request_stops_before_fetching():
    from sidecar.budgets import RequestBudget

    budget = RequestBudget()
    budget.cancelled.set()
    with pytest.raises(SidecarError) as info:
        MediaResolver(MediaPolicy(), budget).image(MediaRef(data=png_bytes(20, 20, seed=5)), "query.images[0]")
    assert info.value.kind is Kind.CANCELLED


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802
        status, headers, body, delay = self.routes.get(self.path, (404, {}, b"", 0))
        with _Handler.lock:
            _Handler.in_flight += 1
            _Handler.most_in_flight = max(_Handler.most_in_flight, _Handler.in_flight)
        time.sleep(delay)
        with _Handler.lock:
            _Handler.in_flight -= 1
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    _Handler.hits = {}
    _Handler.most_in_flight = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_fetch_limits(http_server):
    image = png_bytes(50, 40, seed=4)
    _Handler.routes = {
        "/ok.png": (200, {"Content-Length": str(len(image))}, image, 0),
        "/redirect": (302, {"Location": "/ok.png"}, b"", 0),
        "/loop": (302, {"Location": "/loop"}, b"", 0),
        "/big.png": (200, {}, image * 50, 0),
        "/slow.png": (200, {}, image, 3),
        "/gone.png": (404, {}, b"", 0),
    }
    policy = MediaPolicy(allow_private_urls=True, read_timeout_s=1.0, max_bytes=len(image) * 10, max_redirects=2)
    expected = np.array(resize_image(Image.open(io.BytesIO(image)).convert("RGB")))  # resized to the model's bounds
    assert np.array_equal(np.array(resolve(MediaRef(uri=f"{http_server}/ok.png"), policy)), expected)
    assert np.array_equal(np.array(resolve(MediaRef(uri=f"{http_server}/redirect"), policy)), expected)
    with pytest.raises(SidecarError, match="redirects"):
        resolve(MediaRef(uri=f"{http_server}/loop"), policy)
    with pytest.raises(SidecarError, match="limit") as info:
        resolve(MediaRef(uri=f"{http_server}/big.png"), policy)
    assert info.value.kind is Kind.TOO_LARGE
    started = time.monotonic()
    with pytest.raises(SidecarError, match="timed out"):
        resolve(MediaRef(uri=f"{http_server}/slow.png"), policy)
    assert time.monotonic() - started < 2.5
    with pytest.raises(SidecarError, match="HTTP 404"):
        resolve(MediaRef(uri=f"{http_server}/gone.png"), policy)


def test_repeated_reference_is_fetched_once_per_request(http_server):
    image = png_bytes(20, 20, seed=6)
    _Handler.routes = {"/same.png": (200, {}, image, 0)}
    resolver = MediaResolver(MediaPolicy(allow_private_urls=True))
    for i in range(5):
        resolver.image(MediaRef(uri=f"{http_server}/same.png"), f"documents[{i}].images[0]")
    assert _Handler.hits["/same.png"] == 1
    assert resolver.decoded == 1


def test_a_requests_images_are_fetched_concurrently_and_kept_in_order(http_server, reranker):
    _Handler.routes = {f"/{i}.png": (200, {}, png_bytes(40 + 30 * i, 40, seed=i), 0.3) for i in range(4)}
    items = [
        (ItemInput(text=f"doc {i}", images=(MediaRef(uri=f"{http_server}/{i}.png"),)), f"documents[{i}]")
        for i in range(4)
    ]
    resolver = MediaResolver(MediaPolicy(allow_private_urls=True))
    with ThreadPoolExecutor(4) as pool:
        processed = reranker.visual_processor.items(items, resolver, pool)
    assert _Handler.most_in_flight >= 2  # the fetches overlapped
    assert [p.text for p in processed] == [f"doc {i}" for i in range(4)]
    one_by_one = reranker.visual_processor.items(items, MediaResolver(MediaPolicy(allow_private_urls=True)))
    for concurrent, sequential in zip(processed, one_by_one, strict=True):  # each document got its own image
        assert torch.equal(concurrent.visuals[0].pixel_values, sequential.visuals[0].pixel_values)
    assert resolver.decoded == 4


def test_concurrent_items_report_the_first_failing_document_in_order(http_server, reranker):
    image = png_bytes(20, 20, seed=1)
    _Handler.routes = {"/ok.png": (200, {}, image, 0), "/late-404.png": (404, {}, b"", 0.4)}
    urls = ["/ok.png", "/late-404.png", "/ok.png", "/fast-404.png"]  # documents[3] fails first in time
    items = [(ItemInput(images=(MediaRef(uri=f"{http_server}{u}"),)), f"documents[{i}]") for i, u in enumerate(urls)]
    with ThreadPoolExecutor(4) as pool, pytest.raises(SidecarError, match=r"^documents\[1\]\.images\[0\]: .*404"):
        reranker.visual_processor.items(items, MediaResolver(MediaPolicy(allow_private_urls=True)), pool)


def test_a_reference_shared_by_concurrent_documents_is_fetched_once(http_server, reranker):
    _Handler.routes = {"/same.png": (200, {}, png_bytes(20, 20, seed=6), 0.2)}
    items = [(ItemInput(images=(MediaRef(uri=f"{http_server}/same.png"),)), f"documents[{i}]") for i in range(6)]
    resolver = MediaResolver(MediaPolicy(allow_private_urls=True))
    with ThreadPoolExecutor(6) as pool:
        processed = reranker.visual_processor.items(items, resolver, pool)
    assert len(processed) == 6
    assert _Handler.hits["/same.png"] == 1
    assert resolver.decoded == 1
