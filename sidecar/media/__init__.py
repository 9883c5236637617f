"""Media: references (bytes, data: URIs, media-root paths, http(s) URLs) -> model-ready pictures and videos.

resolver  one request's references, fetched and decoded once each, under its budget
fetch     http(s) fetching under limits, with the SSRF guard
images    header check, decoding and the reference's resizing
video     frame lists and video files, sampled and resized as the reference does
"""

from sidecar.media.fetch import check_address, fetch_url
from sidecar.media.images import decode_image, resize_image, smart_resize
from sidecar.media.resolver import MediaPolicy, MediaResolver
from sidecar.media.video import VideoFrames, prepare_video_frames, video_file_frames

__all__ = [
    "MediaPolicy",
    "MediaResolver",
    "VideoFrames",
    "check_address",
    "decode_image",
    "fetch_url",
    "prepare_video_frames",
    "resize_image",
    "smart_resize",
    "video_file_frames",
]
