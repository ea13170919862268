"""Decoding images into sRGB arrays, and atomic WebP writes."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import CorruptImage, ImageTooLarge, ImgtoolError, UnsupportedFormat, from_os_error


def decode(path: Path, max_pixels: int) -> np.ndarray:
    """Read ``path`` into a C-contiguous uint8 (h, w, 3|4) sRGB array, upright."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageTooLarge(f"{w}x{h} is over the limit of {max_pixels} pixels", path)
            im = ImageOps.exif_transpose(im)
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            im = im.convert("RGBA" if has_alpha else "RGB")
            return np.asarray(im)
    except ImgtoolError:
        raise
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno:
            raise from_os_error(exc, path) from exc
        raise CorruptImage(str(exc), path) from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc), path) from exc


def encode_webp(img: np.ndarray, quality: int, effort: int, lossless: bool) -> bytes:
    """WebP bytes of ``img``, with no metadata."""
    buf = io.BytesIO()
    Image.fromarray(img).save(
        buf, "WEBP", quality=quality, method=effort, lossless=lossless, exact=lossless
    )
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place.

    A symlink at ``path`` is replaced by the rename, never followed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".imgtool-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
