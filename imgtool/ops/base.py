"""The operation registry: Operation and Param, the registered operations, and backends' implementations.

An operation is registered once, by its own module (``register(Thumbnail())``).
Everything else that needs to know the operations asks here: the CLI builds
its ``--ops`` choices, parameter flags and quality flags from them, a queue
job's ``operations`` and ``options`` are validated against them, the
pipeline names outputs and fingerprints their settings through them, and a
backend looks up what it registered for each (``implement``).  Nothing
outside ``imgtool/ops/`` compares operation names.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidJob

if TYPE_CHECKING:
    from .settings import Settings

#: The output formats (``--format``), the first the default, and each one's file suffix.
FORMATS = ("webp", "avif")
OUTPUT_SUFFIXES = {"webp": ".webp", "avif": ".avif"}
#: The default format's suffix.
OUTPUT_SUFFIX = OUTPUT_SUFFIXES[FORMATS[0]]
#: Names of the ``options`` object's entries beside the operations': no operation may take them.
RESERVED_NAMES = ("format", "avif_speed")
MIN_QUALITY = 0
MAX_QUALITY = 100


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """One parameter of an operation: its Settings field, job option, CLI flag, default and range.

    ``setting`` is the keyword and attribute of Settings that holds it
    (``Settings(thumb_width=320).thumb_width``); ``key`` its name in a queue
    job's ``options.<operation>``; ``label`` what validation messages call
    it; ``flag`` and ``help`` its option on every processing command.
    """

    key: str
    setting: str
    label: str
    flag: str
    help: str
    default: Any

    def check(self, name: str, value):
        """``value`` as the setting holds it; InvalidJob (naming it ``name``) when it is not allowed."""
        raise NotImplementedError

    def check_setting(self, value):
        """``check`` for a Settings field (where the default may be a "none given" None)."""
        if value is None and self.default is None:
            return None
        return self.check(self.label, value)

    def click_kwargs(self) -> dict:
        """The keyword arguments of this parameter's ``click.option``."""
        raise NotImplementedError

    def of(self, settings: "Settings"):
        """This parameter's value in ``settings``."""
        return settings.value(self.setting)


@dataclass(frozen=True)
class IntParam(Param):
    lo: int = 0
    hi: int = 0

    def check(self, name: str, value) -> int:
        return check_int(name, value, self.lo, self.hi)

    def click_kwargs(self) -> dict:
        import click

        return {"type": click.IntRange(self.lo, self.hi), "default": self.default, "show_default": True,
                "help": self.help}


@dataclass(frozen=True)
class PositiveFloatParam(Param):
    """A number in (0, hi]; its default may be None ("none given": the operation's own choice)."""

    hi: float = 0.0

    def check(self, name: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidJob(f"{name} must be a number, not {type(value).__name__}")
        if not (0 < value <= self.hi) or math.isnan(value):
            raise InvalidJob(f"{name} must be > 0 and <= {self.hi:g}, not {value}")
        return float(value)

    def click_kwargs(self) -> dict:
        import click

        hi = self.hi

        def in_range(ctx, param, value):
            if value is not None and not (0 < value <= hi):
                raise click.BadParameter(f"must be > 0 and <= {hi:g}")
            return value

        return {"type": float, "default": self.default, "callback": in_range, "help": self.help}


def check_int(name: str, value, lo: int, hi: int) -> int:
    """``value`` when it is an integer (not a bool) in lo..hi, else InvalidJob naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{name} must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidJob(f"{name} must be between {lo} and {hi}, not {value}")
    return value


#: Every operation's ``options.<operation>.quality`` (its WebP quality).
QUALITY = IntParam(key="quality", setting="quality", label="quality", flag="", help="", default=None,
                   lo=MIN_QUALITY, hi=MAX_QUALITY)


# --------------------------------------------------------------------------- operations


class Operation:
    """One derivative of an input: its name, parameters, output size and name, default quality.

    Subclasses set the class attributes and ``output_size``; register one
    instance with ``register``.  A backend runs it once it has registered an
    implementation for it (``implement``).
    """

    #: The operation's name: the ``--ops`` and job ``operations`` entry, and the output name's suffix.
    name: str = ""
    #: WebP quality of its output unless the user or the job says otherwise.
    default_quality: int = 80
    #: The CLI flag of that quality, and its help.
    quality_flag: str = ""
    quality_help: str = ""
    #: Its parameters (their values live in Settings).
    params: tuple[Param, ...] = ()
    #: Whether its outputs are antialiased reductions of the whole image, aspect kept, which the
    #: image's placeholders (ThumbHash, BlurHash) may be computed from instead of the decoded image.
    placeholder_source: bool = False

    def output_size(self, width: int, height: int, settings: "Settings") -> tuple[int, int]:
        """The (width, height) of the output for a width x height input."""
        raise NotImplementedError

    def output_keys(self, settings: "Settings") -> tuple[str, ...]:
        """The names of every output it may make with ``settings`` (``--json``'s and ``image:done``'s keys).

        One, its name, unless it makes several (the thumbnail's widths:
        ``thumbnail``, ``thumbnail-640``, ...).  Known before any image is read.
        """
        return (self.name,)

    def outputs(self, settings: "Settings", width: int, height: int
                ) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
        """For a width x height input: the size of each output it makes, by key, and the keys it skips, with why."""
        return {self.name: self.output_size(width, height, settings)}, {}

    def is_output_key(self, key: str) -> bool:
        """Whether ``key`` (an output name less ``<jobId>_`` and the suffix) is one of this operation's."""
        return key == self.name

    def output_name(self, job_id: str, settings: "Settings | None" = None, key: str | None = None) -> str:
        """The file name of its output ``key`` (default: the first): ``<jobId>_<key>.<webp|avif>``."""
        fmt = FORMATS[0] if settings is None else settings.format
        return f"{job_id}_{key or self.name}{OUTPUT_SUFFIXES[fmt]}"

    def job_options(self) -> dict[str, Param]:
        """What a queue job may set in ``options.<name>``: its quality and its parameters."""
        return {QUALITY.key: QUALITY, **{p.key: p for p in self.params}}

    def fingerprint(self, settings: "Settings", key: str | None = None) -> str:
        """A short string that changes whenever a setting that decides the output ``key`` changes."""
        return self._fingerprint(settings, [f"{p.key}={p.of(settings)!r}" for p in self.params])

    def _fingerprint(self, settings: "Settings", params: list[str]) -> str:
        parts = [f"q={settings.quality[self.name]}", f"effort={settings.effort}",
                 f"lossless={int(settings.lossless)}", *params]
        if settings.format != FORMATS[0]:
            # WebP outputs keep the fingerprints they had before there was a choice.
            parts += [f"format={settings.format}", f"speed={settings.avif_speed}"]
        return ";".join(parts)

    def __repr__(self) -> str:
        return f"<operation {self.name}>"


# --------------------------------------------------------------------------- the registry

_lock = threading.Lock()
_operations: dict[str, Operation] = {}  # in registration order
_implementations: dict[tuple[str, str], Any] = {}  # (backend name, operation name) -> what it runs


def register(op: Operation) -> Operation:
    """Add ``op`` to the operations every command offers (once; its name must be new)."""
    if (not op.name or "_" in op.name or "/" in op.name or op.name != op.name.strip()
            or op.name in RESERVED_NAMES):
        # "_" separates the jobId from the operation in output names.
        raise ValueError(f"invalid operation name {op.name!r}")
    with _lock:
        if op.name in _operations:
            raise ValueError(f"operation {op.name!r} is registered already")
        taken = {p.setting for o in _operations.values() for p in o.params}
        clash = [p.setting for p in op.params if p.setting in taken]
        if clash:
            raise ValueError(f"operation {op.name!r}: setting {clash[0]!r} belongs to another operation")
        _operations[op.name] = op
    return op


def unregister(name: str) -> None:
    """Remove an operation and every implementation of it (for tests that add one)."""
    with _lock:
        _operations.pop(name, None)
        for key in [k for k in _implementations if k[1] == name]:
            del _implementations[key]


def names() -> tuple[str, ...]:
    """The registered operations' names, in registration order (the default ``--ops``)."""
    return tuple(_operations)


def operations() -> tuple[Operation, ...]:
    return tuple(_operations.values())


def find(name: str) -> Operation | None:
    """The operation called ``name``, or None."""
    return _operations.get(name)


def get(name: str) -> Operation:
    """The operation called ``name``; InvalidJob when there is none."""
    op = _operations.get(name)
    if op is None:
        raise InvalidJob(f"unknown operation {name!r} (choose from {', '.join(_operations)})")
    return op


def implement(backend: str, name: str, implementation: Any = None):
    """Register what ``backend`` runs for the operation ``name``; usable as a decorator.

    What an implementation is, is the backend's business (a function of a
    decoded image for the cpu backend, a kernel plan for the cuda backend).
    """

    def add(impl):
        with _lock:
            _implementations[(backend, name)] = impl
        return impl

    return add if implementation is None else add(implementation)


def implementation(backend: str, name: str):
    """What ``backend`` registered for ``name``, or None."""
    return _implementations.get((backend, name))


def params_by_setting() -> dict[str, Param]:
    """Every registered operation's parameters, by their Settings field."""
    return {p.setting: p for op in _operations.values() for p in op.params}


def default_qualities() -> dict[str, int]:
    return {op.name: op.default_quality for op in _operations.values()}
