"""References -> model-ready images and video frames, for one request, under its budget.

Sources: raw bytes, `data:` URIs, paths under a configured media root, and http(s) URLs
(`fetch.fetch_url`, with the SSRF guard). Each distinct reference is fetched and decoded once per
request. Before a picture is decoded its header is read: the per-image pixel limit, the request's
pixel budget and its image-token budget are checked then, and the decode waits for room in the
process-wide `PixelGate`. A decoded image is resized at once and only the resized copy is kept, so
a request holds model-sized pictures, never full-size ones.

`picture` can consult a cache keyed by the bytes' content hash first: a picture the cache knows is
not decoded at all, and charges the request its tokens only (no decoded pixels).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image

from sidecar import metrics
from sidecar.budgets import PixelGate, RequestBudget
from sidecar.errors import Kind, SidecarError, invalid
from sidecar.media.fetch import fetch_url
from sidecar.media.images import decode, image_tokens, open_image, resize_image
from sidecar.media.video import VideoFrames, pre_resize_frame, video_file_frames
from sidecar.types import MediaRef


@dataclass(frozen=True)
class MediaPolicy:
    """Where media may come from and how much of it is accepted."""

    media_root: Path | None = None
    allow_private_urls: bool = False
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    max_pixels: int = 64_000_000  # per image: decompression-bomb guard
    max_frame_pixels: int = 1 << 24  # per video frame (frames cost several times an image's memory)
    max_video_bytes: int = 200 * 1024 * 1024


@dataclass(frozen=True)
class Picture:
    """An image reference resolved: decoded and resized (`image`), or what the caller's lookup returned
    for its bytes (`cached`, the picture left undecoded); `digest` is the bytes' content hash."""

    image: Image.Image | None
    cached: object | None = None
    digest: str = ""


def content_digest(data: bytes) -> str:
    """The hash a picture's bytes are looked up by."""
    return hashlib.blake2b(data, digest_size=20).hexdigest()


@dataclass
class _Slot:
    """One distinct image reference of a request: the resized picture once decoded (or what a cache
    lookup returned instead), its tokens, its lock."""

    image: Image.Image | None = None
    cached: object | None = None
    digest: str = ""
    tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class MediaResolver:
    """Resolves references for one request, fetching and decoding each distinct one once.

    Thread-safe: the items of a request may be resolved concurrently; a reference that two threads
    ask for at once is still fetched once (the second waits for the first).
    """

    def __init__(self, policy: MediaPolicy, budget: RequestBudget | None = None, gate: PixelGate | None = None) -> None:
        self.policy = policy
        self.budget = budget or RequestBudget()
        self.gate = gate
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self.decoded = 0
        self.lookups_hit = self.lookups_missed = 0  # distinct pictures `lookup` knew, and did not

    def image(self, ref: MediaRef, where: str) -> Image.Image:
        """The picture `ref` points to, decoded and resized to the model's image bounds."""
        return self.picture(ref, where).image

    def picture(self, ref: MediaRef, where: str, lookup: Callable[[str], object | None] | None = None) -> Picture:
        """The picture `ref` points to; with `lookup`, its bytes' content hash is looked up first, and
        a result (an object with a `tokens` attribute) is returned in place of decoding the picture."""
        slot, fresh = self._resolve(ref, where, lookup)
        if not fresh:  # a later use of a picture still costs its tokens
            self._guard(where, self.budget.charge_image_tokens, slot.tokens, where)
        return Picture(slot.image, slot.cached, slot.digest)

    def frame(self, ref: MediaRef, where: str) -> Image.Image:
        """A listed video frame, decoded and given the reference's first frame resize.

        Frames are not kept for reuse: each is dropped as soon as the video has its resized copy.
        """
        load = metrics.counted_fetch(lambda: self._decode(self._bytes(ref), where, "frame"), ref.uri, bool(ref.data))
        return self._guard(where, load)

    def video(self, uri: str, fps: float, where: str) -> VideoFrames:
        """A video file reference, decoded and sampled at `fps` frames per second."""
        return self._guard(
            where,
            metrics.counted_fetch(
                lambda: video_file_frames(
                    self.load_bytes(uri, self.policy.max_video_bytes),
                    fps,
                    self.policy.max_frame_pixels,
                    charge=lambda pixels: self.budget.charge_pixels(pixels, where),
                    hold=self._hold,
                ),
                uri,
                False,
            ),
        )

    def load_bytes(self, uri: str, max_bytes: int | None = None) -> bytes:
        """Bytes behind a data: URI, an http(s) URL or a media-root path."""
        if not uri:
            raise ValueError("empty media reference")
        limit = self.policy.max_bytes if max_bytes is None else max_bytes
        if uri.startswith("data:"):
            return _data_uri_bytes(uri, limit)
        scheme = urlsplit(uri).scheme.lower()
        if scheme in ("http", "https"):
            policy = self.policy
            return fetch_url(
                uri,
                allow_private=policy.allow_private_urls,
                connect_timeout_s=policy.connect_timeout_s,
                read_timeout_s=policy.read_timeout_s,
                max_bytes=limit,
                max_redirects=policy.max_redirects,
                check=self.budget.check,
            )
        if scheme in ("", "file"):
            return self._read_local(uri, limit)
        raise ValueError(f"unsupported URI scheme {scheme!r}; use data:, http(s):// or a media-root path")

    # ---- internals -------------------------------------------------------------------------------

    def _resolve(self, ref: MediaRef, where: str, lookup: Callable[[str], object | None] | None) -> tuple[_Slot, bool]:
        """The slot of an image reference, resolved by this call (True) or by an earlier one (False)."""
        key = "d:" + hashlib.sha1(ref.data).hexdigest() if ref.data else "u:" + (ref.uri or "")
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
        with slot.lock:
            if slot.image is not None or slot.cached is not None:
                return slot, False
            self._guard(where, metrics.counted_fetch(self._load, ref.uri, bool(ref.data)), ref, where, slot, lookup)
        return slot, True

    def _load(self, ref: MediaRef, where: str, slot: _Slot, lookup: Callable[[str], object | None] | None) -> None:
        """Fill `slot`: the cached picture if `lookup` knows the bytes (charged its tokens), else the decoded one."""
        data = self._bytes(ref)
        if lookup is not None:
            slot.digest = content_digest(data)
            cached = lookup(slot.digest)
            with self._lock:
                self.lookups_hit += cached is not None
                self.lookups_missed += cached is None
            if cached is not None:
                slot.tokens = cached.tokens
                self.budget.charge_image_tokens(slot.tokens, where)
                slot.cached = cached
                return
        slot.image = self._decode(data, where, "image", slot)

    def _bytes(self, ref: MediaRef) -> bytes:
        self.budget.check()
        return ref.data if ref.data else self.load_bytes(ref.uri or "")

    def _decode(self, data: bytes, where: str, use: str, slot: _Slot | None = None) -> Image.Image:
        """Check the header against every limit, then decode and resize for `use`."""
        if use == "image":
            opened = open_image(data, self.policy.max_pixels)
        else:
            opened = open_image(data, self.policy.max_frame_pixels, "--max-frame-pixels")
        pixels = opened.width * opened.height
        self.budget.charge_pixels(pixels, where)
        if slot is not None:
            slot.tokens = image_tokens(opened.width, opened.height)
            self.budget.charge_image_tokens(slot.tokens, where)
        self.budget.check()
        with self._hold(2 * pixels):  # the decoded picture and its resized copy
            picture = decode(opened)
            resized = resize_image(picture) if use == "image" else pre_resize_frame(picture)
        with self._lock:
            self.decoded += 1
        return resized

    def _hold(self, pixels: int):
        return self.gate.hold(pixels, self.budget) if self.gate is not None else nullcontext()

    @staticmethod
    def _guard(where: str, fn, *args):
        """Run `fn`, naming `where` in any error it raises."""
        try:
            return fn(*args)
        except SidecarError as exc:
            if exc.kind in (Kind.CANCELLED, Kind.DEADLINE) or exc.message.startswith(where):
                raise
            raise SidecarError(exc.kind, f"{where}: {exc.message}") from None
        except (ValueError, OSError) as exc:
            raise invalid(f"{where}: {exc}") from None

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
