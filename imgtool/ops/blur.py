"""blur: the full-size image blurred; a Gaussian of sigma auto (1.5% of the shorter side), S, or the old 3x3 kernel."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidJob
from .base import Operation, Param, register

BLUR = "blur"
MAX_BLUR_SIGMA = 50.0
#: ``--blur-sigma auto``: the default; a blur that looks the same at every resolution.
AUTO = "auto"
#: ``--blur-sigma 3x3``: the old worker's kernel [1 2 1] x [1 2 1] / 16, invisible on a camera photo.
OLD_3X3 = "3x3"
# What a backend gets for the 3x3 kernel in place of a sigma.
BOX121 = None
AUTO_FRACTION = 0.015  # of the shorter side
MIN_AUTO_SIGMA = 1.0


def auto_sigma(width: int, height: int) -> float:
    """``--blur-sigma auto``: 1.5% of the shorter side, at least 1 (45.36 on 4032 x 3024), at most 50."""
    return min(MAX_BLUR_SIGMA, max(MIN_AUTO_SIGMA, AUTO_FRACTION * min(width, height)))


def check_sigma(name: str, value) -> str | float:
    """``"auto"``, ``"3x3"`` or a number S with 0 < S <= 50 (as a float); InvalidJob naming ``name`` else."""
    if isinstance(value, str):
        if value in (AUTO, OLD_3X3):
            return value
        raise InvalidJob(f"{name} must be {AUTO!r}, {OLD_3X3!r} or a number, not {value[:40]!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJob(f"{name} must be {AUTO!r}, {OLD_3X3!r} or a number, not {type(value).__name__}")
    if math.isnan(value) or not 0 < value <= MAX_BLUR_SIGMA:
        raise InvalidJob(f"{name} must be > 0 and <= {MAX_BLUR_SIGMA:g}, not {value}")
    return float(value)


def parse_sigma(text: str) -> str | float:
    """The command line's ``--blur-sigma`` text as ``check_sigma`` takes it (a number stays a number)."""
    text = text.strip()
    if text in (AUTO, OLD_3X3):
        return text
    try:
        return float(text)
    except ValueError:
        return text  # check_sigma says what is wrong with it


@dataclass(frozen=True)
class SigmaParam(Param):
    """The blur's sigma: ``"auto"``, ``"3x3"`` or a number in (0, 50]."""

    def check(self, name: str, value):
        return check_sigma(name, value)

    def check_setting(self, value):
        # Settings(blur_sigma=None) meant the 3x3 kernel before "3x3" had a name.
        return OLD_3X3 if value is None else check_sigma(self.label, value)

    def click_kwargs(self) -> dict:
        import click

        class Sigma(click.ParamType):
            name = "auto|3x3|S"

            def convert(self, value, param, ctx):
                if not isinstance(value, str):
                    return value
                try:
                    return check_sigma("sigma", parse_sigma(value))
                except InvalidJob as exc:
                    self.fail(exc.message.removeprefix("sigma "), param, ctx)

            def shell_complete(self, ctx, param, incomplete):
                from click.shell_completion import CompletionItem

                return [CompletionItem(c) for c in (AUTO, OLD_3X3) if c.startswith(incomplete)]

        return {"type": Sigma(), "default": self.default, "show_default": True, "metavar": "auto|3x3|S",
                "help": self.help}


SIGMA = SigmaParam(
    key="sigma", setting="blur_sigma", label="blur sigma", flag="--blur-sigma",
    help=f"Blur: 'auto' (a Gaussian of sigma 1.5% of the shorter side, at least 1), a Gaussian of sigma S "
         f"(up to {MAX_BLUR_SIGMA:g}), or '3x3' (the old [1 2 1] kernel, invisible on photos).",
    default=AUTO)


def effective_sigma(setting: str | float, width: int, height: int) -> float | None:
    """What a backend blurs a width x height image with: a sigma, or BOX121 (None) for the 3x3 kernel."""
    if setting == OLD_3X3:
        return BOX121
    if setting == AUTO:
        return auto_sigma(width, height)
    return float(setting)


class Blur(Operation):
    name = BLUR
    default_quality = 80
    quality_flag = "--blur-quality"
    quality_help = "WebP quality of the blurred image."
    params = (SIGMA,)

    def output_size(self, width: int, height: int, settings) -> tuple[int, int]:
        return width, height

    def sigma(self, settings, width: int, height: int) -> float | None:
        """The sigma of this image's blur (None: the 3x3 kernel)."""
        return effective_sigma(SIGMA.of(settings), width, height)


def blur_radius(sigma: float | None) -> int:
    """The Gaussian's radius: 1 for the 3x3 kernel, else ceil(3 sigma)."""
    return 1 if sigma is None else max(1, math.ceil(3 * sigma))


OPERATION = register(Blur())
