"""The operations: one module each, registered once; names, parameters, output sizes and names.

``base`` holds the registry (Operation, Param, register, implement),
``settings`` the Settings every operation reads its parameters from, and
``thumbnail``, ``blur`` and ``low_quality`` the built-in operations, in the
order commands offer them.  Adding an operation is one more module like
those (an Operation subclass registered with ``register``) plus what each
backend runs for it (``implement``).
"""

from __future__ import annotations

import os

from .base import (
    FORMATS,
    MAX_QUALITY,
    MIN_QUALITY,
    OUTPUT_SUFFIX,
    OUTPUT_SUFFIXES,
    IntParam,
    Operation,
    Param,
    PositiveFloatParam,
    find,
    get,
    implement,
    implementation,
    names,
    operations,
    register,
    unregister,
)
from .settings import (
    DEFAULT_AVIF_SPEED,
    DEFAULT_EFFORT,
    DEFAULT_FORMAT,
    DEFAULT_MAX_PIXELS,
    MAX_AVIF_SPEED,
    MAX_EFFORT,
    MAX_MAX_PIXELS,
    MIN_AVIF_SPEED,
    MIN_EFFORT,
    MIN_MAX_PIXELS,
    Settings,
)

# The built-in operations register themselves on import, in this order.
from .thumbnail import (  # noqa: I001
    DEFAULT_THUMB_WIDTH,
    MAX_THUMB_WIDTH,
    MAX_THUMB_WIDTHS,
    MIN_THUMB_WIDTH,
    THUMBNAIL,
    THUMBNAIL_REDUCING_GAP,
    reduce_factors,
    reduced_size,
)
from .blur import AUTO, BLUR, BOX121, MAX_BLUR_SIGMA, OLD_3X3, auto_sigma, blur_radius
from .low_quality import LOW_QUALITY, half_size


def __getattr__(name: str):
    # OPERATIONS and DEFAULT_QUALITY follow the registry (an operation
    # registered later is in them); the registry itself is the authority.
    if name == "OPERATIONS":
        return names()
    if name == "DEFAULT_QUALITY":
        return {op.name: op.default_quality for op in operations()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def output_size(op: str, width: int, height: int, settings: Settings) -> tuple[int, int]:
    """The (width, height) of ``op``'s output for a width x height input."""
    return get(op).output_size(width, height, settings)


def job_id_for(path: str | os.PathLike) -> str:
    """The input's file name without its extension (the upload server's jobId)."""
    name = os.path.basename(os.fspath(path))
    stem, _ext = os.path.splitext(name)
    return stem or name


def output_name(job_id: str, op: str, settings: Settings | None = None) -> str:
    """The file name of ``op``'s (first) output for ``job_id``."""
    return get(op).output_name(job_id, settings)


def output_names(job_id: str, settings: Settings) -> dict[str, str]:
    """The file name of every output ``settings`` may make for ``job_id``, by output key, in order."""
    return {key: op.output_name(job_id, settings, key)
            for op in map(get, settings.ops) for key in op.output_keys(settings)}


def is_output_name(name: str) -> bool:
    """True for names imgtool itself writes: ``<jobId>_<operation>[-<W>].<webp|avif>``."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or f".{suffix}" not in OUTPUT_SUFFIXES.values():
        return False
    job_id, underscore, key = stem.rpartition("_")
    return bool(underscore) and any(op.is_output_key(key) for op in operations())


__all__ = [
    "AUTO", "BLUR", "BOX121", "DEFAULT_AVIF_SPEED", "DEFAULT_EFFORT", "DEFAULT_FORMAT", "FORMATS",
    "MAX_AVIF_SPEED", "MAX_THUMB_WIDTHS", "MIN_AVIF_SPEED", "OLD_3X3", "OUTPUT_SUFFIXES", "auto_sigma",
    "output_names", "DEFAULT_MAX_PIXELS", "DEFAULT_THUMB_WIDTH", "LOW_QUALITY",
    "MAX_BLUR_SIGMA", "MAX_EFFORT", "MAX_MAX_PIXELS", "MAX_QUALITY", "MAX_THUMB_WIDTH", "MIN_EFFORT",
    "MIN_MAX_PIXELS", "MIN_QUALITY", "MIN_THUMB_WIDTH", "OUTPUT_SUFFIX", "THUMBNAIL",
    "THUMBNAIL_REDUCING_GAP", "IntParam", "Operation", "Param", "PositiveFloatParam", "Settings",
    "blur_radius", "find", "get", "half_size", "implement", "implementation", "is_output_name",
    "job_id_for", "names", "operations", "output_name", "output_size", "reduce_factors", "reduced_size",
    "register", "unregister",
]
