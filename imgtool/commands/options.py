"""The processing options shared by process, watch and queue, and how they become Settings."""

from __future__ import annotations


import click

from ..backends import BACKENDS
from ..errors import InvalidJob
from ..ops import (
    BLUR,
    DEFAULT_EFFORT,
    DEFAULT_MAX_PIXELS,
    DEFAULT_QUALITY,
    DEFAULT_THUMB_WIDTH,
    LOW_QUALITY,
    MAX_BLUR_SIGMA,
    MAX_THUMB_WIDTH,
    OPERATIONS,
    THUMBNAIL,
    Settings,
)


class OpsList(click.ParamType):
    """A comma-separated list of operation names, e.g. ``thumbnail,blur``."""

    name = "OPS"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        names = tuple(v.strip() for v in str(value).split(",") if v.strip())
        if not names:
            self.fail("give at least one operation", param, ctx)
        for n in names:
            if n not in OPERATIONS:
                self.fail(f"unknown operation {n!r} (choose from {', '.join(OPERATIONS)})", param, ctx)
        if len(set(names)) != len(names):
            self.fail("an operation is named twice", param, ctx)
        return names

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        head, _, last = incomplete.rpartition(",")
        prefix = head + "," if head else ""
        return [CompletionItem(prefix + op) for op in OPERATIONS if op.startswith(last)]


def _positive_sigma(ctx, param, value):
    if value is not None and not (0 < value <= MAX_BLUR_SIGMA):
        raise click.BadParameter(f"must be > 0 and <= {MAX_BLUR_SIGMA:g}")
    return value


def processing_options(f):
    """Add every option that decides what the outputs look like, plus the backend."""
    opts = [
        click.option("--ops", type=OpsList(), default=",".join(OPERATIONS), show_default=True,
                     help="Operations to run, comma-separated."),
        click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                     envvar="IMGTOOL_BACKEND",
                     help="Where the image operations run: cuda when a GPU answers (auto), or force one."),
        click.option("--thumb-width", type=click.IntRange(1, MAX_THUMB_WIDTH), default=DEFAULT_THUMB_WIDTH,
                     show_default=True, help="Thumbnail width in pixels (never upscaled)."),
        click.option("--blur-sigma", type=float, default=None, callback=_positive_sigma,
                     help=f"Gaussian sigma for blur (radius ceil(3*sigma), up to {MAX_BLUR_SIGMA:g}); "
                          "default: the 3x3 [1 2 1] kernel."),
        click.option("--thumb-quality", type=click.IntRange(0, 100), default=DEFAULT_QUALITY[THUMBNAIL],
                     show_default=True, help="WebP quality of the thumbnail."),
        click.option("--blur-quality", type=click.IntRange(0, 100), default=DEFAULT_QUALITY[BLUR],
                     show_default=True, help="WebP quality of the blurred image."),
        click.option("--lq-quality", type=click.IntRange(0, 100), default=DEFAULT_QUALITY[LOW_QUALITY],
                     show_default=True, help="WebP quality of the low-quality placeholder."),
        click.option("--effort", type=click.IntRange(0, 6), default=DEFAULT_EFFORT, show_default=True,
                     help="WebP encoder effort (libwebp method): 0 fastest, 6 smallest."),
        click.option("--lossless", is_flag=True, help="Write lossless WebP (outputs hold the exact computed pixels)."),
        click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Reject inputs whose header claims more pixels than this."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


PROCESSING_KEYS = (
    "ops", "thumb_width", "blur_sigma", "thumb_quality", "blur_quality",
    "lq_quality", "effort", "lossless", "max_pixels",
)


def settings_from_options(kw: dict) -> Settings:
    """Pop the processing options out of a command's keyword arguments."""
    values = {k: kw.pop(k) for k in PROCESSING_KEYS}
    try:
        return Settings(
            ops=values["ops"],
            thumb_width=values["thumb_width"],
            blur_sigma=values["blur_sigma"],
            quality={THUMBNAIL: values["thumb_quality"], BLUR: values["blur_quality"],
                     LOW_QUALITY: values["lq_quality"]},
            effort=values["effort"],
            lossless=values["lossless"],
            max_pixels=values["max_pixels"],
        )
    except InvalidJob as exc:
        raise click.UsageError(exc.message) from exc


def jobs_option(f):
    return click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None,
                        help="Images processed at once [default: the number of CPU cores].")(f)


def _set_verbosity(ctx, param, value):
    if not value:
        return
    obj = ctx.find_root().ensure_object(dict)
    obj["verbose"] = -1 if param.name == "quiet" else max(obj.get("verbose", 0), 0) + value
    from ..cli import setup_logging

    setup_logging(obj["verbose"])


def verbosity_options(f):
    """-q/-v after the command name too (``imgtool process DIR -q``), as before it."""
    f = click.option("-v", "--verbose", count=True, expose_value=False, callback=_set_verbosity,
                     help="More output; tracebacks for errors.")(f)
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity,
                        help="Only errors and the summary.")(f)
