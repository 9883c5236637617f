"""What a request may cost, checked as its work is discovered and before that work is done.

`RequestBudget` travels with one request through preparation: media charge decoded pixels and
image tokens to it before decoding (from the image header), every step checks it is still wanted
(its caller may have gone or its deadline passed), and the pair builder and the scheduler check
tokens before any model work. `PixelGate` bounds, across all requests, the decoded pixels held in
memory at once, so many large images arriving together wait instead of exhausting memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sidecar.errors import Kind, SidecarError


@dataclass
class RequestBudget:
    """One request's limits and what it has used so far (thread-safe)."""

    max_pixels: int | None = None  # decoded source pixels of all images and video frames
    max_tokens: int | None = None  # model-input tokens (images charged from their headers first)
    max_pair_tokens: int | None = None  # tokens of one query-document pair (an item's media alone may not pass it)
    deadline: float | None = None  # time.monotonic() instant after which the work is worthless
    cancelled: threading.Event = field(default_factory=threading.Event)
    pixels: int = 0
    image_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self) -> None:
        """Raise if the request is no longer wanted: its caller went away or its deadline passed."""
        if self.cancelled.is_set():
            raise SidecarError(Kind.CANCELLED, "the request was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SidecarError(Kind.DEADLINE, "the deadline passed while the request was being prepared")

    def charge_pixels(self, pixels: int, where: str) -> None:
        """Count `pixels` about to be decoded; TOO_LARGE once the request's total would pass its limit."""
        with self._lock:
            self.pixels += pixels
            total = self.pixels
        if self.max_pixels is not None and total > self.max_pixels:
            raise SidecarError(
                Kind.TOO_LARGE,
                f"{where}: the request's images and video frames exceed {self.max_pixels} decoded pixels "
                "(--max-request-pixels); send fewer or smaller images",
            )

    def charge_image_tokens(self, tokens: int, where: str) -> None:
        """Count an image's tokens (known from its header); TOO_LARGE once they alone pass the token limit."""
        with self._lock:
            self.image_tokens += tokens
            total = self.image_tokens
        if self.max_tokens is not None and total > self.max_tokens:
            raise SidecarError(
                Kind.TOO_LARGE,
                f"{where}: the request's images alone need {total} tokens, over the limit of {self.max_tokens} "
                "per request (--max-request-tokens); send fewer or smaller images",
            )


class PixelGate:
    """A shared budget of decoded pixels held at once; `hold` waits (cancellably) for room."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._room = threading.Condition()

    @contextmanager
    def hold(self, pixels: int, budget: RequestBudget | None = None) -> Iterator[None]:
        """Reserve `pixels` (at most the capacity) for the duration of a decode."""
        pixels = min(pixels, self.capacity)
        with self._room:
            while self._free < pixels:
                if budget is not None:
                    budget.check()
                self._room.wait(timeout=0.1)
            self._free -= pixels
        try:
            yield
        finally:
            with self._room:
                self._free += pixels
                self._room.notify_all()
