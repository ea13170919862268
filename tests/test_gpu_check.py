"""scripts/gpu-check.sh: its verdict on the GPU tests' report fails on a skip, a failure or no test at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check.sh"


def _check(report: Path) -> subprocess.CompletedProcess:
    """The script's own check_junit function, on ``report``, with this Python as python3."""
    text = SCRIPT.read_text()
    start = text.index("check_junit() {")
    end = text.index("\n}\n", start) + 3
    shell = ("status=0\npython3() { \"$PY\" \"$@\"; }\n" + text[start:end]
             + 'check_junit "$REPORT" "gpu tests"\nexit "$status"\n')
    return subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60,
                          env={"PY": sys.executable, "REPORT": str(report), "PATH": "/usr/bin:/bin"})


def _report(tmp_path: Path, body: str) -> Path:
    """A junit report of a real pytest run of ``body``."""
    test = tmp_path / "test_sample.py"
    test.write_text("import pytest\n" + body)
    report = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test),
                    f"--junitxml={report}"], capture_output=True, timeout=120, cwd=tmp_path)
    return report


@pytest.mark.parametrize("body, ok, said", [
    ("def test_a():\n    pass\n", True, "1 tests, 0 failed, 0 errors, 0 skipped"),
    ("def test_a():\n    pytest.skip('PyCUDA is not usable (libcuda.so.1: cannot open)')\n", False,
     "libcuda.so.1: cannot open"),
    ("def test_a():\n    assert False\n", False, "FAILURE"),
    ("x = 1\n", False, "0 tests"),
])
def test_a_skip_fails_the_gpu_check(tmp_path, body, ok, said):
    r = _check(_report(tmp_path, body))
    assert (r.returncode == 0) is ok, r.stdout + r.stderr
    assert said in r.stdout + r.stderr


def test_no_report_fails_the_gpu_check(tmp_path):
    r = _check(tmp_path / "missing.xml")
    assert r.returncode != 0 and "no test report" in r.stderr
