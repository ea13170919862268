"""The cpu backend: the kernels' arithmetic with Pillow's C fast paths and a little C.

The pipeline hands it the decoded PIL image (``apply_image``).  The thumbnail
is Pillow's own Lanczos resampler behind its integer reduce
(``reducing_gap=THUMBNAIL_REDUCING_GAP``; the kernels reproduce its arithmetic
exactly); the blur (the old 3x3 kernel, direct Gaussian taps below sigma 1, the box
cascade of boxblur.py from sigma 1 on) runs in the optional C extension
``_cpufast`` when it was built, on the image's bytes, and otherwise through
Pillow and numpy with the same results; the placeholder is a nearest-neighbour resize.  numpy is
imported only off the hot path (it costs more start-up than some images
take).  Each operation's implementation is registered with the registry
(``ops.implement("cpu", ...)``) and gets the decoded image as a CpuFrame;
the array methods (``thumbnail``, ``blur``, ``halfsize``) wrap the same
functions, so the kernels' tests compare against exactly what the pipeline runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image, ImageFilter

from .. import ops
from ..imageio import pillow
from ..ops import Settings
from ..ops.blur import BLUR
from ..ops.low_quality import LOW_QUALITY, half_size
from ..ops.thumbnail import THUMBNAIL, THUMBNAIL_REDUCING_GAP, reduce_factors
from ..pixels import Pixels, Scratch, image_bytes
from . import Backend
from .boxblur import uses_boxes

CPU = "cpu"

if TYPE_CHECKING:
    import numpy as np

try:
    from . import _cpufast
except ImportError:  # built without a C compiler: the Pillow/numpy paths below
    _cpufast = None
else:
    # The C paths read a decoded image in place through its Arrow export,
    # which needs the image in one memory block.
    pillow.use_single_block()

# The default blur, [1 2 1] x [1 2 1] / 16, as Pillow's 3x3 filter: with
# these weights its float sum is exact, so it equals (sum + 8) >> 4.
_BOX121 = ImageFilter.Kernel((3, 3), [1, 2, 1, 2, 4, 2, 1, 2, 1], scale=16)


def to_image(img: np.ndarray, mode: str | None = None) -> Image.Image:
    mode = mode or ("RGBA" if img.shape[2] == 4 else "RGB")
    return Image.frombytes(mode, (img.shape[1], img.shape[0]), img.tobytes())


def as_array(pixels: Image.Image | Pixels) -> np.ndarray:
    import numpy as np

    return pixels.to_array() if isinstance(pixels, Pixels) else np.asarray(pixels)


def thumbnail_image(im: Image.Image, width: int, height: int) -> Image.Image | Pixels:
    """``im.resize((width, height), LANCZOS, reducing_gap=THUMBNAIL_REDUCING_GAP)``, bit for bit.

    For RGB on a CPU with SSE4.1, Pillow's integer reduce and Lanczos
    passes redone in C with Pillow's arithmetic (the reduce's sums with
    AVX2, the passes four lanes at a time), in one call without the GIL:
    about a third of Pillow's time.  Otherwise, and for RGBA (which Pillow
    premultiplies around both steps), Pillow's own resize.
    """
    if _cpufast is not None and im.mode == "RGB" and _cpufast.simd():
        w, h = im.size
        fx, fy = reduce_factors(w, h, width, height, THUMBNAIL_REDUCING_GAP)
        # What Image.resize does for a whole-image box: reduce it all, then
        # resample the box scaled down with it.
        box = (0 / fx, 0 / fy, w / fx, h / fy)
        raw = arrow_source(im)
        if raw is None:  # no Arrow export: Pillow's reduce and resampler
            src = im.reduce((fx, fy)) if fx > 1 or fy > 1 else im
            return src.resize((width, height), Image.Resampling.LANCZOS, box=box)
        data = _cpufast.lanczos(raw, None, w, h, width, height, box, (fx, fy))
        return Pixels(width, height, 3, data)
    return im.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=THUMBNAIL_REDUCING_GAP)


def arrow_source(im: Image.Image):
    """``im``'s Arrow export for the C paths (its pixels read in place), or None."""
    try:
        return im.__arrow_c_array__()
    except (AttributeError, ValueError):  # an older Pillow, or an image in several blocks
        return None


def c_source(im: Image.Image):
    """The pixels of ``im`` for the C paths: its Arrow export, else its bytes (a copy)."""
    raw = arrow_source(im)
    return image_bytes(im) if raw is None else raw


def _dest(scratch: Scratch | None, key: str, size: int):
    """Where a C path writes: a scratch buffer, else None (it makes new bytes)."""
    return scratch.take(key, size) if scratch is not None else None


def _written(dst, made):
    return made if dst is None else dst


def blur_raw(raw, width: int, height: int, channels: int, sigma: float | None,
             scratch: Scratch | None = None) -> Pixels:
    """The C blur of ``c_source(image)`` (``_cpufast`` must be there)."""
    dst = _dest(scratch, BLUR, width * height * channels)
    if sigma is None:
        made = _cpufast.blur121(raw, dst, width, height, channels)
    else:
        from .filters import gaussian_weights

        made = _cpufast.gaussian(raw, dst, width, height, channels, gaussian_weights(sigma))
    return Pixels(width, height, channels, _written(dst, made))


def boxes_raw(raw, width: int, height: int, channels: int, sigma: float,
              scratch: Scratch | None = None) -> Pixels:
    """The C box-cascade Gaussian (boxblur.py) of ``c_source(image)`` (``_cpufast`` must be there)."""
    from .boxblur import cascade_buffer

    dst = _dest(scratch, BLUR, width * height * channels)
    made = _cpufast.boxes(raw, dst, width, height, channels, cascade_buffer(sigma))
    return Pixels(width, height, channels, _written(dst, made))


def boxes_image(im: Image.Image, sigma: float, fast: bool = True) -> Image.Image | Pixels:
    """The box-cascade Gaussian of an RGB/RGBA image: the C path, else numpy (the same bytes)."""
    if fast and _cpufast is not None:
        return boxes_raw(c_source(im), im.width, im.height, len(im.mode), sigma)
    import numpy as np

    from .boxblur import blur_premultiplied

    alpha = im.mode == "RGBA"
    src = im.convert("RGBa") if alpha else im
    out = to_image(blur_premultiplied(np.asarray(src), sigma), src.mode)
    return out.convert("RGBA") if alpha else out


def boxes_array(img: np.ndarray, sigma: float, fast: bool = True) -> np.ndarray:
    """The box-cascade Gaussian of a uint8 (h, w, 3|4) straight-alpha array."""
    return as_array(boxes_image(to_image(img), sigma, fast))


def halfsize_raw(raw, width: int, height: int, channels: int, scratch: Scratch | None = None) -> Pixels:
    """The C placeholder of ``c_source(image)`` (``_cpufast`` must be there)."""
    ow, oh = half_size(width, height)
    dst = _dest(scratch, LOW_QUALITY, ow * oh * channels)
    made = _cpufast.halfsize(raw, dst, width, height, channels)
    return Pixels(ow, oh, channels, _written(dst, made))


def blur_image(im: Image.Image, sigma: float | None, fast: bool = True) -> Image.Image | Pixels:
    """The 3x3 kernel (``sigma`` None) or direct Gaussian taps of an RGB/RGBA image: raw pixels from the C path, else an image."""
    if fast and _cpufast is not None:
        return blur_raw(c_source(im), im.width, im.height, len(im.mode), sigma)
    import numpy as np

    alpha = im.mode == "RGBA"
    src = im.convert("RGBa") if alpha else im
    if sigma is None:
        out = _blur121(src)
    else:
        out = to_image(_gaussian(np.asarray(src), sigma), src.mode)
    return out.convert("RGBA") if alpha else out


def blur_array(img: np.ndarray, sigma: float | None, fast: bool = True) -> np.ndarray:
    """The blur of a uint8 (h, w, 3|4) straight-alpha array."""
    return as_array(blur_image(to_image(img), sigma, fast))


def halfsize_image(im: Image.Image) -> Image.Image:
    w, h = im.size
    ow, oh = half_size(w, h)
    if w >= 2 and h >= 2:
        # With the box exactly twice the output, Pillow's nearest neighbour
        # takes source pixel 2x+1, the kernel's choice.
        return im.resize((ow, oh), Image.Resampling.NEAREST, box=(0, 0, 2 * ow, 2 * oh))
    import numpy as np

    a = np.asarray(im)
    return to_image(np.ascontiguousarray(a[min(1, h - 1)::2][:oh, min(1, w - 1)::2][:, :ow]), im.mode)


class CpuFrame:
    """One decoded image as the cpu implementations of the operations share it.

    ``image`` is the PIL image (RGB or RGBA, straight alpha), ``scratch`` the
    calling thread's buffers (or None).  ``raw()`` and ``raw_in_place()`` are
    its pixels for the C paths, taken at most once per image.
    """

    __slots__ = ("image", "width", "height", "channels", "scratch", "_raw")

    def __init__(self, im: Image.Image, scratch: Scratch | None):
        self.image = im
        self.width, self.height = im.size
        self.channels = len(im.mode)
        self.scratch = scratch
        self._raw = None

    def raw(self):
        """The pixels for a C path that reads all of them: the Arrow export, else one copy."""
        if self._raw is None:
            self._raw = c_source(self.image)
        return self._raw

    def raw_in_place(self):
        """The pixels only where they need no copy (or a copy already made); else None."""
        if self._raw is None:
            self._raw = arrow_source(self.image)
        return self._raw


@ops.implement(CPU, THUMBNAIL)
def _thumbnail(frame: CpuFrame, settings: Settings):
    # One thumbnail per width (outputs() leaves out the widths it skips), each
    # resampled from the full image, as Pillow's resize of the source is the
    # quality bar every width must meet.
    w, h = frame.width, frame.height
    made, _skipped = ops.get(THUMBNAIL).outputs(settings, w, h)
    return {key: frame.image if (tw, th) == (w, h) else thumbnail_image(frame.image, tw, th)
            for key, (tw, th) in made.items()}


@ops.implement(CPU, BLUR)
def _blur(frame: CpuFrame, settings: Settings):
    sigma = ops.get(BLUR).sigma(settings, frame.width, frame.height)
    if _cpufast is None:
        return any_blur_image(frame.image, sigma, fast=False)
    if uses_boxes(sigma):
        return boxes_raw(frame.raw(), frame.width, frame.height, frame.channels, sigma, frame.scratch)
    return blur_raw(frame.raw(), frame.width, frame.height, frame.channels, sigma, frame.scratch)


def any_blur_image(im: Image.Image, sigma: float | None, fast: bool = True) -> Image.Image | Pixels:
    """What the blur operation runs for ``sigma``: the box cascade from ``MIN_BOX_SIGMA`` on, else ``blur_image``."""
    return boxes_image(im, sigma, fast) if uses_boxes(sigma) else blur_image(im, sigma, fast)


@ops.implement(CPU, LOW_QUALITY)
def _low_quality(frame: CpuFrame, settings: Settings):
    # Not a copy of the whole image for a quarter of it.
    raw = frame.raw_in_place() if _cpufast is not None else None
    if raw is not None:
        return halfsize_raw(raw, frame.width, frame.height, frame.channels, frame.scratch)
    return halfsize_image(frame.image)


class CpuBackend(Backend):
    name = CPU

    def apply_image(self, im: Image.Image, settings: Settings,
                    scratch: Scratch | None = None) -> dict[str, Image.Image | Pixels]:
        frame = CpuFrame(im, scratch)
        out: dict = {}
        for op in settings.ops:
            made = self.implementation(op)(frame, settings)
            # An operation with several outputs (the thumbnail's widths) gives them by key.
            out.update(made if isinstance(made, dict) else {op: made})
        return out

    def apply(self, img: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
        return {op: as_array(out) for op, out in self.apply_image(to_image(img), settings).items()}

    # The operations one at a time on arrays: what the kernels' tests compare with.

    def thumbnail(self, img: np.ndarray, width: int, height: int) -> np.ndarray:
        return as_array(thumbnail_image(to_image(img), width, height))

    def blur(self, img: np.ndarray, sigma: float | None) -> np.ndarray:
        """The blur operation's pixels for ``sigma`` (None: the 3x3 kernel; the box cascade from sigma 1)."""
        return as_array(any_blur_image(to_image(img), sigma))

    def halfsize(self, img: np.ndarray) -> np.ndarray:
        return as_array(halfsize_image(to_image(img)))


def premultiply(img: np.ndarray) -> np.ndarray:
    """Straight RGBA -> premultiplied, rounding as Pillow's RGBA -> RGBa."""
    import numpy as np

    return np.asarray(to_image(img).convert("RGBa"))


def unpremultiply(img: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA -> straight, as Pillow's RGBa -> RGBA."""
    import numpy as np

    return np.asarray(to_image(img, "RGBa").convert("RGBA"))


def _blur121(im: Image.Image) -> Image.Image:
    import numpy as np

    w, h = im.size
    if h < 3 or w < 3:
        return to_image(_blur121_numpy(np.asarray(im)), im.mode)
    out = im.filter(_BOX121)
    # Pillow copies the 1-pixel border unfiltered, the kernels clamp to the
    # edge there: a two-line strip blurred with clamping gives its outer line
    # exactly, so only the border is recomputed.
    for box, pick, at in (
        ((0, 0, w, 2), np.s_[:1], (0, 0)),
        ((0, h - 2, w, h), np.s_[1:], (0, h - 1)),
        ((0, 0, 2, h), np.s_[:, :1], (0, 0)),
        ((w - 2, 0, w, h), np.s_[:, 1:], (w - 1, 0)),
    ):
        strip = _blur121_numpy(np.asarray(im.crop(box)))[pick]
        out.paste(to_image(strip, im.mode), at)
    return out


def _edge_padded(img: np.ndarray, r: int, axis: int) -> np.ndarray:
    import numpy as np

    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    return np.pad(img, pad, mode="edge")


def _blur121_numpy(img: np.ndarray) -> np.ndarray:
    """[1 2 1] both ways in integers, clamp-to-edge, (sum + 8) >> 4."""
    import numpy as np

    a = _edge_padded(img.astype(np.uint16), 1, 1)
    horiz = a[:, :-2] + 2 * a[:, 1:-1] + a[:, 2:]
    b = _edge_padded(horiz, 1, 0)
    total = b[:-2] + 2 * b[1:-1] + b[2:]
    return ((total + 8) >> 4).astype(np.uint8)


def _convolve_axis(img: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """float32 sum of taps x clamp-to-edge neighbours along ``axis``."""
    import numpy as np

    r = len(taps) // 2
    n = img.shape[axis]
    padded = _edge_padded(img, r, axis)
    out = np.zeros(img.shape, np.float32)
    for k, t in enumerate(taps):
        window = padded[(slice(None),) * axis + (slice(k, k + n),)]
        out += window * t
    return out


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    import numpy as np

    from .filters import gaussian_weights

    taps = gaussian_weights(sigma)
    horiz = _convolve_axis(img.astype(np.float32), taps, 1)
    total = _convolve_axis(horiz, taps, 0)
    return np.clip(np.floor(total + np.float32(0.5)), 0, 255).astype(np.uint8)
