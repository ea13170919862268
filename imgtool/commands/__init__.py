"""The commands: options and wiring only.  Each returns an Outcome; cli.py alone turns it into an exit code."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """How a command ended."""

    OK = "ok"
    FAILURES = "failures"  # some inputs or jobs failed (each was named), or the watched folder went away
    INTERRUPTED = "interrupted"  # a signal stopped the work before it was done
