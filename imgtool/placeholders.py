"""Image placeholders as strings: ThumbHash (base64) and BlurHash (4 x 3 components), from a small image.

Both formats are a handful of cosine-transform coefficients of a tiny image,
quantised into a 20-30 character string that a client renders while the real
image loads (evanw/thumbhash; woltapp/blurhash).  They are computed here from
pixels the pipeline already has, never from a second decode: ``placeholder_source``
makes the input (at most ``SOURCE_MAX`` = 100 pixels a side, the most ThumbHash
takes) from the thumbnail, whose reduce of the full image has already been paid
for; ``placeholders`` encodes both.  numpy matrix products over at most
100 x 100 pixels: well under a millisecond an image.

ThumbHash keeps alpha (its own alpha channel); BlurHash has none, so
transparent pixels are composited over the image's alpha-weighted average
colour first, as ThumbHash does for its colour channels.  ThumbHash stores the
aspect ratio as the luminance grid's lx / ly, small whole numbers (the longer
side 7, or 5 with alpha); the shorter is chosen here as the one whose ratio is
nearest the image's, which the format allows.  For 1:1, 5:4, 4:3, 3:2 and
16:9 (and portraits) that is within 7% (with alpha, 3:2 is 11% off); between
the grid's ratios it can be far more (2:1 decodes as 7:4), so a client should
size the placeholder from the image's own width and height, which imgtool
reports with it.  BlurHash stores no aspect at all.
"""

from __future__ import annotations

import base64
import functools
import math

import numpy as np

SOURCE_MAX = 100  # pixels a side: ThumbHash's limit, and plenty for either format
# An output offered as the source is used when its longer side has at least this many pixels
# (fewer would lose what the hashes' components hold); the smallest such one is taken.
SOURCE_MIN = 32
# Larger than this a side, an image is first reduced by a whole factor (cheap) before the box resize.
_REDUCE_ABOVE = 4 * SOURCE_MAX
BLURHASH_COMPONENTS = (4, 3)  # x, y
_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def placeholder_source(image):
    """A PIL image scaled (box filter, aspect kept) to fit ``SOURCE_MAX`` x ``SOURCE_MAX``, as a uint8 array.

    ``image``: the thumbnail (or any already-decoded RGB/RGBA PIL image); an
    image that already fits is used as it is.
    """
    from PIL import Image

    w, h = image.size
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    scale = SOURCE_MAX / max(w, h)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    return np.asarray(image)


def of_image(decoded, offered=()) -> dict[str, str]:
    """``placeholders`` of an image the pipeline has decoded, from pixels it already has.

    ``offered``: outputs made from it that are antialiased reductions with its
    aspect (PIL images or ``Pixels``: the thumbnails); the smallest of them with
    at least ``SOURCE_MIN`` pixels on its longer side is the source, else the
    largest.  With none, the decoded image (a PIL image) reduced.  No decode.
    """
    from .pixels import Pixels

    images = [o.to_image() if isinstance(o, Pixels) else o for o in offered]
    if images:
        fit = [im for im in images if max(im.size) >= SOURCE_MIN]
        source = (min(fit, key=lambda im: im.width * im.height) if fit
                  else max(images, key=lambda im: im.width * im.height))
    else:
        source = decoded
    longer = max(source.size)
    if longer > _REDUCE_ABOVE:
        # A whole-factor box reduce (premultiplied where there is alpha, as Pillow
        # reduces RGBA) to at most twice what the hashes read, then the box resize.
        source = source.reduce(longer // (2 * SOURCE_MAX))
    return placeholders(placeholder_source(source))


def _check(pixels: np.ndarray) -> np.ndarray:
    a = np.asarray(pixels)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected a uint8 height x width x 3 or 4 array, not {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    if not (1 <= w <= SOURCE_MAX and 1 <= h <= SOURCE_MAX):
        raise ValueError(f"a placeholder's source is 1 to {SOURCE_MAX} pixels a side, not {w}x{h}")
    return a


def placeholders(pixels: np.ndarray) -> dict[str, str]:
    """``{"thumbhash": base64, "blurhash": str}`` of a uint8 (h, w, 3|4) straight-alpha array, <= 100 a side."""
    seen = _Seen(_check(pixels))
    return {"thumbhash": base64.b64encode(_thumbhash(seen)).decode("ascii"), "blurhash": _blurhash(seen)}


class _Seen:
    """What both encoders read: the colours in 0..1, atop their average where alpha is below 1."""

    def __init__(self, a: np.ndarray):
        self.height, self.width = a.shape[:2]
        alpha = a[..., 3] / 255.0 if a.shape[2] == 4 else np.ones(a.shape[:2])
        self.alpha = alpha
        self.has_alpha = bool(alpha.sum() < self.width * self.height)
        self.rgb = _over_average(a, alpha) if self.has_alpha else a[..., :3] / 255.0
        self.srgb8 = (np.clip(np.floor(self.rgb * 255.0 + 0.5), 0, 255).astype(np.uint8) if self.has_alpha
                      else a[..., :3])


def _over_average(a: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The colours (0..1) composited atop their alpha-weighted average (the average of what is seen).

    In the reference encoder's order of operations (alpha / 255 * value), so
    that the hashes are its own but for the order of the sums.
    """
    total = float(alpha.sum())
    weighted = (alpha / 255.0)[..., None] * a[..., :3]
    avg = weighted.reshape(-1, 3).sum(axis=0) / total if total > 0 else np.zeros(3)
    return avg * (1.0 - alpha)[..., None] + weighted


@functools.lru_cache(maxsize=512)
def _cosines(n: int, count: int, half: bool) -> np.ndarray:
    """(count, n): cos(pi k (i + 0.5) / n) (ThumbHash) or cos(pi k i / n) (BlurHash)."""
    i = np.arange(n, dtype=np.float64) + (0.5 if half else 0.0)
    out = np.cos(np.pi / n * np.arange(count, dtype=np.float64)[:, None] * i[None, :])
    out.setflags(write=False)
    return out


# ---- ThumbHash ----------------------------------------------------------------


def _thumb_channel(x: np.ndarray, nx: int, ny: int) -> tuple[float, list[float], float]:
    """(dc, ac in 0..1, scale): the coefficients with cx * ny < nx * (ny - cy), in row order of cy."""
    h, w = x.shape
    coeffs = _cosines(h, ny, True) @ x @ _cosines(w, nx, True).T / (w * h)  # (ny, nx)
    ac = coeffs[_ac_mask(nx, ny)]  # row order of cy, then cx
    scale = float(np.abs(ac).max()) if len(ac) else 0.0
    if scale > 0:
        ac = 0.5 + 0.5 / scale * ac
    return float(coeffs[0, 0]), ac.tolist(), scale


@functools.lru_cache(maxsize=64)
def _ac_mask(nx: int, ny: int) -> np.ndarray:
    cy, cx = np.mgrid[0:ny, 0:nx]
    mask = (cx * ny < nx * (ny - cy)) & ((cx > 0) | (cy > 0))
    mask.setflags(write=False)
    return mask


def _round(v: float) -> int:
    """Half up, as the reference encoder's Math.round (Python's round() goes to even)."""
    return math.floor(v + 0.5)


def _short_side(limit: int, w: int, h: int) -> int:
    """The luminance grid's shorter side: the one whose ratio limit / n is nearest the image's."""
    longer, shorter = max(w, h), min(w, h)
    exact = limit * shorter / longer
    candidates = {max(1, min(limit, math.floor(exact))), max(1, min(limit, math.ceil(exact)))}
    return min(candidates, key=lambda n: (abs(math.log(limit / n) - math.log(longer / shorter)), n))


def thumbhash_bytes(pixels: np.ndarray) -> bytes:
    """The ThumbHash of a uint8 (h, w, 3|4) straight-alpha array of at most 100 x 100."""
    return _thumbhash(_Seen(_check(pixels)))


def _thumbhash(seen: "_Seen") -> bytes:
    h, w, has_alpha, alpha = seen.height, seen.width, seen.has_alpha, seen.alpha
    limit = 5 if has_alpha else 7  # fewer luminance terms when alpha needs room
    n = _short_side(limit, w, h)
    lx, ly = (limit, n) if w >= h else (n, limit)
    if w == h:
        lx = ly = limit
    r, g, b = seen.rgb[..., 0], seen.rgb[..., 1], seen.rgb[..., 2]
    l_dc, l_ac, l_scale = _thumb_channel((r + g + b) / 3.0, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _thumb_channel((r + g) / 2.0 - b, 3, 3)
    q_dc, q_ac, q_scale = _thumb_channel(r - g, 3, 3)
    landscape = w > h
    header24 = (_round(63.0 * l_dc) | _round(31.5 + 31.5 * p_dc) << 6 | _round(31.5 + 31.5 * q_dc) << 12
                | _round(31.0 * l_scale) << 18 | (1 << 23 if has_alpha else 0))
    header16 = ((ly if landscape else lx) | _round(63.0 * p_scale) << 3 | _round(63.0 * q_scale) << 9
                | (1 << 15 if landscape else 0))
    out = bytearray([header24 & 255, header24 >> 8 & 255, header24 >> 16, header16 & 255, header16 >> 8])
    ac = l_ac + p_ac + q_ac
    if has_alpha:
        a_dc, a_ac, a_scale = _thumb_channel(alpha, 5, 5)
        out.append(_round(15.0 * a_dc) | _round(15.0 * a_scale) << 4)
        ac += a_ac
    nibbles = [_round(15.0 * v) for v in ac] + ([0] if len(ac) % 2 else [])
    out.extend(nibbles[i] | nibbles[i + 1] << 4 for i in range(0, len(nibbles), 2))
    return bytes(out)


def thumbhash(pixels: np.ndarray) -> str:
    """``thumbhash_bytes`` as base64 (how APIs carry it)."""
    return base64.b64encode(thumbhash_bytes(pixels)).decode("ascii")


# ---- BlurHash ---------------------------------------------------------------

_S = np.arange(256, dtype=np.float64) / 255.0
_SRGB_TO_LINEAR = np.where(_S <= 0.04045, _S / 12.92, ((_S + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(v: float) -> int:
    v = min(1.0, max(0.0, v))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[value // 83 ** (length - 1 - i) % 83] for i in range(length))


def blurhash(pixels: np.ndarray, components: tuple[int, int] = BLURHASH_COMPONENTS) -> str:
    """The BlurHash (``components`` x, y: 1 to 9 each) of a uint8 (h, w, 3|4) array of at most 100 x 100."""
    cx, cy = components
    if not (1 <= cx <= 9 and 1 <= cy <= 9):
        raise ValueError(f"BlurHash components are 1 to 9 each, not {cx} x {cy}")
    return _blurhash(_Seen(_check(pixels)), components)


def _blurhash(seen: "_Seen", components: tuple[int, int] = BLURHASH_COMPONENTS) -> str:
    cx, cy = components
    h, w = seen.height, seen.width
    lin = _SRGB_TO_LINEAR[seen.srgb8]  # (h, w, 3)
    fy, fx = _cosines(h, cy, False), _cosines(w, cx, False)
    # factors[j, c, i] = norm / (w h) * the sum over the pixels of basis(i, j) * linear colour c
    down = (fy @ lin.reshape(h, w * 3)).reshape(cy, w, 3).transpose(0, 2, 1)  # (cy, 3, w)
    factors = down @ fx.T / (w * h)  # (cy, 3, cx)
    factors[1:] *= 2.0
    factors[0, :, 1:] *= 2.0
    dc = factors[0, :, 0]
    ac = factors.transpose(0, 2, 1).reshape(cy * cx, 3)[1:]  # row order of j, then i; without the DC
    out = _base83((cx - 1) + (cy - 1) * 9, 1)
    if len(ac):
        actual = float(np.abs(ac).max())
        quantised = int(max(0, min(82, math.floor(actual * 166 - 0.5))))
        maximum = (quantised + 1) / 166
        out += _base83(quantised, 1)
    else:
        maximum = 1.0
        out += _base83(0, 1)
    out += _base83((_linear_to_srgb(dc[0]) << 16) + (_linear_to_srgb(dc[1]) << 8) + _linear_to_srgb(dc[2]), 4)
    v = ac / maximum
    q = np.clip(np.floor(np.sign(v) * np.sqrt(np.abs(v)) * 9 + 9.5), 0, 18).astype(np.int64)
    for value in (q[:, 0] * 19 * 19 + q[:, 1] * 19 + q[:, 2]).tolist():
        out += _base83(value, 2)
    return out
