"""thumbnail: one or more fixed widths (256 by default), aspect kept, never upscaled; Lanczos-3 behind an integer reduce."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidJob
from .base import Operation, Param, check_int, register

THUMBNAIL = "thumbnail"
DEFAULT_THUMB_WIDTH = 256
MIN_THUMB_WIDTH = 1
MAX_THUMB_WIDTH = 8192
# A responsive-image set is a handful of widths; each costs a resample of the
# full image, so a job cannot ask for an unbounded number of them.
MAX_THUMB_WIDTHS = 8
# The thumbnail is Pillow's resize(..., LANCZOS, reducing_gap=3.0): an integer
# box reduce by int(in / out / 3) per axis first, then Lanczos-3 over the
# reduced image with a fractional box (about 3x cheaper, >= 44 dB against a
# plain Lanczos on photos and a zone plate).  Both backends use it.
THUMBNAIL_REDUCING_GAP = 3.0


def check_widths(name: str, value) -> int | tuple[int, ...]:
    """One width (an int) or several (a list: a tuple of 2 or more), each 1..8192, none twice; else InvalidJob."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise InvalidJob(f"{name} is an empty list")
        if len(value) > MAX_THUMB_WIDTHS:
            raise InvalidJob(f"{name} is a list of {len(value)} widths, over the limit of {MAX_THUMB_WIDTHS}")
        widths = tuple(check_int(name, v, MIN_THUMB_WIDTH, MAX_THUMB_WIDTH) for v in value)
        twice = sorted({w for w in widths if widths.count(w) > 1})
        if twice:
            raise InvalidJob(f"{name} {twice[0]} is given twice")
        return widths[0] if len(widths) == 1 else widths
    return check_int(name, value, MIN_THUMB_WIDTH, MAX_THUMB_WIDTH)


def widths_of(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,)


@dataclass(frozen=True)
class WidthsParam(Param):
    """The thumbnail's width: an integer, or a list of them (a responsive-image set)."""

    def check(self, name: str, value):
        return check_widths(name, value)

    def click_kwargs(self) -> dict:
        import click

        class Widths(click.ParamType):
            name = "W[,W...]"

            def convert(self, value, param, ctx):
                if not isinstance(value, str):
                    return value
                parts = [p.strip() for p in value.split(",")]
                try:
                    numbers = [int(p) for p in parts]
                except ValueError:
                    self.fail(f"{value!r} is not a width or a comma-separated list of widths", param, ctx)
                try:
                    return check_widths("width", numbers)
                except InvalidJob as exc:
                    self.fail(exc.message.removeprefix("width "), param, ctx)

        return {"type": Widths(), "default": str(self.default), "show_default": True, "metavar": "W[,W...]",
                "help": self.help}


WIDTH = WidthsParam(
    key="width", setting="thumb_width", label="thumbnail width", flag="--thumb-width",
    help=f"Thumbnail width in pixels, or several comma-separated (256,640,1280: one thumbnail each, "
         f"up to {MAX_THUMB_WIDTHS}); never upscaled.",
    default=DEFAULT_THUMB_WIDTH)


def scaled(width: int, height: int, target: int) -> tuple[int, int]:
    """``target`` wide, ``round(h * target / w)`` (at least 1) high; an input no wider keeps its size."""
    if width <= target:
        return width, height
    return target, max(1, round(height * target / width))


class Thumbnail(Operation):
    name = THUMBNAIL
    default_quality = 80
    quality_flag = "--thumb-quality"
    quality_help = "WebP quality of the thumbnail."
    params = (WIDTH,)
    placeholder_source = True

    def widths(self, settings) -> tuple[int, ...]:
        return widths_of(WIDTH.of(settings))

    def output_size(self, width: int, height: int, settings) -> tuple[int, int]:
        """The first thumbnail's size: the first width, aspect kept; an input no wider keeps its size."""
        return scaled(width, height, self.widths(settings)[0])

    def output_keys(self, settings) -> tuple[str, ...]:
        """``thumbnail`` for the first width, ``thumbnail-<W>`` for each further one."""
        first, *rest = self.widths(settings)
        return (self.name, *(f"{self.name}-{w}" for w in rest))

    def outputs(self, settings, width: int, height: int):
        """The first width as ``output_size``; a further width above the image's is skipped (never upscaled)."""
        made, skipped = {}, {}
        for key, target in zip(self.output_keys(settings), self.widths(settings)):
            if key != self.name and target > width:
                skipped[key] = f"{target} is wider than the image ({width} pixels)"
            else:
                made[key] = scaled(width, height, target)
        return made, skipped

    def is_output_key(self, key: str) -> bool:
        if key == self.name:
            return True
        head, dash, number = key.rpartition("-")
        return (head == self.name and number.isascii() and number.isdigit() and number[0] != "0"
                and int(number) <= MAX_THUMB_WIDTH)

    def fingerprint(self, settings, key: str | None = None) -> str:
        # Each thumbnail's own width only: adding a width to the set leaves the others up to date.
        keys = self.output_keys(settings)
        width = dict(zip(keys, self.widths(settings))).get(key or self.name, self.widths(settings)[0])
        return self._fingerprint(settings, [f"width={width!r}"])


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
