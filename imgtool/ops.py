"""The operation registry: names, parameters and their limits, output sizes and names."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Mapping

from .errors import InvalidJob

THUMBNAIL = "thumbnail"
BLUR = "blur"
LOW_QUALITY = "low-quality"
OPERATIONS = (THUMBNAIL, BLUR, LOW_QUALITY)

DEFAULT_QUALITY = {THUMBNAIL: 80, BLUR: 80, LOW_QUALITY: 30}
DEFAULT_THUMB_WIDTH = 256
MAX_THUMB_WIDTH = 8192
# The thumbnail is Pillow's resize(..., LANCZOS, reducing_gap=3.0): an integer
# box reduce by int(in / out / 3) per axis first, then Lanczos-3 over the
# reduced image with a fractional box (about 3x cheaper, >= 44 dB against a
# plain Lanczos on photos and a zone plate).  Both backends use it.
THUMBNAIL_REDUCING_GAP = 3.0
MAX_BLUR_SIGMA = 50.0
DEFAULT_EFFORT = 4
DEFAULT_MAX_PIXELS = 120_000_000

# The old worker's 3x3 kernel [1 2 1] x [1 2 1] / 16.
BOX121 = None


@dataclass(frozen=True)
class Settings:
    """Everything that decides what an image's outputs look like."""

    ops: tuple[str, ...] = OPERATIONS
    thumb_width: int = DEFAULT_THUMB_WIDTH
    blur_sigma: float | None = BOX121
    quality: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_QUALITY))
    effort: int = DEFAULT_EFFORT
    lossless: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        validate_settings(self)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def with_job_options(self, options: Mapping | None) -> "Settings":
        """Apply a queue job's ``options`` object (validated; raises InvalidJob)."""
        if options is None:
            return self
        if not isinstance(options, Mapping):
            raise InvalidJob("options must be an object")
        changes: dict = {}
        quality = dict(self.quality)
        for op, params in options.items():
            if op not in OPERATIONS:
                raise InvalidJob(f"options: unknown operation {op!r}")
            if not isinstance(params, Mapping):
                raise InvalidJob(f"options.{op} must be an object")
            allowed = {"quality"} | ({"width"} if op == THUMBNAIL else set()) | (
                {"sigma"} if op == BLUR else set()
            )
            for key, value in params.items():
                if key not in allowed:
                    raise InvalidJob(f"options.{op}: unknown parameter {key!r}")
                if key == "quality":
                    quality[op] = _int_param(f"options.{op}.quality", value, 0, 100)
                elif key == "width":
                    changes["thumb_width"] = _int_param(
                        "options.thumbnail.width", value, 1, MAX_THUMB_WIDTH
                    )
                elif key == "sigma":
                    changes["blur_sigma"] = _sigma_param("options.blur.sigma", value)
        changes["quality"] = quality
        return self.replace(**changes)


def _int_param(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{name} must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidJob(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _sigma_param(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJob(f"{name} must be a number, not {type(value).__name__}")
    if not (0 < value <= MAX_BLUR_SIGMA) or math.isnan(value):
        raise InvalidJob(f"{name} must be > 0 and <= {MAX_BLUR_SIGMA:g}, not {value}")
    return float(value)


def validate_settings(s: Settings) -> None:
    """Raise InvalidJob (a ValueError-like permanent error) for impossible settings."""
    if not s.ops:
        raise InvalidJob("no operations given")
    for op in s.ops:
        if op not in OPERATIONS:
            raise InvalidJob(f"unknown operation {op!r} (choose from {', '.join(OPERATIONS)})")
    if len(set(s.ops)) != len(s.ops):
        raise InvalidJob("an operation is named twice")
    _int_param("thumbnail width", s.thumb_width, 1, MAX_THUMB_WIDTH)
    if s.blur_sigma is not None:
        _sigma_param("blur sigma", s.blur_sigma)
    for op, q in s.quality.items():
        if op not in OPERATIONS:
            raise InvalidJob(f"quality for unknown operation {op!r}")
        _int_param(f"{op} quality", q, 0, 100)
    _int_param("effort", s.effort, 0, 6)
    _int_param("max pixels", s.max_pixels, 1, 2**40)


def output_size(op: str, width: int, height: int, settings: Settings) -> tuple[int, int]:
    """The (width, height) of ``op``'s output for a width x height input."""
    if op == THUMBNAIL:
        if width <= settings.thumb_width:
            return width, height
        return settings.thumb_width, max(1, round(height * settings.thumb_width / width))
    if op == BLUR:
        return width, height
    if op == LOW_QUALITY:
        return max(1, width // 2), max(1, height // 2)
    raise InvalidJob(f"unknown operation {op!r}")


def blur_radius(sigma: float | None) -> int:
    """The Gaussian's radius: 1 for the default 3x3 kernel, else ceil(3 sigma)."""
    return 1 if sigma is None else max(1, math.ceil(3 * sigma))


def job_id_for(path: str | os.PathLike) -> str:
    """The input's file name without its extension (the upload server's jobId)."""
    name = os.path.basename(os.fspath(path))
    stem, _ext = os.path.splitext(name)
    return stem or name


def output_name(job_id: str, op: str) -> str:
    return f"{job_id}_{op}.webp"


def is_output_name(name: str) -> bool:
    """True for names imgtool itself writes (``<jobId>_<operation>.webp``)."""
    return name.endswith(".webp") and any(name.endswith(f"_{op}.webp") for op in OPERATIONS)


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
