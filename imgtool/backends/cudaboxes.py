"""The launches of kernels/boxblur.cu: the box-cascade Gaussian (boxblur.py) on the device.

``enqueue_boxes`` queues one image's blur on a stream, given how to get the
compiled module's functions and the device buffers, so the dispatcher of the
cuda backend (PyCUDA) and the tests (the CPU build, hostcuda) drive it alike.
Every argument is checked here, before any launch.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .boxblur import box_cascade, extent, pass_shifts
from .cuda.plan import MAX_GRID_Y, kernel_source

KERNEL = "boxblur.cu"
BLOCK = (32, 8)  # rows: 32 segments x 8 rows; columns: 32 adjacent columns x 8 segments
SEGMENT = 128  # outputs a thread makes along its line, after a window sum of 2r + 1 reads


def boxes_defines(channels: int) -> dict[str, int]:
    """The prelude of boxblur.cu for ``channels`` (3 or 4)."""
    if channels not in (3, 4):
        raise ValueError(f"channels must be 3 or 4, not {channels}")
    return {"CHANNELS": channels, "BLOCK_X": BLOCK[0], "BLOCK_Y": BLOCK[1], "SEGMENT": SEGMENT}


def boxes_source(channels: int) -> str:
    return kernel_source(KERNEL, boxes_defines(channels))


def _blocks(n: int, per: int) -> int:
    return -(-n // per)


def level_bytes(width: int, height: int, channels: int, sigma: float) -> int:
    """The size of each of the two 16-bit level buffers (the first pass's output, the largest)."""
    params = box_cascade(sigma)
    grow = 2 * (extent(params) - (int(params[0, 0]) + 1))
    return 2 * channels * max(height * (width + grow), (height + grow) * width)


def enqueue_boxes(function: Callable[[str], object], buffer: Callable[[str, int], object], src, dst,
                  width: int, height: int, channels: int, sigma: float, stream=None):
    """Queue the blur of ``src`` (width x height x channels bytes, straight alpha) into ``dst``.

    ``function(name)`` gives a kernel of the module compiled from
    ``boxes_source(channels)``; ``buffer(name, nbytes)`` a device buffer of at
    least ``nbytes`` (the blur asks for ``boxes_a``, ``boxes_b``: 16-bit levels,
    and ``boxes_mid``: the rows' 8-bit result).  Returns ``dst``.
    """
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v < 2**31:
            raise ValueError(f"{name} must be an integer from 1 to 2**31 - 1, not {v!r}")
    width, height = int(width), int(height)
    params = box_cascade(sigma)  # checks sigma
    if len(params) < 2:
        raise ValueError("the kernels need at least two passes (a first and a last)")
    ext = extent(params)
    if width + 2 * ext >= 2**31 or height + 2 * ext >= 2**31:
        raise ValueError(f"a {width}x{height} image is too large for the kernels")
    boxes_defines(channels)
    levels = [buffer("boxes_a", level_bytes(width, height, channels, sigma)),
              buffer("boxes_b", level_bytes(width, height, channels, sigma))]
    mid = buffer("boxes_mid", width * height * channels)
    bx, by = BLOCK
    shifts = pass_shifts(len(params))
    last = len(params) - 1
    for axis in ("rows", "cols"):
        n = (width if axis == "rows" else height) + 2 * ext
        across = height if axis == "rows" else width
        for i, ((r, w, a), shift) in enumerate(zip(params.tolist(), shifts)):
            n_out = n - 2 * (r + 1)
            segments = _blocks(n_out, SEGMENT)
            if axis == "rows":
                grid = (_blocks(segments, bx), max(1, min(MAX_GRID_Y, _blocks(across, by))))
            else:
                grid = (_blocks(across, bx), max(1, min(MAX_GRID_Y, _blocks(segments, by))))
            weights = (np.int32(r), np.uint32(w), np.uint32(a), np.int32(shift))
            first_in = src if axis == "rows" else mid
            into = levels[i % 2]
            came = levels[(i - 1) % 2]
            if i == 0:
                args = (first_in, into, np.int32(width), np.int32(height), np.int32(ext), np.int32(n_out))
                kind = "first"
            elif i == last:
                args = (came, mid if axis == "rows" else dst, np.int32(across), np.int32(n_out))
                kind = "last"
            else:
                args = (came, into, np.int32(across), np.int32(n_out))
                kind = "mid"
            function(f"boxes_{axis}_{kind}")(*args, *weights, block=(bx, by, 1), grid=grid, stream=stream)
            n = n_out
    return dst
