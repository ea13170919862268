"""blur: the full-size image blurred; the old worker's 3x3 [1 2 1] kernel, or a true Gaussian of sigma S."""

from __future__ import annotations

import math

from .base import Operation, PositiveFloatParam, register

BLUR = "blur"
MAX_BLUR_SIGMA = 50.0
# The old worker's 3x3 kernel [1 2 1] x [1 2 1] / 16: what a sigma of None means.
BOX121 = None

SIGMA = PositiveFloatParam(
    key="sigma", setting="blur_sigma", label="blur sigma", flag="--blur-sigma",
    help=f"Gaussian sigma for blur (radius ceil(3*sigma), up to {MAX_BLUR_SIGMA:g}); "
         "default: the 3x3 [1 2 1] kernel.",
    default=BOX121, hi=MAX_BLUR_SIGMA)


class Blur(Operation):
    name = BLUR
    default_quality = 80
    quality_flag = "--blur-quality"
    quality_help = "WebP quality of the blurred image."
    params = (SIGMA,)

    def output_size(self, width: int, height: int, settings) -> tuple[int, int]:
        return width, height


def blur_radius(sigma: float | None) -> int:
    """The Gaussian's radius: 1 for the default 3x3 kernel, else ceil(3 sigma)."""
    return 1 if sigma is None else max(1, math.ceil(3 * sigma))


OPERATION = register(Blur())
