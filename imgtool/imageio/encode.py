"""Encoding computed pixels into output files: WebP or AVIF, with no metadata."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL import Image

from ..errors import ImageTooLarge, PermanentError
from ..pixels import Pixels
from . import libwebp

if TYPE_CHECKING:
    import numpy as np

#: libwebp cannot hold an image wider or taller than this.
WEBP_MAX_SIDE = 16383
#: What a WebP output is, for stores that record it (an object's Content-Type).
WEBP_CONTENT_TYPE = "image/webp"
WEBP_SUFFIX = ".webp"
#: The largest side libavif reads back (its decoders' default dimension limit); a larger file would be
#: written but could not be opened.
AVIF_MAX_SIDE = 32768
AVIF_CONTENT_TYPE = "image/avif"
AVIF_SUFFIX = ".avif"
CONTENT_TYPES = {"webp": WEBP_CONTENT_TYPE, "avif": AVIF_CONTENT_TYPE}


def encode(img: Image.Image | Pixels, fmt: str, quality: int, operation: str, *, effort: int,
           lossless: bool, speed: int) -> tuple[bytes, str]:
    """``img`` as an output file of format ``fmt`` ("webp" or "avif"), and its content type.

    ``quality`` is on WebP's scale (what the options say); AVIF takes the
    quality ``avif_quality`` maps it to for ``operation``'s output, at libavif
    ``speed``.  ``effort`` and ``lossless`` are WebP's.
    """
    if fmt == "webp":
        return encode_webp(img, quality, effort, lossless), WEBP_CONTENT_TYPE
    if fmt != "avif":
        raise ValueError(f"unknown output format {fmt!r}")
    if lossless:
        raise ValueError("AVIF outputs are lossy: lossless output is WebP only")
    from .. import avif  # its import looks Pillow's codec up: only where AVIF is asked for

    w, h = (img.width, img.height) if isinstance(img, Pixels) else img.size
    if w > AVIF_MAX_SIDE or h > AVIF_MAX_SIDE:
        raise ImageTooLarge(f"{w}x{h} is over AVIF's limit of {AVIF_MAX_SIDE} pixels a side")
    try:
        return avif.encode_avif(img, avif.avif_quality(quality, operation), speed), AVIF_CONTENT_TYPE
    except RuntimeError as exc:  # libavif refused, or this Pillow has no AVIF encoder
        raise PermanentError(f"cannot encode AVIF ({exc})") from None


def encode_webp(
    img: np.ndarray | Image.Image | Pixels, quality: int, effort: int, lossless: bool
) -> bytes:
    """WebP bytes of ``img`` (uint8 RGB or straight-alpha RGBA), with no metadata.

    Lossless keeps the colour of fully transparent pixels too (``exact``), so
    the file holds exactly the computed pixels.
    """
    if isinstance(img, Pixels):
        w, h = img.width, img.height
    elif libwebp.is_ndarray(img):
        if img.dtype.name != "uint8" or img.ndim != 3 or img.shape[2] not in (3, 4):
            raise ValueError(f"expected a uint8 (h, w, 3|4) array, not {img.dtype} {img.shape}")
        h, w = img.shape[:2]
    elif img.mode not in ("RGB", "RGBA"):
        raise ValueError(f"expected an RGB or RGBA image, not {img.mode}")
    else:
        w, h = img.size
    if w > WEBP_MAX_SIDE or h > WEBP_MAX_SIDE:
        raise ImageTooLarge(f"{w}x{h} is over WebP's limit of {WEBP_MAX_SIDE} pixels a side")
    fast = libwebp.encode_simple(img, quality, effort, lossless)
    if fast is not None:
        return fast
    if isinstance(img, Pixels):
        img = img.to_image()
    elif libwebp.is_ndarray(img):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    # Pillow's WebP writer takes metadata only from these arguments, never from
    # img.info, so leaving them out writes none.
    img.save(buf, "WEBP", quality=quality, method=effort, lossless=lossless, exact=lossless)
    return buf.getvalue()
