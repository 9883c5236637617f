"""Images: opening (header first), decoding under limits, and resizing exactly as the reference does.

Resizing follows the Qwen3-VL reference: dimensions snapped to multiples of 32 within pixel bounds.
`open_image` reads only the header, so a request's pixel and token budgets are charged before any
pixel is decoded; `decode` then decodes it (the primary picture of a multi-picture file such as a
phone's MPO JPEG) and converts it to RGB as the reference does.
"""

from __future__ import annotations

import math
from io import BytesIO

from PIL import Image

from sidecar.errors import Kind, SidecarError

FACTOR = 32  # patch size 16 x spatial merge 2
IMAGE_MIN_PIXELS = 4 * FACTOR * FACTOR
IMAGE_MAX_PIXELS = 1800 * FACTOR * FACTOR
# The reference first resizes each frame of a frame-list video as an image, with its patch factor
# doubled twice over (qwen-vl-utils passes 32 where it expects a patch size): snap to multiples
# of 64 between 4 and 16384 such blocks. Reproduced as is, so frames match the reference exactly.
FRAME_PRE_FACTOR = 64
FRAME_PRE_MIN_PIXELS = 4 * FRAME_PRE_FACTOR * FRAME_PRE_FACTOR
FRAME_PRE_MAX_PIXELS = 16384 * FRAME_PRE_FACTOR * FRAME_PRE_FACTOR
MAX_ASPECT_RATIO = 200
# MPO is the multi-picture JPEG of phone cameras; its first picture is an ordinary JPEG.
IMAGE_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"}


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


def image_tokens(width: int, height: int) -> int:
    """Tokens an image of this size takes in a prompt (one per 32x32 block after resizing)."""
    h, w = smart_resize(height, width, IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS)
    return h * w // (FACTOR * FACTOR)


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


def open_image(data: bytes, max_pixels: int, limit_name: str = "--max-image-pixels") -> Image.Image:
    """Read an image's header only: format and size, refusing unknown formats and decompression bombs."""
    try:
        image = Image.open(BytesIO(data))
    except Exception as exc:  # Pillow raises several types for undecodable input
        raise ValueError(f"not a decodable image ({type(exc).__name__})") from None
    if image.format not in IMAGE_FORMATS:
        raise ValueError(f"unsupported image format {image.format}; use JPEG, PNG, WebP, GIF or BMP")
    if image.width * image.height > max_pixels:
        raise SidecarError(
            Kind.TOO_LARGE,
            f"image of {image.width}x{image.height} pixels exceeds the limit of {max_pixels} ({limit_name})",
        )
    if min(image.width, image.height) < 1:
        raise ValueError("the image has no pixels")
    return image


def decode(image: Image.Image) -> Image.Image:
    """Decode an opened image's first picture (the first frame of a GIF) into RGB."""
    try:
        image.seek(0)
        image.load()
    except Exception as exc:
        raise ValueError(f"corrupt image data ({type(exc).__name__}: {exc})") from None
    return to_rgb(image)


def decode_image(data: bytes, max_pixels: int = 64_000_000) -> Image.Image:
    """Header check, then decode: the whole path for an image given as bytes."""
    return decode(open_image(data, max_pixels))
