"""Reading and writing image data: sniff, decode (orientation, limits), colour, encode, and Pillow's settings.

The modules, each with one job:

- ``sniff``: the format from a file's first bytes, a named refusal for the rest;
- ``decode``: a file to an upright sRGB Pillow image, its header checked first
  (a video upload, told by its container's bytes, to its frame at 1 s);
- ``video``: a video's frame at 1 s with PyAV (container sniffing, rotation, time budget);
- ``colour``: any mode, depth and ICC profile to 8-bit sRGB;
- ``encode``: computed pixels to WebP bytes (``libwebp``: the simple-API fast path) or AVIF;
- ``pillow``: every process-wide Pillow setting imgtool makes.

Files and objects are read and written by ``imgtool.storage``; this package
sees only their bytes.
"""

from .decode import ImageInfo, Opened, decode, decode_image, open_image, probe, set_video_timeout
from .encode import (
    AVIF_CONTENT_TYPE,
    AVIF_MAX_SIDE,
    CONTENT_TYPES,
    WEBP_CONTENT_TYPE,
    WEBP_MAX_SIDE,
    WEBP_SUFFIX,
    encode,
    encode_webp,
)
from .sniff import ACCEPTED_FORMATS

__all__ = [
    "ACCEPTED_FORMATS",
    "AVIF_CONTENT_TYPE",
    "AVIF_MAX_SIDE",
    "CONTENT_TYPES",
    "WEBP_CONTENT_TYPE",
    "WEBP_MAX_SIDE",
    "WEBP_SUFFIX",
    "ImageInfo",
    "Opened",
    "decode",
    "decode_image",
    "encode",
    "encode_webp",
    "open_image",
    "probe",
    "set_video_timeout",
]
