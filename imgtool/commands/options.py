"""The processing options of process, watch and queue, made from the operation registry, and Settings from them.

``processing_options`` adds one option per setting (``--ops``, each
operation's parameters and quality, ``--format``, ``--avif-speed``,
``--effort``, ``--lossless``, ``--max-pixels``) plus ``--backend``, each validated by click while parsing,
and hands the command a ``settings`` (a Settings) and a ``backend`` (a name)
instead of the separate values.  An operation added to the registry gets its
options here without an edit.
"""

from __future__ import annotations

import functools

import click

from .. import ops
from ..backends import BACKENDS
from ..errors import InvalidJob
from ..ops import (
    DEFAULT_AVIF_SPEED,
    DEFAULT_EFFORT,
    DEFAULT_FORMAT,
    DEFAULT_MAX_PIXELS,
    FORMATS,
    MAX_AVIF_SPEED,
    MAX_EFFORT,
    MAX_MAX_PIXELS,
    MAX_QUALITY,
    MIN_AVIF_SPEED,
    MIN_EFFORT,
    MIN_MAX_PIXELS,
    MIN_QUALITY,
    Settings,
)

#: The most images processed at once that -j and -w accept.
MAX_JOBS = 256


class OpsList(click.ParamType):
    """A comma-separated list of operation names, e.g. ``thumbnail,blur``."""

    name = "OPS"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        names = tuple(v.strip() for v in str(value).split(",") if v.strip())
        if not names:
            self.fail("give at least one operation", param, ctx)
        known = ops.names()
        for n in names:
            if n not in known:
                self.fail(f"unknown operation {n!r} (choose from {', '.join(known)})", param, ctx)
        if len(set(names)) != len(names):
            self.fail("an operation is named twice", param, ctx)
        return names

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        head, _, last = incomplete.rpartition(",")
        prefix = head + "," if head else ""
        return [CompletionItem(prefix + op) for op in ops.names() if op.startswith(last)]


def _quality_name(op: ops.Operation) -> str:
    return op.quality_flag.lstrip("-").replace("-", "_")


def processing_options(f):
    """Add every option that decides what the outputs look like, plus the backend.

    The command is called with ``settings`` (built here, once, from the
    parsed values) and ``backend`` in place of those options.
    """
    operations = ops.operations()
    opts = [
        click.option("--ops", "ops", type=OpsList(), default=",".join(op.name for op in operations),
                     show_default=True, help="Operations to run, comma-separated."),
        click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                     envvar="IMGTOOL_BACKEND",
                     help="Where the image operations run: cuda when a GPU answers (auto), or force one."),
    ]
    params = [p for op in operations for p in op.params]
    opts += [click.option(p.flag, p.setting, **p.click_kwargs()) for p in params]
    rated = [op for op in operations if op.quality_flag]
    opts += [click.option(op.quality_flag, _quality_name(op), type=click.IntRange(MIN_QUALITY, MAX_QUALITY),
                          default=op.default_quality, show_default=True, help=op.quality_help)
             for op in rated]
    opts += [
        click.option("--format", "output_format", type=click.Choice(FORMATS), default=DEFAULT_FORMAT,
                     show_default=True, help="Output format: <jobId>_<operation>.webp or .avif (lossy only; "
                     "the same quality numbers, mapped to AVIF's at equal SSIM)."),
        click.option("--avif-speed", type=click.IntRange(MIN_AVIF_SPEED, MAX_AVIF_SPEED),
                     default=DEFAULT_AVIF_SPEED, show_default=True,
                     help="AVIF encoder speed (libavif): 0 slowest and smallest, 10 fastest."),
        click.option("--effort", type=click.IntRange(MIN_EFFORT, MAX_EFFORT), default=DEFAULT_EFFORT,
                     show_default=True, help="WebP encoder effort (libwebp method): 0 fastest, 6 smallest."),
        click.option("--lossless", is_flag=True, help="Write lossless WebP (outputs hold the exact computed pixels)."),
        click.option("--max-pixels", type=click.IntRange(MIN_MAX_PIXELS, MAX_MAX_PIXELS),
                     default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Reject inputs whose header claims more pixels than this."),
    ]

    def settings_from(values: dict) -> Settings:
        try:
            return Settings(
                ops=values.pop("ops"),
                quality={op.name: values.pop(_quality_name(op)) for op in rated},
                effort=values.pop("effort"),
                lossless=values.pop("lossless"),
                max_pixels=values.pop("max_pixels"),
                format=values.pop("output_format"),
                avif_speed=values.pop("avif_speed"),
                **{p.setting: values.pop(p.setting) for p in params},
            )
        except InvalidJob as exc:
            raise click.UsageError(exc.message) from exc

    names = ("ops", *(p.setting for p in params), *(_quality_name(op) for op in rated),
             "output_format", "avif_speed", "effort", "lossless", "max_pixels")

    @functools.wraps(f)
    def with_settings(*args, **kwargs):
        kwargs["settings"] = settings_from({n: kwargs.pop(n) for n in names})
        return f(*args, **kwargs)

    for opt in reversed(opts):
        with_settings = opt(with_settings)
    return with_settings


def jobs_option(f):
    return click.option("-j", "--jobs", type=click.IntRange(1, MAX_JOBS), default=None,
                        help="Images processed at once [default: the number of CPU cores].")(f)


def _configure_storage(ctx, param, value):
    from .. import storage
    from ..errors import ImgtoolError

    if value is None:
        return value
    try:
        if param.name == "s3_endpoint":
            storage.configure(s3_endpoint=value)
        else:
            storage.configure(max_input_bytes=value)
    except ImgtoolError as exc:
        raise click.BadParameter(exc.message) from None
    return value


def _configure_video(ctx, param, value):
    from .. import imageio

    imageio.set_video_timeout(value)
    return value


def s3_endpoint_option(f):
    return click.option("--s3-endpoint", metavar="URL", default=None, expose_value=False, is_eager=True,
                        callback=_configure_storage,
                        help="S3 endpoint of s3:// locations (MinIO, Ceph, SeaweedFS...) "
                             "[default: $AWS_ENDPOINT_URL, the AWS profile, else AWS].")(f)


def input_options(f):
    """How inputs are read, whatever the command: --s3-endpoint, --max-input-bytes, --video-timeout.

    They configure the stores and the video decoder as they are parsed; the
    command is not called with them.
    """
    from ..storage import DEFAULT_MAX_INPUT_BYTES
    from ..imageio.video import DEFAULT_TIMEOUT

    f = click.option("--video-timeout", type=click.FloatRange(0, min_open=True), default=DEFAULT_TIMEOUT,
                     show_default=True, expose_value=False, callback=_configure_video,
                     help="Seconds a video's frame may take to decode; longer is a permanent error.")(f)
    f = click.option("--max-input-bytes", type=click.IntRange(1), default=DEFAULT_MAX_INPUT_BYTES,
                     show_default=True, expose_value=False, callback=_configure_storage,
                     help="Refuse s3:// objects larger than this before fetching them (their size from "
                          "HEAD): they are read into memory.")(f)
    return s3_endpoint_option(f)


def _max_memory(ctx, param, value):
    if value is None or str(value).lower() == "auto":
        from ..budgets import default_max_memory

        return default_max_memory()
    if str(value).lower() == "none":
        return None
    from ..budgets import parse_size

    try:
        return parse_size(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size (e.g. 4G, 512M, auto, none)") from None


def budget_options(f):
    """``--job-timeout`` and ``--max-memory``: the command gets ``limits``, the Pipeline's keyword arguments."""
    from ..budgets import DEFAULT_JOB_TIMEOUT, DEFAULT_MEMORY_SHARE

    @functools.wraps(f)
    def with_limits(*args, **kwargs):
        timeout = kwargs.pop("job_timeout")
        kwargs["limits"] = {"job_timeout": timeout or None, "max_memory": kwargs.pop("max_memory")}
        return f(*args, **kwargs)

    with_limits = click.option(
        "--max-memory", default="auto", show_default=True, callback=_max_memory, metavar="SIZE|auto|none",
        help=f"Memory the images in work may take together (by decoded size); an image waits until it "
             f"fits. auto: {DEFAULT_MEMORY_SHARE:.0%} of the memory available (cgroup limit included).",
    )(with_limits)
    with_limits = click.option(
        "--job-timeout", type=click.FloatRange(0), default=DEFAULT_JOB_TIMEOUT, show_default=True,
        metavar="SECONDS",
        help="Fail an image that takes longer than this (error timeout, not retried); 0: no limit.",
    )(with_limits)
    return with_limits
