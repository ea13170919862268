"""Assertions shared by the tests (one place, so every test file says "close" the same way)."""

from __future__ import annotations

import numpy as np


def assert_image_close(a: np.ndarray, b: np.ndarray, max_diff: int, what: str = "images") -> None:
    """Fail unless ``a`` and ``b`` have the same shape and differ by at most ``max_diff`` per channel.

    The message says how many values differ, the largest difference, and where
    the first of the largest differences is, which is what one needs to debug a
    kernel against its reference.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape, f"{what}: shapes differ: {a.shape} vs {b.shape}"
    if a.size == 0:
        return
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
    worst = int(diff.max())
    if worst > max_diff:
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        over = int((diff > max_diff).sum())
        raise AssertionError(
            f"{what} differ by up to {worst} (allowed {max_diff}) in {over} of {diff.size} values; "
            f"first worst at {where}: {a[where]} vs {b[where]}"
        )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit images in dB (inf when equal)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def on_ci() -> bool:
    """The one reading of ``CI``: set to anything but "", "0", "false" or "no" (CI=true, CI=1, ...).

    On CI the tests that need a real part (redis-server, weed, a compiler,
    user namespaces) fail where it is missing instead of skipping.
    """
    import os

    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
