"""tests/helpers.py: the one reading of CI, and that nothing else reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import on_ci

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, expected", [
    (None, False), ("", False), ("0", False), ("false", False), ("False", False), ("no", False),
    ("true", True), ("1", True), ("yes", True), ("TRUE", True), ("woodpecker", True),
])
def test_ci_means_set_to_anything_but_a_no(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert on_ci() is expected


def test_nothing_else_reads_ci():
    reads = re.compile(r"""environ(\.get)?\s*[\[(]\s*["']CI["']|getenv\(\s*["']CI["']""")
    offenders = [str(p.relative_to(REPO)) for folder in ("tests", "imgtool", "bench", "scripts")
                 for p in (REPO / folder).rglob("*.py") if reads.search(p.read_text(errors="replace"))]
    assert offenders == ["tests/helpers.py"]
