"""SSIM (Wang, Bovik, Sheikh and Simoncelli, 2004) in numpy, for the codec measurements; no new dependency.

The usual constants: an 11-tap Gaussian window of sigma 1.5 (separable,
``valid`` region only), K1 = 0.01, K2 = 0.03, L = 255, on luma (BT.601
weights of the 8-bit sRGB values), the mean of the SSIM map.  RGBA is
compared as composited over mid grey, so alpha counts where it shows.
"""

from __future__ import annotations

import numpy as np

_K1, _K2, _L = 0.01, 0.03, 255.0
_r = np.arange(-5, 6, dtype=np.float64)
WINDOW = np.exp(-_r * _r / (2 * 1.5 * 1.5))
WINDOW /= WINDOW.sum()


def luma(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 2:
        return a
    if a.shape[2] == 4:
        alpha = a[..., 3:4] / 255.0
        a = a[..., :3] * alpha + 128.0 * (1.0 - alpha)
    return a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114


def _filter(x: np.ndarray) -> np.ndarray:
    """The window along both axes, valid region: (h - 10, w - 10)."""
    n = len(WINDOW)
    rows = sum(WINDOW[k] * x[:, k:x.shape[1] - n + 1 + k] for k in range(n))
    return sum(WINDOW[k] * rows[k:rows.shape[0] - n + 1 + k] for k in range(n))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two 8-bit images of one shape (RGB, RGBA or grey); at least 11 x 11."""
    x, y = luma(a), luma(b)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    if min(x.shape) < len(WINDOW):
        raise ValueError(f"SSIM needs at least {len(WINDOW)} pixels a side, not {x.shape}")
    c1, c2 = (_K1 * _L) ** 2, (_K2 * _L) ** 2
    mx, my = _filter(x), _filter(y)
    sxx = _filter(x * x) - mx * mx
    syy = _filter(y * y) - my * my
    sxy = _filter(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())
