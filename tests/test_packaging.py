"""The wheel ships the kernels, and the installed package finds them from any folder."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(out), str(ROOT)], check=True)
    (whl,) = out.glob("imgtool-*.whl")
    return whl


def test_wheel_contains_kernel_sources_and_headers(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    kernels = sorted(p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".cuh", ".h"))
    assert kernels, "no kernel sources in kernels/"
    for name in kernels:
        assert f"imgtool/kernels/{name}" in names
    headers = sorted(p.name for p in (ROOT / "imgtool" / "backends" / "hostcuda").glob("*.h"))
    for name in headers:
        assert f"imgtool/backends/hostcuda/{name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_package_runs_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import imgtool.kernels as k, pathlib; print(k.KERNEL_DIR); "
            "print(sorted(p.name for p in pathlib.Path(k.KERNEL_DIR).glob('*.cu')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                       check=True)
    kernel_dir, listing = r.stdout.splitlines()
    assert Path(kernel_dir).is_relative_to(target)
    assert listing == str(sorted(p.name for p in (ROOT / "kernels").glob("*.cu")))
    sample = ROOT / "examples" / "sample.jpg"
    (elsewhere / "sample.jpg").write_bytes(sample.read_bytes())
    r = subprocess.run([sys.executable, "-m", "imgtool", "process", "sample.jpg", "--backend", "cpu"],
                       cwd=elsewhere, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (elsewhere / "processed").iterdir()) == [
        "sample_blur.webp", "sample_low-quality.webp", "sample_thumbnail.webp"]
