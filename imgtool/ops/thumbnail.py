"""thumbnail: a fixed width (256 by default), aspect kept, never upscaled; Lanczos-3 behind an integer reduce."""

from __future__ import annotations

from .base import IntParam, Operation, register

THUMBNAIL = "thumbnail"
DEFAULT_THUMB_WIDTH = 256
MIN_THUMB_WIDTH = 1
MAX_THUMB_WIDTH = 8192
# The thumbnail is Pillow's resize(..., LANCZOS, reducing_gap=3.0): an integer
# box reduce by int(in / out / 3) per axis first, then Lanczos-3 over the
# reduced image with a fractional box (about 3x cheaper, >= 44 dB against a
# plain Lanczos on photos and a zone plate).  Both backends use it.
THUMBNAIL_REDUCING_GAP = 3.0

WIDTH = IntParam(key="width", setting="thumb_width", label="thumbnail width", flag="--thumb-width",
                 help="Thumbnail width in pixels (never upscaled).", default=DEFAULT_THUMB_WIDTH,
                 lo=MIN_THUMB_WIDTH, hi=MAX_THUMB_WIDTH)


class Thumbnail(Operation):
    name = THUMBNAIL
    default_quality = 80
    quality_flag = "--thumb-quality"
    quality_help = "WebP quality of the thumbnail."
    params = (WIDTH,)

    def output_size(self, width: int, height: int, settings) -> tuple[int, int]:
        """``width`` (the setting) wide, ``round(h * width / w)`` (at least 1) high; an input no wider keeps its size."""
        target = WIDTH.of(settings)
        if width <= target:
            return width, height
        return target, max(1, round(height * target / width))


def reduce_factors(
    in_w: int, in_h: int, out_w: int, out_h: int, gap: float = THUMBNAIL_REDUCING_GAP
) -> tuple[int, int]:
    """``Image.resize(..., reducing_gap=gap)``'s reduce factors: ``int(in / out / gap) or 1`` per axis.

    ``(1, 1)`` means no reduce step.  The expression is Pillow's, in the same
    order and in double precision.
    """
    return int(in_w / out_w / gap) or 1, int(in_h / out_h / gap) or 1


def reduced_size(in_w: int, in_h: int, fx: int, fy: int) -> tuple[int, int]:
    """``Image.reduce``'s output size: rounded up (a last, partial block on each axis)."""
    return (in_w - 1) // fx + 1, (in_h - 1) // fy + 1


OPERATION = register(Thumbnail())
