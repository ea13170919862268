"""Settings: everything that decides what an image's outputs look like, validated when made."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from ..errors import InvalidJob
from . import base
from .base import FORMATS, MAX_QUALITY, MIN_QUALITY, QUALITY, check_int

DEFAULT_EFFORT = 4
MIN_EFFORT = 0
MAX_EFFORT = 6  # libwebp's slowest, smallest method
DEFAULT_MAX_PIXELS = 120_000_000
MIN_MAX_PIXELS = 1
MAX_MAX_PIXELS = 2**40
DEFAULT_FORMAT = FORMATS[0]
# libavif's speed: 0 slowest and smallest, 10 fastest.  The default is chosen
# from the speed/size table in bench/RESULTS.md (python -m bench.avif_speed).
DEFAULT_AVIF_SPEED = 8
MIN_AVIF_SPEED = 0
MAX_AVIF_SPEED = 10

_FIELDS = ("ops", "quality", "effort", "lossless", "max_pixels", "format", "avif_speed")
# The entries of a queue job's ``options`` that are not an operation's: the Settings field each sets.
JOB_FIELDS = {"format": "format", "avif_speed": "avif_speed"}


class Settings:
    """Everything that decides what an image's outputs look like; immutable.

    ``ops`` (in order), ``quality`` (per operation), ``effort``, ``lossless``,
    ``max_pixels``, ``format`` (webp or avif) and ``avif_speed``, and each
    registered operation's parameters by their
    ``Param.setting`` (``Settings(thumb_width=320).thumb_width``).  Left out,
    each takes the default its owner declares (the operation, or the
    constants above).  Made directly, every field is validated (InvalidJob);
    ``replace`` validates only what it changes and ``with_job_options`` what
    the job sets.
    """

    __slots__ = ("ops", "quality", "effort", "lossless", "max_pixels", "format", "avif_speed", "_values")

    def __init__(self, ops=None, quality: Mapping[str, int] | None = None, effort: int = DEFAULT_EFFORT,
                 lossless: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, *,
                 format: str = DEFAULT_FORMAT, avif_speed: int = DEFAULT_AVIF_SPEED, **params):
        known = base.params_by_setting()
        for name in params:
            if name not in known:
                raise TypeError(f"Settings() got an unexpected keyword argument {name!r}")
        merged = base.default_qualities()
        if quality is not None:
            merged.update(quality)
        fields = {
            "ops": tuple(base.names() if ops is None else ops),
            "quality": merged,
            "effort": effort,
            "lossless": lossless,
            "max_pixels": max_pixels,
            "format": format,
            "avif_speed": avif_speed,
        }
        values = {name: params.get(name, p.default) for name, p in known.items()}
        for name, value in fields.items():
            fields[name] = _check_field(name, value)
        _check_together(fields)
        for name, value in values.items():
            values[name] = known[name].check_setting(value)
        self._set(fields, values)

    def _set(self, fields: dict, values: dict) -> None:
        for name in _FIELDS:
            value = fields[name]
            if name == "quality":
                value = MappingProxyType(dict(value))
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __setattr__(self, name, value):
        raise AttributeError("Settings are immutable: use replace()")

    def __getattr__(self, name):
        # Only reached for names that are no slot: an operation's parameter.
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(f"Settings have no {name!r}") from None

    def value(self, setting: str):
        """The value of an operation's parameter by its ``Param.setting``."""
        return self._values[setting]

    def _copy(self, fields: dict, values: dict) -> "Settings":
        new = object.__new__(Settings)
        new._set({**{n: getattr(self, n) for n in _FIELDS}, **fields}, {**self._values, **values})
        return new

    def replace(self, **changes) -> "Settings":
        """These settings with ``changes``; only the changed fields are validated."""
        fields, values = {}, {}
        params = base.params_by_setting()
        for name, value in changes.items():
            if name in _FIELDS:
                fields[name] = _check_field(name, value)
            elif name in params:
                values[name] = params[name].check_setting(value)
            else:
                raise TypeError(f"Settings have no field {name!r}")
        _check_together({**{n: getattr(self, n) for n in _FIELDS}, **fields})
        return self._copy(fields, values)

    def with_job_options(self, options: Mapping | None) -> "Settings":
        """Apply a queue job's ``options`` object (validated by each operation's schema; raises InvalidJob)."""
        if options is None:
            return self
        if not isinstance(options, Mapping):
            raise InvalidJob("options must be an object")
        values: dict = {}
        fields: dict = {}
        quality = dict(self.quality)
        for name, params in options.items():
            if name in JOB_FIELDS:
                fields[JOB_FIELDS[name]] = _check_field(JOB_FIELDS[name], params, f"options.{name}")
                continue
            op = base.find(name)
            if op is None:
                raise InvalidJob(f"options: unknown operation {name!r}")
            if not isinstance(params, Mapping):
                raise InvalidJob(f"options.{name} must be an object")
            schema = op.job_options()
            for key, value in params.items():
                param = schema.get(key)
                if param is None:
                    raise InvalidJob(f"options.{name}: unknown parameter {key!r}")
                checked = param.check(f"options.{name}.{key}", value)
                if param is QUALITY:
                    quality[name] = checked
                else:
                    values[param.setting] = checked
        fields["quality"] = quality
        _check_together({**{n: getattr(self, n) for n in _FIELDS}, **fields}, "options.format")
        return self._copy(fields, values)

    def _key(self) -> tuple:
        return (self.ops, tuple(sorted(self.quality.items())), self.effort, self.lossless, self.max_pixels,
                self.format, self.avif_speed, tuple(sorted(self._values.items())))

    def __eq__(self, other) -> bool:
        return isinstance(other, Settings) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return (f"Settings(ops={self.ops!r}, quality={dict(self.quality)!r}, effort={self.effort!r}, "
                f"lossless={self.lossless!r}, max_pixels={self.max_pixels!r}, format={self.format!r}, "
                f"avif_speed={self.avif_speed!r}, {params})")

    def __reduce__(self):
        return (_rebuild, (self.ops, dict(self.quality), self.effort, self.lossless, self.max_pixels,
                           self.format, self.avif_speed, dict(self._values)))


def _rebuild(ops, quality, effort, lossless, max_pixels, format, avif_speed, values) -> Settings:
    return Settings(ops, quality, effort, lossless, max_pixels, format=format, avif_speed=avif_speed, **values)


def _check_together(fields: dict, name: str = "format") -> None:
    """What no single field can say wrong: lossless output is WebP's only."""
    if fields["lossless"] and fields["format"] != "webp":
        raise InvalidJob(f"{name} {fields['format']!r} cannot be lossless (lossless output is WebP only)")


def _check_field(name: str, value, label: str | None = None):
    """``value`` for the field ``name``, validated (InvalidJob naming it ``label``, default its name)."""
    if name == "format":
        if not isinstance(value, str) or value not in FORMATS:
            shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
            raise InvalidJob(f"{label or 'format'} must be one of {', '.join(FORMATS)}, not {shown}")
        return value
    if name == "avif_speed":
        return check_int(label or "AVIF speed", value, MIN_AVIF_SPEED, MAX_AVIF_SPEED)
    if name == "ops":
        return _check_ops(tuple(value))
    if name == "quality":
        for op, q in value.items():
            if base.find(op) is None:
                raise InvalidJob(f"quality for unknown operation {op!r}")
            check_int(f"{op} quality", q, MIN_QUALITY, MAX_QUALITY)
        return value
    if name == "effort":
        return check_int("effort", value, MIN_EFFORT, MAX_EFFORT)
    if name == "max_pixels":
        return check_int("max pixels", value, MIN_MAX_PIXELS, MAX_MAX_PIXELS)
    return value  # lossless: any truth value


def _check_ops(ops: tuple) -> tuple[str, ...]:
    if not ops:
        raise InvalidJob("no operations given")
    for name in ops:
        base.get(name)  # InvalidJob naming the known ones
    if len(set(ops)) != len(ops):
        raise InvalidJob("an operation is named twice")
    return ops
