"""The large-sigma Gaussian: a cascade of extended box filters in integers, shared by every backend.

A Gaussian of any sigma costs O(1) work per pixel as ``BOX_PASSES`` passes of
an *extended box* per axis (Gwosdek, Grewenig, Bruhn and Weickert, 2011: a box
of radius r with a fractional weight alpha on the two samples at r + 1, so the
cascade's variance is exactly sigma^2, not the nearest that whole boxes give).
Three passes stay within 2.6 levels of a true Gaussian on a full black-white
step and at >= 50 dB on photos (bench/RESULTS.md has the table); four would
cost a third more for a few dB the photos do not need.

The arithmetic is integers only, so the C extension, this numpy path and the
kernel (kernels/boxblur.cu) give the same bits whatever order they sum in:

- each pass's weights are ``(r, W, A)`` with ``W * (2r + 1) + 2 * A = 2**16``:
  ``W`` for the 2r + 1 inner samples, ``A = W * alpha`` for the two ends;
- a pass turns its input ``x`` into
  ``(W * sum(x[j-r .. j+r]) + A * (x[j-r-1] + x[j+r+1]) + half) >> shift``;
  values between passes carry ``FRAC_BITS`` fractional bits (8.6 fixed point,
  at most 16320, so every sum fits in 32 bits); the first pass of an axis reads
  8-bit pixels, the last gives 8-bit pixels again (rounded half up);
- edges are the existing Gaussian's clamp to the edge, exactly: the axis is
  first extended by ``extent`` (the sum of r + 1 over the passes) copies of
  its end pixels, and each pass shortens it by r + 1 at each end, so the result
  is the cascade's kernel convolved with the edge-extended image;
- the horizontal cascade runs first and rounds to 8 bits (premultiplied),
  then the vertical one; RGBA is premultiplied before and unpremultiplied
  after, as Pillow's RGBA <-> RGBa conversions do, like the other blurs.
"""

from __future__ import annotations

import array
import functools
import math
import numbers
from typing import TYPE_CHECKING

from ..ops.blur import MAX_BLUR_SIGMA, auto_sigma  # noqa: F401 - auto_sigma: read here by the bench and tests

BOX_PASSES = 3
WEIGHT_BITS = 16  # the weights of a pass sum to 2**16
FRAC_BITS = 6  # fractional bits of the values between passes
# Below this sigma the direct taps (filters.gaussian_weights, radius ceil(3 sigma)
# <= 3) cost no more than the passes and are a true Gaussian; from it on, the boxes.
MIN_BOX_SIGMA = 1.0
MAX_BOX_SIGMA = MAX_BLUR_SIGMA

if TYPE_CHECKING:
    import numpy as np
# numpy is imported where it is used: the C path needs none of it, and its
# import would be a third of the start-up every run pays.


def uses_boxes(sigma: float | None) -> bool:
    """Whether a blur of ``sigma`` runs as the box cascade (else the 3x3 kernel or direct taps)."""
    return sigma is not None and sigma >= MIN_BOX_SIGMA


def _extended_box(variance: float) -> tuple[int, float]:
    """(r, alpha) of the extended box whose variance is ``variance``: r whole, 0 <= alpha < 1."""
    # A plain box of radius r has variance r (r + 1) / 3; take the largest r not above.
    r = max(0, int(math.floor((math.sqrt(12.0 * variance + 1.0) - 1.0) / 2.0)))
    while (r + 1) * (r + 2) / 3.0 <= variance:
        r += 1
    while r > 0 and r * (r + 1) / 3.0 > variance:
        r -= 1
    # variance = (r (r+1) (2r+1) / 3 + 2 alpha (r+1)^2) / (2r + 1 + 2 alpha), solved for alpha.
    alpha = (2 * r + 1) * (variance - r * (r + 1) / 3.0) / (2.0 * ((r + 1) ** 2 - variance))
    return r, alpha


def box_cascade(sigma: float) -> np.ndarray:
    """The passes of a Gaussian of ``sigma`` (1 to 50) as int32 rows ``(r, W, A)``, read-only."""
    import numpy as np

    out = np.array(cascade_rows(sigma), dtype=np.int32)
    out.setflags(write=False)
    return out


def cascade_buffer(sigma: float) -> array.array:
    """``box_cascade(sigma)`` as a flat int32 buffer, what the C extension reads (no numpy)."""
    return array.array("i", [v for row in cascade_rows(sigma) for v in row])


@functools.lru_cache(maxsize=256)
def cascade_rows(sigma: float) -> tuple[tuple[int, int, int], ...]:
    """The passes of a Gaussian of ``sigma`` (1 to 50): rows ``(r, W, A)``.

    ``W`` is even so that ``A = (2**16 - W (2r + 1)) / 2`` is whole; the passes
    take the even W either side of the exact one so that the cascade's variance
    is sigma^2 to within 0.1%.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma must be a number, not {type(sigma).__name__}")
    sigma = float(sigma)
    if not (MIN_BOX_SIGMA <= sigma <= MAX_BOX_SIGMA):  # NaN fails this too
        raise ValueError(f"the box cascade takes sigma {MIN_BOX_SIGMA:g} to {MAX_BOX_SIGMA:g}, not {sigma}")
    total = 1 << WEIGHT_BITS
    r, alpha = _extended_box(sigma * sigma / BOX_PASSES)
    exact = total / (2 * r + 1 + 2 * alpha)
    # The two even W either side of the exact one; each pass takes the one that
    # brings the variance so far closest to what it should be by then.
    candidates = []
    for w in {2 * math.floor(exact / 2), 2 * math.ceil(exact / 2)}:
        a = (total - w * (2 * r + 1)) // 2
        if w > 0 and a >= 0:
            candidates.append((w, a, _box_variance(r, w, a)))
    rows, variance = [], 0.0
    for i in range(1, BOX_PASSES + 1):
        w, a, v = min(candidates, key=lambda c: (abs(variance + c[2] - i * sigma * sigma / BOX_PASSES), c[0]))
        rows.append((r, w, a))
        variance += v
    return tuple(rows)


def _box_variance(r: int, w: int, a: int) -> float:
    """The variance of the integer extended box (r, W, A)."""
    return (w * r * (r + 1) * (2 * r + 1) / 3.0 + 2 * a * (r + 1) ** 2) / (w * (2 * r + 1) + 2 * a)


def extent(params: np.ndarray) -> int:
    """How far the cascade reads past an edge: the sum of r + 1 over its passes."""
    return int(sum(int(r) + 1 for r in params[:, 0]))


def pass_shifts(passes: int) -> list[int]:
    """The right shift of each pass: 8-bit in to 8.6 out, 8.6 to 8.6, 8.6 to 8-bit out."""
    out = []
    for i in range(passes):
        f_in = 0 if i == 0 else FRAC_BITS
        f_out = 0 if i == passes - 1 else FRAC_BITS
        out.append(WEIGHT_BITS + f_in - f_out)
    return out


def kernel_1d(params: np.ndarray) -> np.ndarray:
    """The cascade's effective 1-D kernel as float64 weights (for measuring it; the blur never uses it)."""
    import numpy as np

    k = np.array([1.0])
    for r, w, a in params.tolist():
        box = np.full(2 * r + 3, float(w))
        box[0] = box[-1] = float(a)
        k = np.convolve(k, box / (1 << WEIGHT_BITS))
    return k


# ---- the numpy path (the cpu backend without its C extension) ----------------

_CHUNK_VALUES = 1 << 21  # int64 values per chunk: bounds this path's memory to tens of MB


def _cascade_axis(a: np.ndarray, params: np.ndarray, axis: int) -> np.ndarray:
    """One axis of the cascade over uint8 ``a`` (premultiplied); uint8 out."""
    import numpy as np

    ext = extent(params)
    pad = [(0, 0)] * a.ndim
    pad[axis] = (ext, ext)
    x = np.pad(a.astype(np.int64), pad, mode="edge")
    for (r, w, aw), shift in zip(params.tolist(), pass_shifts(len(params))):
        e = r + 1
        n_out = x.shape[axis] - 2 * e
        zero = list(x.shape)
        zero[axis] = 1
        # c[k] = x[0] + ... + x[k-1]; the inner sum around k + e is c[k + 2e] - c[k + 1].
        c = np.concatenate([np.zeros(zero, np.int64), np.cumsum(x, axis=axis)], axis=axis)

        def part(arr, start, n):
            return arr[(slice(None),) * axis + (slice(start, start + n),)]

        inner = part(c, 2 * e, n_out) - part(c, 1, n_out)
        ends = part(x, 0, n_out) + part(x, 2 * e, n_out)
        x = (w * inner + aw * ends + (1 << (shift - 1))) >> shift
    return x.astype(np.uint8)


def blur_premultiplied(img: np.ndarray, sigma: float) -> np.ndarray:
    """The cascade of a uint8 (h, w, c) image that is already premultiplied: horizontal, then vertical."""
    import numpy as np

    params = box_cascade(sigma)
    h, w, c = img.shape
    out = np.empty_like(img)
    ext = extent(params)
    rows = max(1, _CHUNK_VALUES // ((w + 2 * ext) * c))
    for y in range(0, h, rows):
        out[y:y + rows] = _cascade_axis(img[y:y + rows], params, 1)
    cols = max(1, _CHUNK_VALUES // ((h + 2 * ext) * c))
    for x in range(0, w, cols):
        out[:, x:x + cols] = _cascade_axis(out[:, x:x + cols], params, 0)
    return out
