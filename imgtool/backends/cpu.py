"""The cpu backend: the kernels' arithmetic with numpy and Pillow's C fast paths."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from . import Backend
from .filters import gaussian_weights

# The default blur, [1 2 1] x [1 2 1] / 16, as Pillow's 3x3 filter: with
# these weights its float sum is exact, so it equals (sum + 8) >> 4.
_BOX121 = ImageFilter.Kernel((3, 3), [1, 2, 1, 2, 4, 2, 1, 2, 1], scale=16)


def _image(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img, "RGBA" if img.shape[2] == 4 else "RGB")


def premultiply(img: np.ndarray) -> np.ndarray:
    """Straight RGBA -> premultiplied, rounding as Pillow's RGBA -> RGBa."""
    return np.asarray(_image(img).convert("RGBa"))


def unpremultiply(img: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA -> straight, as Pillow's RGBa -> RGBA."""
    return np.asarray(Image.fromarray(img, "RGBa").convert("RGBA"))


class CpuBackend(Backend):
    name = "cpu"

    def thumbnail(self, img: np.ndarray, width: int, height: int) -> np.ndarray:
        # Pillow premultiplies RGBA itself around its resampler.
        return np.asarray(_image(img).resize((width, height), Image.Resampling.LANCZOS))

    def blur(self, img: np.ndarray, sigma: float | None) -> np.ndarray:
        alpha = img.shape[2] == 4
        src = premultiply(img) if alpha else img
        out = _blur121(src) if sigma is None else _gaussian(src, sigma)
        return unpremultiply(out) if alpha else out

    def halfsize(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        ys = slice(1, None, 2) if h > 1 else slice(0, 1)
        xs = slice(1, None, 2) if w > 1 else slice(0, 1)
        return np.ascontiguousarray(img[ys, xs])


def _blur121(img: np.ndarray) -> np.ndarray:
    h, w, c = img.shape
    if h < 3 or w < 3:
        return _blur121_numpy(img)
    mode = "RGBA" if c == 4 else "RGB"  # the values are premultiplied already
    out = np.array(Image.fromarray(img, mode).filter(_BOX121))
    # Pillow copies the 1-pixel border unfiltered, the kernels clamp to the
    # edge there: a two-line strip blurred with clamping gives its outer line
    # exactly, so only the border is recomputed.
    out[0] = _blur121_numpy(img[:2])[0]
    out[-1] = _blur121_numpy(img[-2:])[-1]
    out[:, 0] = _blur121_numpy(img[:, :2])[:, 0]
    out[:, -1] = _blur121_numpy(img[:, -2:])[:, -1]
    return out


def _edge_padded(img: np.ndarray, r: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    return np.pad(img, pad, mode="edge")


def _blur121_numpy(img: np.ndarray) -> np.ndarray:
    """[1 2 1] both ways in integers, clamp-to-edge, (sum + 8) >> 4."""
    a = _edge_padded(img.astype(np.uint16), 1, 1)
    horiz = a[:, :-2] + 2 * a[:, 1:-1] + a[:, 2:]
    b = _edge_padded(horiz, 1, 0)
    total = b[:-2] + 2 * b[1:-1] + b[2:]
    return ((total + 8) >> 4).astype(np.uint8)


def _convolve_axis(img: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """float32 sum of taps x clamp-to-edge neighbours along ``axis``."""
    r = len(taps) // 2
    n = img.shape[axis]
    padded = _edge_padded(img, r, axis)
    out = np.zeros(img.shape, np.float32)
    for k, t in enumerate(taps):
        window = padded[(slice(None),) * axis + (slice(k, k + n),)]
        out += window * t
    return out


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    taps = gaussian_weights(sigma)
    horiz = _convolve_axis(img.astype(np.float32), taps, 1)
    total = _convolve_axis(horiz, taps, 0)
    return np.clip(np.floor(total + np.float32(0.5)), 0, 255).astype(np.uint8)
