"""Filter weights computed once on the host and shared by every backend."""

from __future__ import annotations

import functools

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
