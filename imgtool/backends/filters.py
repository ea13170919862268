"""Filter weights computed once on the host and shared by every backend."""

from __future__ import annotations

import functools
import math

import numpy as np

from ..ops import blur_radius


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


@functools.lru_cache(maxsize=64)
def lanczos_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Pillow's Lanczos-3 coefficients for resampling ``in_size`` samples to ``out_size``.

    Returns ``(bounds, coeffs, ksize)``: ``bounds[i] = (first input, count)``
    (int32, shape (out_size, 2)) and ``coeffs[i, :count]`` the int32 weights in
    22-bit fixed point (shape (out_size, ksize), zero past ``count``), computed
    step for step as Pillow's ``precompute_coeffs`` and ``normalize_coeffs_8bpc``
    in double precision, so a kernel that applies them is bit-exact with
    ``Image.resize(..., LANCZOS)``.  The arrays are read-only (they are cached).
    """
    if isinstance(in_size, bool) or isinstance(out_size, bool):
        raise TypeError("sizes must be integers")
    in_size, out_size = int(in_size), int(out_size)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be at least 1, not {in_size} -> {out_size}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = LANCZOS_SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inv_filterscale = 1.0 / filterscale

    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
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
