"""Filter weights computed once on the host and shared by every backend."""

from __future__ import annotations

import functools
import math

import numpy as np

from ..ops.blur import blur_radius
from ..ops.thumbnail import reduce_factors, reduced_size  # noqa: F401  (the kernels' callers import them here)


@functools.lru_cache(maxsize=64)
def gaussian_weights(sigma: float) -> np.ndarray:
    """Normalised float32 Gaussian taps for offsets -r..r, r = ceil(3 sigma)."""
    r = blur_radius(sigma)
    k = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-(k * k) / (2.0 * sigma * sigma))
    w /= w.sum()
    out = w.astype(np.float32)
    out.setflags(write=False)
    return out


# Pillow's 8-bit resampler: Lanczos-3 support, coefficients in 22-bit fixed point.
LANCZOS_SUPPORT = 3.0
PRECISION_BITS = 22


def _sinc(x: np.ndarray) -> np.ndarray:
    # math.sin, not np.sin: numpy's SIMD sine may differ from the C library's
    # in the last bit, and that can move a coefficient by one fixed-point step.
    with np.errstate(invalid="ignore", divide="ignore"):
        px = x * math.pi
        s = np.array([math.sin(v) for v in px.ravel().tolist()], dtype=np.float64).reshape(x.shape)
        return np.where(x == 0.0, 1.0, s / px)


def lanczos_coefficients(
    in_size: int, out_size: int, in0: float = 0.0, in1: float | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pillow's Lanczos-3 coefficients for resampling ``in_size`` samples to ``out_size``.

    ``in0``/``in1`` are the source box along this axis (default: the whole
    ``0..in_size``), fractional as ``Image.resize(box=...)`` takes them; Pillow
    holds them as C floats, so they are rounded to float32 here too, and the
    box width is a float32 difference before it becomes a double.

    Returns ``(bounds, coeffs, ksize)``: ``bounds[i] = (first input, count)``
    (int32, shape (out_size, 2)) and ``coeffs[i, :count]`` the int32 weights in
    22-bit fixed point (shape (out_size, ksize), zero past ``count``), computed
    step for step as Pillow's ``precompute_coeffs`` and ``normalize_coeffs_8bpc``
    in double precision, so a kernel that applies them is bit-exact with
    ``Image.resize(..., LANCZOS, box)``.  The arrays are read-only (they are cached).
    """
    for name, v in (("in_size", in_size), ("out_size", out_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, not {type(v).__name__}")
    in_size, out_size = int(in_size), int(out_size)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be at least 1, not {in_size} -> {out_size}")
    if in1 is None:
        in1 = in_size
    for name, v in (("in0", in0), ("in1", in1)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, not {type(v).__name__}")
    b0, b1 = np.float32(in0), np.float32(in1)
    # Pillow's own checks of the box, on the same float32 values.
    if not (np.isfinite(b0) and np.isfinite(b1)):
        raise ValueError(f"the box must be finite, not {in0}..{in1}")
    if b0 < 0 or b1 > in_size or b1 - b0 < 0:
        raise ValueError(f"the box {in0}..{in1} is not inside 0..{in_size}")
    return _lanczos_coefficients(in_size, out_size, float(b0), float(b1))


@functools.lru_cache(maxsize=64)
def _lanczos_coefficients(
    in_size: int, out_size: int, in0: float, in1: float
) -> tuple[np.ndarray, np.ndarray, int]:
    # in0, in1: float32 values (as doubles).  scale = (double)(in1 - in0) / outSize,
    # the difference taken in float as Pillow's C does.
    scale = float(np.float32(in1) - np.float32(in0)) / out_size
    filterscale = max(scale, 1.0)
    support = LANCZOS_SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inv_filterscale = 1.0 / filterscale

    center = in0 + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    # C's (int) truncates toward zero, as does astype on these (possibly negative) values.
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize, dtype=np.int64)
    valid = taps[None, :] < xmax[:, None]
    # (x + xmin - center + 0.5) * inv_filterscale, in the same order as the C.
    arg = (((taps[None, :] + xmin[:, None]).astype(np.float64) - center[:, None]) + 0.5) * inv_filterscale
    w = np.where((arg >= -LANCZOS_SUPPORT) & (arg < LANCZOS_SUPPORT), _sinc(arg) * _sinc(arg / 3), 0.0)
    w = np.where(valid, w, 0.0)
    # Pillow sums left to right; cumsum does too (np.sum would pair them up).
    ww = np.cumsum(w, axis=1)[:, -1]
    w = np.where(ww[:, None] != 0.0, w / np.where(ww == 0.0, 1.0, ww)[:, None], w)
    scaled = w * float(1 << PRECISION_BITS)
    fixed = np.where(w < 0, -0.5 + scaled, 0.5 + scaled)
    coeffs = np.where(valid, np.trunc(fixed), 0.0).astype(np.int32)
    bounds = np.stack([xmin, xmax], axis=1).astype(np.int32)
    bounds.setflags(write=False)
    coeffs.setflags(write=False)
    return bounds, coeffs, ksize


# ---- Pillow's reducing_gap: an integer box reduce before the resampler -------


def reduce_multiplier(n: int) -> int:
    """Pillow's ``division_UINT32(n, 8)``: the uint32 ``m`` with ``(sum + n // 2) * m >> 24`` ~ ``sum / n``.

    ``(UINT32)((float)2**32 / (float)(UINT32)(256 * n))`` in single precision,
    as Reduce.c computes it for a block of ``n`` pixels (the multiply wraps in
    32 bits as the C's does; the blocks of real thumbnails are far below that).
    """
    dividend = (256 * int(n)) & 0xFFFFFFFF
    if dividend == 0:
        # n = 0 (a block kind the image does not have) or a block of 2**24 pixels:
        # the C divides by zero, and x86 turns the +inf into 0.
        return 0
    q = np.float32(4294967296.0) / np.float32(dividend)
    return int(q) & 0xFFFFFFFF
