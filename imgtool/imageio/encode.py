"""Encoding computed pixels into output files: WebP, with no metadata (AVIF joins here later)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL import Image

from ..errors import ImageTooLarge
from ..pixels import Pixels
from . import libwebp

if TYPE_CHECKING:
    import numpy as np

#: libwebp cannot hold an image wider or taller than this.
WEBP_MAX_SIDE = 16383
#: What a WebP output is, for stores that record it (an object's Content-Type).
WEBP_CONTENT_TYPE = "image/webp"
WEBP_SUFFIX = ".webp"


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
