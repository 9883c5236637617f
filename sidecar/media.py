"""Media resolution: references to decoded, model-ready images and video frames.

Sources: raw bytes, `data:` URIs, paths under a configured media root, and http(s) URLs fetched
with connect/read timeouts, a byte limit and a redirect limit. URLs that resolve to loopback,
private, link-local or otherwise non-public addresses are refused unless allowed; the connection
goes to the address that was checked, so a second DNS answer cannot redirect it.

Resizing follows the Qwen3-VL reference: dimensions snapped to multiples of 32 within pixel bounds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import ipaddress
import math
import socket
import ssl
import threading
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from PIL import Image

from sidecar import metrics
from sidecar.errors import Kind, SidecarError, invalid
from sidecar.types import MediaRef

FACTOR = 32  # patch size 16 x spatial merge 2
IMAGE_MIN_PIXELS = 4 * FACTOR * FACTOR
IMAGE_MAX_PIXELS = 1800 * FACTOR * FACTOR
# The reference first resizes each frame of a frame-list video as an image, with its patch factor
# doubled twice over (qwen-vl-utils passes 32 where it expects a patch size): snap to multiples
# of 64 between 4 and 16384 such blocks. Reproduced as is, so frames match the reference exactly.
FRAME_PRE_FACTOR = 64
FRAME_PRE_MIN_PIXELS = 4 * FRAME_PRE_FACTOR * FRAME_PRE_FACTOR
FRAME_PRE_MAX_PIXELS = 16384 * FRAME_PRE_FACTOR * FRAME_PRE_FACTOR
VIDEO_FRAME_MIN_PIXELS = 128 * FACTOR * FACTOR
VIDEO_FRAME_MAX_PIXELS = 768 * FACTOR * FACTOR
VIDEO_TOTAL_PIXELS = 10 * VIDEO_FRAME_MAX_PIXELS
VIDEO_MAX_FRAMES = 64
FRAME_LIST_FPS = 2.0  # the timestamp rate the reference assumes for frame lists
VIDEO_FILE_MIN_FRAMES = 4
# For video files the reference leaves the total-pixel budget at qwen-vl-utils' default.
VIDEO_FILE_TOTAL_PIXELS = 128000 * FACTOR * FACTOR * 0.9
MAX_ASPECT_RATIO = 200
IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP"}


@dataclass(frozen=True)
class MediaPolicy:
    """Where media may come from and how much of it is accepted."""

    media_root: Path | None = None
    allow_private_urls: bool = False
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    max_pixels: int = 64_000_000  # decoded size guard against decompression bombs
    max_video_bytes: int = 200 * 1024 * 1024


@dataclass
class VideoFrames:
    """A video ready for the video processor: float frames (T, C, H, W) and timing metadata."""

    frames: object  # torch.Tensor; typed loosely so this module imports without torch
    fps: float
    frame_indices: list[int]


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = FACTOR) -> tuple[int, int]:
    """Snap (height, width) to multiples of `factor` within [min_pixels, max_pixels], keeping aspect."""
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.0f} exceeds {MAX_ASPECT_RATIO}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB conversion as the reference does it: transparency goes onto white."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


def resize_image(
    image: Image.Image, min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = IMAGE_MAX_PIXELS, factor: int = FACTOR
) -> Image.Image:
    """Resize to the model's bounds. Pillow's default filter is used, as the reference does."""
    height, width = smart_resize(image.height, image.width, min_pixels, max_pixels, factor)
    return image.resize((width, height))


def prepare_video_frames(frames: list[Image.Image]) -> VideoFrames:
    """Turn decoded frames into the reference's video tensor: sample, resize, pad to even, resize again."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    if len(frames) > VIDEO_MAX_FRAMES:
        picks = [int(i) for i in _linspace_int(len(frames) - 1, VIDEO_MAX_FRAMES)]
        frames = [frames[i] for i in picks]
    frames = [resize_image(f, FRAME_PRE_MIN_PIXELS, FRAME_PRE_MAX_PIXELS, FRAME_PRE_FACTOR) for f in frames]
    if len({f.size for f in frames}) > 1:
        raise ValueError("frames differ in size")
    if len(frames) % 2:
        frames.append(frames[-1])
    import numpy as np

    video = torch.stack([torch.from_numpy(np.array(f).transpose(2, 0, 1)) for f in frames])
    n, _, height, width = video.shape
    max_pixels = max(min(VIDEO_FRAME_MAX_PIXELS, VIDEO_TOTAL_PIXELS / n * 2), int(VIDEO_FRAME_MIN_PIXELS * 1.05))
    new_h, new_w = smart_resize(height, width, VIDEO_FRAME_MIN_PIXELS, max_pixels)
    video = tvf.resize(video, [new_h, new_w], interpolation=InterpolationMode.BICUBIC, antialias=True).float()
    return VideoFrames(frames=video, fps=FRAME_LIST_FPS, frame_indices=list(range(n)))


def video_file_frames(data: bytes, fps: float, max_frames: int = VIDEO_MAX_FRAMES) -> VideoFrames:
    """Decode a video file and sample it as the reference does: `fps` frames per second, 4 to
    `max_frames` frames (an even count), evenly spaced, resized under the per-frame pixel bounds.

    Only the chosen frames are kept while decoding, so memory stays bounded by `max_frames`.
    """
    import av
    import numpy as np
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    try:
        with av.open(BytesIO(data)) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
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
            wanted = {}
            for position, frame in enumerate(container.decode(stream)):
                if position in picks:
                    wanted[position] = frame.to_ndarray(format="rgb24")
                if position >= picks[-1]:
                    break
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"not a decodable video ({type(exc).__name__})") from None
    if len(wanted) < len(set(picks)):
        raise ValueError("the video ended before its declared frame count")
    video = torch.stack([torch.from_numpy(np.ascontiguousarray(wanted[i].transpose(2, 0, 1))) for i in picks])
    _, _, height, width = video.shape
    max_pixels = max(
        min(VIDEO_FRAME_MAX_PIXELS, VIDEO_FILE_TOTAL_PIXELS / nframes * 2), int(VIDEO_FRAME_MIN_PIXELS * 1.05)
    )
    new_h, new_w = smart_resize(height, width, VIDEO_FRAME_MIN_PIXELS, max_pixels)
    video = tvf.resize(video, [new_h, new_w], interpolation=InterpolationMode.BICUBIC, antialias=True).float()
    return VideoFrames(frames=video, fps=video_fps, frame_indices=picks)


def _linspace_int(stop: int, count: int) -> list[int]:
    """numpy.linspace(0, stop, count, dtype=int) without numpy's import cost at module load."""
    import numpy as np

    return np.linspace(0, stop, count, dtype=int).tolist()


def decode_image(data: bytes, policy: MediaPolicy) -> Image.Image:
    """Decode an encoded image, refusing unknown formats and oversized pixel counts."""
    try:
        image = Image.open(BytesIO(data))
    except Exception as exc:  # Pillow raises several types for undecodable input
        raise ValueError(f"not a decodable image ({type(exc).__name__})") from None
    if image.format not in IMAGE_FORMATS:
        raise ValueError(f"unsupported image format {image.format}; use JPEG, PNG, WebP, GIF or BMP")
    if image.width * image.height > policy.max_pixels:
        raise SidecarError(
            Kind.TOO_LARGE, f"image of {image.width}x{image.height} pixels exceeds the limit of {policy.max_pixels}"
        )
    try:
        image.seek(0)
        image.load()
    except Exception as exc:
        raise ValueError(f"corrupt image data ({type(exc).__name__}: {exc})") from None
    return to_rgb(image)


class MediaResolver:
    """Resolves references for one request, fetching and decoding each distinct one once.

    Thread-safe: the items of a request may be resolved concurrently; a reference that two threads
    ask for at once is still fetched once (the second waits for the first).
    """

    def __init__(self, policy: MediaPolicy) -> None:
        self.policy = policy
        self._images: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self.decoded = 0

    def image(self, ref: MediaRef, where: str) -> Image.Image:
        """Decoded RGB image for `ref`; errors name `where` (e.g. "documents[3].images[0]")."""
        key = "d:" + hashlib.sha1(ref.data).hexdigest() if ref.data else "u:" + (ref.uri or "")
        with self._lock:
            slot = self._images.setdefault(key, _Slot())
        with slot.lock:
            if slot.image is None:
                try:
                    data = ref.data if ref.data else self.load_bytes(ref.uri or "")
                    slot.image = decode_image(data, self.policy)
                except SidecarError as exc:
                    metrics.media_resolved(ref.uri, bool(ref.data), exc)
                    raise SidecarError(exc.kind, f"{where}: {exc.message}") from None
                except (ValueError, OSError) as exc:
                    metrics.media_resolved(ref.uri, bool(ref.data), exc)
                    raise invalid(f"{where}: {exc}") from None
                metrics.media_resolved(ref.uri, bool(ref.data))
                with self._lock:
                    self.decoded += 1
            return slot.image

    def video(self, uri: str, fps: float, where: str) -> VideoFrames:
        """A video file reference, decoded and sampled at `fps` frames per second."""
        try:
            frames = video_file_frames(self.load_bytes(uri, self.policy.max_video_bytes), fps)
        except SidecarError as exc:
            metrics.media_resolved(uri, False, exc)
            raise SidecarError(exc.kind, f"{where}: {exc.message}") from None
        except (ValueError, OSError) as exc:
            metrics.media_resolved(uri, False, exc)
            raise invalid(f"{where}: {exc}") from None
        metrics.media_resolved(uri, False)
        return frames

    def load_bytes(self, uri: str, max_bytes: int | None = None) -> bytes:
        """Bytes behind a data: URI, an http(s) URL or a media-root path."""
        if not uri:
            raise ValueError("empty media reference")
        policy = self.policy if max_bytes is None else replace(self.policy, max_bytes=max_bytes)
        if uri.startswith("data:"):
            return _data_uri_bytes(uri, policy.max_bytes)
        scheme = urlsplit(uri).scheme.lower()
        if scheme in ("http", "https"):
            return fetch_url(uri, policy)
        if scheme in ("", "file"):
            return self._read_local(uri, policy.max_bytes)
        raise ValueError(f"unsupported URI scheme {scheme!r}; use data:, http(s):// or a media-root path")

    def _read_local(self, uri: str, max_bytes: int) -> bytes:
        root = self.policy.media_root
        if root is None:
            raise ValueError("local paths are disabled (the server has no --media-root)")
        raw = unquote(uri[len("file://") :]) if uri.startswith("file://") else uri
        root = root.resolve()
        candidate = Path(raw)
        path = (candidate if candidate.is_absolute() else root / candidate).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"path {raw!r} is outside the media root")
        if not path.is_file():
            raise ValueError(f"no file at {raw!r} under the media root")
        if path.stat().st_size > max_bytes:
            raise SidecarError(Kind.TOO_LARGE, f"file {raw!r} exceeds {max_bytes} bytes")
        return path.read_bytes()


@dataclass
class _Slot:
    """One distinct reference of a request: its image once decoded, and the lock its fetch holds."""

    image: Image.Image | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _data_uri_bytes(uri: str, max_bytes: int) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or ";base64" not in header:
        raise ValueError("data: URI must be base64-encoded (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > max_bytes:
        raise SidecarError(Kind.TOO_LARGE, f"data: URI exceeds {max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ValueError("data: URI has invalid base64") from None


def check_address(host: str, port: int, allow_private: bool) -> str:
    """Resolve `host` and return an address to connect to; refuse non-public ones unless allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve host {host!r} ({exc.strerror})") from None
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise ValueError(
                    f"host {host!r} resolves to non-public address {address}; the server refuses private,"
                    " loopback and link-local URLs unless started with --allow-private-urls"
                )
    return addresses[0]


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP connection to a pre-checked address, with separate connect and read timeouts."""

    def __init__(self, host: str, port: int, address: str, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self._address, self._read_timeout = address, read_timeout

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.settimeout(self._read_timeout)


class _PinnedTLSConnection(_PinnedConnection):
    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


def fetch_url(url: str, policy: MediaPolicy) -> bytes:
    """GET `url` under the policy's address, time, size and redirect limits."""
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported URL {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = check_address(parts.hostname, port, policy.allow_private_urls)
        cls = _PinnedTLSConnection if parts.scheme == "https" else _PinnedConnection
        conn = cls(parts.hostname, port, address, policy.connect_timeout_s, policy.read_timeout_s)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"User-Agent": "rerank-sidecar", "Accept": "image/*, video/*"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise ValueError(f"fetching {url} returned HTTP {response.status}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise SidecarError(Kind.TOO_LARGE, f"{url} is {declared} bytes, over the {policy.max_bytes} limit")
            body = response.read(policy.max_bytes + 1)
            if len(body) > policy.max_bytes:
                raise SidecarError(Kind.TOO_LARGE, f"{url} exceeds the {policy.max_bytes}-byte limit")
            return body
        except TimeoutError:
            raise ValueError(f"fetching {url} timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ValueError(f"fetching {url} failed ({type(exc).__name__}: {exc})") from None
        finally:
            conn.close()
    raise ValueError(f"more than {policy.max_redirects} redirects fetching the URL")
