"""Image placeholders as strings: ThumbHash (base64) and BlurHash (4 x 3 components), from a small image.

Both formats are a handful of cosine-transform coefficients of a tiny image,
quantised into a 20-30 character string that a client renders while the real
image loads (evanw/thumbhash; woltapp/blurhash).  They are computed here from
pixels the pipeline already has, never from a second decode: ``placeholder_source``
makes the input (at most ``SOURCE_MAX`` = 100 pixels a side, the most ThumbHash
takes) from the thumbnail, whose reduce of the full image has already been paid
for; ``placeholders`` encodes both.  The per-pixel work (the colours, the
cosine sums) is in the cpu backend's C extension ``_cpufast`` when it was
built, else numpy matrix products (imported only then), in the same order
and precision; the quantisation and packing are plain Python on the sums:
well under a millisecond an image.  The two paths' sums can differ in their
last bits (numpy's BLAS sums in an order of its own), so a value lying
exactly on a quantisation boundary could come out one step apart;
tests/test_placeholders.py compares them.

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
import math
from typing import TYPE_CHECKING

try:
    from .backends import _cpufast
except ImportError:  # built without a C compiler: the numpy sums below
    _cpufast = None

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

SOURCE_MAX = 100  # pixels a side: ThumbHash's limit, and plenty for either format
# An output offered as the source is used when its longer side has at least this many pixels
# (fewer would lose what the hashes' components hold); the smallest such one is taken.
SOURCE_MIN = 32
# Larger than this a side, an image is first reduced by a whole factor (cheap) before the box resize.
_REDUCE_ABOVE = 4 * SOURCE_MAX
BLURHASH_COMPONENTS = (4, 3)  # x, y
_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
# ThumbHash's AC coefficients below this (the channels in 0..1) are rounding noise, not detail:
# taken as zero (a quantisation step is 1/15 of the channel's scale; see _thumb_channel).
_NOISE = 1e-12


def source_image(image: Image.Image) -> Image.Image:
    """A PIL image (RGB or RGBA) scaled (box filter, aspect kept) to fit ``SOURCE_MAX`` x ``SOURCE_MAX``.

    ``image``: the thumbnail (or any already-decoded PIL image); an RGB/RGBA
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
    return image


def placeholder_source(image: Image.Image) -> np.ndarray:
    """``source_image`` as a uint8 (h, w, 3|4) array."""
    import numpy as np

    return np.asarray(source_image(image))


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
    return placeholders(source_image(source))


class _Source:
    """The pixels both encoders read: straight RGB/RGBA, 1 to ``SOURCE_MAX`` a side."""

    def __init__(self, pixels):
        if hasattr(pixels, "mode") and hasattr(pixels, "tobytes"):  # a PIL image
            if pixels.mode not in ("RGB", "RGBA"):
                raise ValueError(f"expected an RGB or RGBA image, not {pixels.mode}")
            (self.width, self.height), self.channels = pixels.size, len(pixels.mode)
            self.image, self.array = pixels, None
        else:
            import numpy as np

            a = np.asarray(pixels)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4):
                raise ValueError(f"expected a uint8 height x width x 3 or 4 array, not {a.dtype} {a.shape}")
            self.height, self.width, self.channels = a.shape
            self.image, self.array = None, a
        w, h = self.width, self.height
        if not (1 <= w <= SOURCE_MAX and 1 <= h <= SOURCE_MAX):
            raise ValueError(f"a placeholder's source is 1 to {SOURCE_MAX} pixels a side, not {w}x{h}")

    def raw(self) -> bytes:
        return self.image.tobytes() if self.image is not None else self.array.tobytes()

    def as_array(self) -> np.ndarray:
        import numpy as np

        if self.array is None:
            self.array = np.asarray(self.image)
        return self.array


class _Sums:
    """The cosine sums both formats quantise (lists of floats), from ``_cpufast`` or numpy."""

    def __init__(self, source: _Source, components: tuple[int, int] = BLURHASH_COMPONENTS, fast: bool = True):
        w, h = self.width, self.height = source.width, source.height
        self.components = components
        grids = [_luma_grid(limit, w, h) for limit in (7, 5)]  # opaque, with alpha
        if fast and _cpufast is not None:
            got = _cpufast.placeholder_sums(source.raw(), w, h, source.channels, *grids, components)
        else:
            got = _numpy_sums(source.as_array(), *grids, components)
        self.has_alpha, self.l, self.p, self.q, self.a, self.factors = got
        self.lx, self.ly = grids[1] if self.has_alpha else grids[0]


def _grid(limit: int, w: int, h: int) -> tuple[int, int]:
    """ThumbHash's luminance grid lx x ly: the longer side ``limit`` (7, or 5 with alpha), as the header stores it."""
    if w == h:
        return limit, limit
    n = _short_side(limit, w, h)
    return (limit, n) if w >= h else (n, limit)


def _luma_grid(limit: int, w: int, h: int) -> tuple[int, int]:
    """(nx, ny) of ThumbHash's luminance sums: ``_grid``, at least 3 x 3."""
    lx, ly = _grid(limit, w, h)
    return max(3, lx), max(3, ly)


def _numpy_sums(a: np.ndarray, luma: tuple[int, int], luma_alpha: tuple[int, int], components: tuple[int, int]):
    """``_cpufast.placeholder_sums`` with numpy (where the extension was not built)."""
    import numpy as np

    h, w = a.shape[:2]
    alpha = a[..., 3] / 255.0 if a.shape[2] == 4 else np.ones(a.shape[:2])
    alpha_sum = int(a[..., 3].sum(dtype=np.int64)) if a.shape[2] == 4 else 255 * w * h
    has_alpha = alpha_sum < 255 * w * h
    if has_alpha:
        # The colours (0..1) composited atop their alpha-weighted average (the average of what is seen),
        # in the reference encoder's order of operations (alpha / 255 * value).
        total = alpha_sum / 255.0
        weighted = (alpha / 255.0)[..., None] * a[..., :3]
        avg = weighted.reshape(-1, 3).sum(axis=0) / total if total > 0 else np.zeros(3)
        rgb = avg * (1.0 - alpha)[..., None] + weighted
        srgb8 = np.clip(np.floor(rgb * 255.0 + 0.5), 0, 255).astype(np.uint8)
    else:
        rgb, srgb8 = a[..., :3] / 255.0, a[..., :3]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    nx, ny = luma_alpha if has_alpha else luma

    def project(x, nx, ny, half):  # (ny, nx)
        return _cosines(h, ny, half) @ x @ _cosines(w, nx, half).T / (w * h)

    l = project((r + g + b) / 3.0, nx, ny, True).ravel().tolist()
    p = project((r + g) / 2.0 - b, 3, 3, True).ravel().tolist()
    q = project(r - g, 3, 3, True).ravel().tolist()
    alpha_sums = project(alpha, 5, 5, True).ravel().tolist() if has_alpha else None
    cx, cy = components
    lin = np.array(_SRGB_TO_LINEAR)[srgb8]  # (h, w, 3)
    fy, fx = _cosines(h, cy, False), _cosines(w, cx, False)
    # factors[j, c, i] = the sum over the pixels of basis(i, j) * linear colour c, / (w h)
    down = (fy @ lin.reshape(h, w * 3)).reshape(cy, w, 3).transpose(0, 2, 1)  # (cy, 3, w)
    factors = (down @ fx.T / (w * h)).ravel().tolist()  # (cy, 3, cx)
    return has_alpha, l, p, q, alpha_sums, factors


_COSINES: dict = {}


def _cosines(n: int, count: int, half: bool) -> np.ndarray:
    """(count, n): cos(pi k (i + 0.5) / n) (ThumbHash) or cos(pi k i / n) (BlurHash), with libm's cos as the C path."""
    import numpy as np

    key = (n, count, half)
    if key not in _COSINES:
        off = 0.5 if half else 0.0
        out = np.array([[math.cos(math.pi / n * float(k) * (i + off)) for i in range(n)] for k in range(count)])
        out.setflags(write=False)
        _COSINES[key] = out
    return _COSINES[key]


def placeholders(pixels) -> dict[str, str]:
    """``{"thumbhash": base64, "blurhash": str}`` of a straight-alpha RGB/RGBA PIL image or uint8 (h, w, 3|4) array, <= 100 a side."""
    sums = _Sums(_Source(pixels))
    return {"thumbhash": base64.b64encode(_thumbhash(sums)).decode("ascii"), "blurhash": _blurhash(sums)}


# ---- ThumbHash ----------------------------------------------------------------


def _thumb_channel(coeffs: list[float], nx: int, ny: int) -> tuple[float, list[float], float]:
    """(dc, ac in 0..1, scale): the coefficients (ny x nx, row order) with cx * ny < nx * (ny - cy), in row order of cy.

    AC coefficients below ``_NOISE`` are taken as 0: they are where the image
    has no such frequency (a flat channel, a symmetric one), and their sums of
    cosines are rounding noise, which would otherwise be scaled up (to 0..1
    where the whole channel is flat; to either side of 0.5, a nibble's
    rounding boundary, where it is not).
    """
    ac = [v if abs(v) >= _NOISE else 0.0
          for v in (coeffs[cy * nx + cx] for cy in range(ny) for cx in range(nx)
                    if cx * ny < nx * (ny - cy) and (cx > 0 or cy > 0))]
    scale = max(map(abs, ac), default=0.0)
    if scale > 0:
        ac = [0.5 + 0.5 / scale * v for v in ac]
    return coeffs[0], ac, scale


def _round(v: float) -> int:
    """Half up, as the reference encoder's Math.round (Python's round() goes to even)."""
    return math.floor(v + 0.5)


def _short_side(limit: int, w: int, h: int) -> int:
    """The luminance grid's shorter side: the one whose ratio limit / n is nearest the image's."""
    longer, shorter = max(w, h), min(w, h)
    exact = limit * shorter / longer
    candidates = {max(1, min(limit, math.floor(exact))), max(1, min(limit, math.ceil(exact)))}
    return min(candidates, key=lambda n: (abs(math.log(limit / n) - math.log(longer / shorter)), n))


def thumbhash_bytes(pixels) -> bytes:
    """The ThumbHash of a straight-alpha RGB/RGBA PIL image or uint8 (h, w, 3|4) array of at most 100 x 100."""
    return _thumbhash(_Sums(_Source(pixels)))


def _thumbhash(sums: _Sums) -> bytes:
    w, h, has_alpha = sums.width, sums.height, sums.has_alpha
    nx, ny = sums.lx, sums.ly
    # The grid's own lx / ly: the header stores the shorter side (the sums use at least 3 x 3).
    lx, ly = _grid(5 if has_alpha else 7, w, h)
    l_dc, l_ac, l_scale = _thumb_channel(sums.l, nx, ny)
    p_dc, p_ac, p_scale = _thumb_channel(sums.p, 3, 3)
    q_dc, q_ac, q_scale = _thumb_channel(sums.q, 3, 3)
    landscape = w > h
    header24 = (_round(63.0 * l_dc) | _round(31.5 + 31.5 * p_dc) << 6 | _round(31.5 + 31.5 * q_dc) << 12
                | _round(31.0 * l_scale) << 18 | (1 << 23 if has_alpha else 0))
    header16 = ((ly if landscape else lx) | _round(63.0 * p_scale) << 3 | _round(63.0 * q_scale) << 9
                | (1 << 15 if landscape else 0))
    out = bytearray([header24 & 255, header24 >> 8 & 255, header24 >> 16, header16 & 255, header16 >> 8])
    ac = l_ac + p_ac + q_ac
    if has_alpha:
        a_dc, a_ac, a_scale = _thumb_channel(sums.a, 5, 5)
        out.append(_round(15.0 * a_dc) | _round(15.0 * a_scale) << 4)
        ac += a_ac
    nibbles = [_round(15.0 * v) for v in ac] + ([0] if len(ac) % 2 else [])
    out.extend(nibbles[i] | nibbles[i + 1] << 4 for i in range(0, len(nibbles), 2))
    return bytes(out)


def thumbhash(pixels) -> str:
    """``thumbhash_bytes`` as base64 (how APIs carry it)."""
    return base64.b64encode(thumbhash_bytes(pixels)).decode("ascii")


# ---- BlurHash ---------------------------------------------------------------

# sRGB (0..255) to linear, with Python's (libm's) pow, as the C path.
_SRGB_TO_LINEAR = [s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4 for s in (v / 255.0 for v in range(256))]


def _linear_to_srgb(v: float) -> int:
    v = min(1.0, max(0.0, v))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[value // 83 ** (length - 1 - i) % 83] for i in range(length))


def blurhash(pixels, components: tuple[int, int] = BLURHASH_COMPONENTS) -> str:
    """The BlurHash (``components`` x, y: 1 to 9 each) of an RGB/RGBA PIL image or uint8 (h, w, 3|4) array of at most 100 x 100."""
    cx, cy = components
    if not (1 <= cx <= 9 and 1 <= cy <= 9):
        raise ValueError(f"BlurHash components are 1 to 9 each, not {cx} x {cy}")
    return _blurhash(_Sums(_Source(pixels), components))


def _blurhash(sums: _Sums) -> str:
    cx, cy = sums.components
    f = sums.factors  # [(j * 3 + c) * cx + i]
    # Normalised as the reference: 1 for the DC, 2 for every other component; row order of j, then i.
    comps = [[f[(j * 3 + c) * cx + i] * (1.0 if i == 0 and j == 0 else 2.0) for c in range(3)]
             for j in range(cy) for i in range(cx)]
    dc, ac = comps[0], comps[1:]
    out = _base83((cx - 1) + (cy - 1) * 9, 1)
    if ac:
        actual = max(abs(v) for comp in ac for v in comp)
        quantised = int(max(0, min(82, math.floor(actual * 166 - 0.5))))
        maximum = (quantised + 1) / 166
        out += _base83(quantised, 1)
    else:
        maximum = 1.0
        out += _base83(0, 1)
    out += _base83((_linear_to_srgb(dc[0]) << 16) + (_linear_to_srgb(dc[1]) << 8) + _linear_to_srgb(dc[2]), 4)
    for comp in ac:
        q = [min(18, max(0, math.floor(_sign(v / maximum) * math.sqrt(abs(v / maximum)) * 9 + 9.5))) for v in comp]
        out += _base83(q[0] * 19 * 19 + q[1] * 19 + q[2], 2)
    return out


def _sign(v: float) -> float:
    return 1.0 if v > 0 else -1.0 if v < 0 else 0.0
