"""Colour: any decoded mode, bit depth and ICC profile to 8-bit sRGB (RGB or RGBA)."""

from __future__ import annotations

import functools
import io
import logging
from typing import TYPE_CHECKING

from PIL import Image, ImageChops

from ..errors import UnsupportedFormat

if TYPE_CHECKING:  # numpy and lcms are imported where they are used, off the hot path
    from PIL import ImageCms

log = logging.getLogger("imgtool")

_DEEP_GRAY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_srgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit RGB or RGBA image in sRGB (orientation not applied)."""
    icc = im.info.get("icc_profile") or None
    if im.mode in ("RGB", "RGBA") and icc is None and "transparency" not in im.info:
        return im  # the common case: nothing to convert, nothing copied
    im = _to_8bit(im)  # now one of L, LA, RGB, RGBA, CMYK, LAB
    if im.mode == "LAB":
        im = _cms()[0].applyTransform(im, _lab_to_srgb())
    elif icc is not None:
        im = _apply_profile(im, icc)
    if im.mode in ("L", "CMYK"):  # CMYK left means no usable profile: as browsers show it
        im = im.convert("RGB")
    elif im.mode == "LA":
        im = im.convert("RGBA")
    return im


def _apply_profile(im: Image.Image, icc: bytes) -> Image.Image:
    """``im`` converted from ``icc`` to sRGB; unchanged where the profile is sRGB or unusable."""
    if im.mode == "LA":
        # lcms has no gray-with-alpha transform; the colour part goes alone.
        color = _apply_profile(im.getchannel("L"), icc)
        if color.mode == "L":
            return im
        color.putalpha(im.getchannel("A"))
        return color
    transform = icc_transform(icc, im.mode)
    return im if transform is None else _cms()[0].applyTransform(im, transform)


def _to_8bit(im: Image.Image) -> Image.Image:
    """``im`` with 8-bit samples in one of L, LA, RGB, RGBA, CMYK, LAB."""
    mode = im.mode
    if mode in _DEEP_GRAY_MODES:
        return _deep_gray_to_8bit(im)
    if mode in ("L", "1", "RGB") and "transparency" in im.info:
        return im.convert("LA" if mode != "RGB" else "RGBA")
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        return im.convert("RGBA" if im.has_transparency_data else "RGB")
    if mode == "La":
        return im.convert("LA")
    if mode == "RGBa":
        return im.convert("RGBA")
    if mode in ("RGBX", "YCbCr", "HSV"):
        return im.convert("RGB")
    if mode == "CMYK" and im.format in ("JPEG", "MPO") and "adobe" not in im.info:
        # Pillow reads every CMYK JPEG with Adobe's inverted polarity (what
        # Photoshop writes, with its APP14 marker); without that marker the
        # samples are plain, as libjpeg and libvips take them.
        return ImageChops.invert(im)
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK", "LAB"):
        return im
    raise UnsupportedFormat(f"images of Pillow mode {mode!r} are not supported")


def _deep_gray_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float gray scaled (not clipped) to 8 bits, as L or LA.

    Integer samples are taken as 16-bit (0-65535; what PNG and TIFF hold and
    what Pillow makes of them), so 65535 is white; float samples as 0.0-1.0.
    A 16-bit colour key (PNG tRNS) becomes an alpha channel.
    """
    import numpy as np

    a = np.asarray(im)
    if im.mode == "F":
        scaled = np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0) * 255.0
        gray = np.rint(scaled).astype(np.uint8)
    else:
        wide = np.clip(a, 0, 65535).astype(np.uint32)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
    out = Image.fromarray(gray)
    key = im.info.get("transparency")
    if isinstance(key, int) and im.mode != "F":
        out.putalpha(Image.fromarray(np.where(a == key, 0, 255).astype(np.uint8)))
    return out


@functools.lru_cache(maxsize=1)
def _cms():
    """(PIL.ImageCms, the sRGB profile, the transforms' flags), made on first use."""
    from PIL import ImageCms

    # NOCACHE: lcms's one-pixel cache is not safe when threads share a transform.
    return ImageCms, ImageCms.createProfile("sRGB"), ImageCms.Flags.NOCACHE


_PROFILE_SPACE_MODES = {"RGB ": ("RGB", "RGBA"), "GRAY": ("L",), "CMYK": ("CMYK",)}


# A few profiles cover nearly every upload (sRGB, Display P3, a press CMYK or
# two); the bound keeps hostile files with profiles of their own from piling up.
@functools.lru_cache(maxsize=16)
def icc_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A transform from ``icc`` to sRGB for ``mode`` images, cached per profile.

    None when the profile is sRGB already (no work to do) or cannot be used
    with this mode (a broken profile, an RGB profile on a gray image): like
    browsers, the pixels are then taken as sRGB (CMYK as bare CMYK).
    """
    ImageCms, srgb, flags = _cms()
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space
        if mode not in _PROFILE_SPACE_MODES.get(space, ()):
            log.debug("ignoring a %r ICC profile on a %s image", space, mode)
            return None
        out_mode = "RGBA" if mode == "RGBA" else "RGB"
        transform = ImageCms.buildTransform(
            profile, srgb, mode, out_mode, ImageCms.Intent.PERCEPTUAL, flags
        )
        if mode in ("RGB", "RGBA") and _is_identity(transform, mode):
            return None
        return transform
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.debug("ignoring an unusable ICC profile: %s", exc)
        return None


def _is_identity(transform: ImageCms.ImageCmsTransform, mode: str) -> bool:
    """True when ``transform`` moves no colour of a 17x17x17 grid by more than 1 level."""
    import numpy as np

    levels = np.linspace(0, 255, 17).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    if mode == "RGBA":
        grid = np.concatenate([grid, np.full(grid.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    sample = Image.fromarray(np.ascontiguousarray(grid))
    moved = np.asarray(_cms()[0].applyTransform(sample, transform)).astype(np.int16) - grid
    return int(np.abs(moved).max()) <= 1


@functools.lru_cache(maxsize=1)
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    ImageCms, srgb, flags = _cms()
    return ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), srgb, "LAB", "RGB", ImageCms.Intent.PERCEPTUAL, flags
    )
