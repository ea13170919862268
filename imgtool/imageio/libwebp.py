"""Lossy WebP encoding straight through libwebp's simple API, when it can be found.

Pillow encodes every WebP through libwebp's animation encoder, which costs
about a tenth of the encode time of a large photo on top of the encode
itself. For the default settings (lossy, effort 4 — the simple API's method)
libwebp's ``WebPEncodeRGB``/``WebPEncodeRGBA`` write the same bitstream
without that overhead. Which library: the libwebp bundled with Pillow's wheel
(so it is the same version Pillow would use), else the system's. Where neither
loads, or for any other settings, callers fall back to Pillow.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

# The simple API's method (WebPConfigPreset's default); other efforts go through Pillow.
SIMPLE_API_EFFORT = 4


@functools.lru_cache(maxsize=1)
def load_libwebp():
    """libwebp through ctypes (WebPEncodeRGB/RGBA and WebPFree typed), or None."""
    try:
        import PIL

        libs = os.path.join(os.path.dirname(os.path.dirname(PIL.__file__)), "pillow.libs")
        names = sorted(n for n in os.listdir(libs) if n.startswith("libwebp-"))  # no glob: start-up
        bundled = [os.path.join(libs, n) for n in names]
    except OSError:
        bundled = []
    for path in bundled:
        lib = _typed(path)
        if lib is not None:
            return lib
    import ctypes.util  # slow to import (it brings subprocess): only when needed

    system = ctypes.util.find_library("webp")
    return _typed(system) if system else None


@functools.lru_cache(maxsize=None)
def _typed(path: str):
    try:
        lib = ctypes.CDLL(path)
        for name in ("WebPEncodeRGB", "WebPEncodeRGBA"):
            fn = getattr(lib, name)
            fn.restype = ctypes.c_size_t
            fn.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                           ctypes.c_float, ctypes.POINTER(ctypes.c_void_p)]
        lib.WebPFree.argtypes = [ctypes.c_void_p]
        lib.WebPFree.restype = None
        return lib
    except (OSError, AttributeError):
        return None


def is_ndarray(obj) -> bool:
    # Without importing numpy: if it was never imported, obj is no array.  A
    # numpy another thread is importing for the first time is in sys.modules
    # before it has an ndarray, and no array can exist yet either.
    ndarray = getattr(sys.modules.get("numpy"), "ndarray", None)
    return ndarray is not None and isinstance(obj, ndarray)


def available() -> bool:
    return load_libwebp() is not None


def encode_simple(img, quality: int, effort: int, lossless: bool) -> bytes | None:
    """WebP bytes of an RGB/RGBA PIL image, Pixels, or uint8 (h, w, 3|4) array.

    None where this path does not apply.  Pixels and arrays whose rows are
    contiguous are read in place, without a copy.
    """
    if lossless or effort != SIMPLE_API_EFFORT:
        return None
    lib = load_libwebp()
    if lib is None:
        return None
    from ..pixels import Pixels, image_bytes

    # ``img`` stays referenced until the call returns, so the memory ``data``
    # points into lives that long.
    if isinstance(img, Pixels):
        width, height, channels = img.width, img.height, img.channels
        stride = width * channels
        buf = img.data
        if isinstance(buf, bytes):
            data = buf
        else:
            try:
                data = (ctypes.c_char * len(buf)).from_buffer(buf)
            except TypeError:  # a read-only buffer
                data = bytes(buf)
    elif is_ndarray(img):
        import numpy as np

        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
            return None
        if img.strides[2] != 1 or img.strides[1] != img.shape[2]:
            img = np.ascontiguousarray(img)
        height, width, channels = img.shape
        data = ctypes.cast(img.ctypes.data, ctypes.c_char_p)
        stride = img.strides[0]
    elif img.mode in ("RGB", "RGBA"):
        width, height = img.size
        channels = 4 if img.mode == "RGBA" else 3
        data = image_bytes(img)
        stride = width * channels
    else:
        return None
    fn = lib.WebPEncodeRGBA if channels == 4 else lib.WebPEncodeRGB
    out = ctypes.c_void_p()
    # ctypes releases the GIL for the call, so encodes run in parallel threads.
    size = fn(data, width, height, stride, float(quality), ctypes.byref(out))
    if not size or not out.value:
        return None
    try:
        return ctypes.string_at(out.value, size)
    finally:
        lib.WebPFree(out)
