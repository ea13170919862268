"""Decode budgets: the JPEG scan limit and the data-length floors, on files made here, through the CLI too."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import hostile_files as h
import imagegen as g
from imgtool import budgets
from imgtool.errors import CorruptImage
from imgtool.imageio import decode_image


def test_real_progressive_jpegs_are_well_under_the_scan_limit():
    for kw in ({}, {"progressive": True}, {"progressive": True, "optimize": True}):
        data = g.save(g.photo(300, 200), "JPEG", **kw)
        scans = h.jpeg_scan_count(data)
        assert budgets.jpeg_scans(data) == scans
        assert scans <= 12 < budgets.MAX_JPEG_SCANS


def test_a_scan_bomb_is_refused_before_decoding(tmp_path):
    data = h.scan_bomb_jpeg(scans=3000)
    assert h.jpeg_scan_count(data) > 3000
    path = tmp_path / "bomb.jpg"
    path.write_bytes(data)
    with pytest.raises(budgets.OverBudget) as info:
        decode_image(path, 120_000_000)
    assert info.value.code == "over_budget" and not info.value.retryable
    assert f"more than {budgets.MAX_JPEG_SCANS} scans" in str(info.value)
    assert str(path) in str(info.value)


def test_a_jpeg_at_the_scan_limit_still_decodes(tmp_path):
    # Repeating a refinement scan up to the limit keeps the file acceptable (libjpeg warns only).
    base = h.jpeg_scan_count(h.scan_bomb_jpeg(scans=0))
    data = h.scan_bomb_jpeg(scans=budgets.MAX_JPEG_SCANS - base)
    assert h.jpeg_scan_count(data) == budgets.MAX_JPEG_SCANS
    path = tmp_path / "many.jpg"
    path.write_bytes(data)
    assert decode_image(path, 120_000_000).size == (1024, 1024)


@pytest.mark.parametrize("kind", sorted(h.TRUNCATED))
def test_a_header_claiming_more_than_the_data_holds_is_corrupt(kind, tmp_path):
    make, suffix = h.TRUNCATED[kind]
    path = tmp_path / f"claims.{suffix}"
    path.write_bytes(make())
    with pytest.raises(CorruptImage) as info:
        decode_image(path, 120_000_000)
    assert "truncated" in str(info.value) or "corrupt" in str(info.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "AVIF"])
def test_flat_images_that_compress_well_are_not_refused(fmt, tmp_path):
    # The floors are bounds, not guesses: a flat 4000x3000 image is small and valid.
    flat = np.full((3000, 4000, 3), 90, np.uint8)
    kw = {"compression": "tiff_deflate"} if fmt == "TIFF" else {}
    buf = io.BytesIO()
    Image.fromarray(flat if fmt != "GIF" else flat[:, :, 0]).save(buf, fmt, **kw)
    path = tmp_path / f"flat.{fmt.lower()}"
    path.write_bytes(buf.getvalue())
    assert decode_image(path, 120_000_000).size == (4000, 3000)


def test_process_fails_each_truncated_file_in_one_line_and_writes_nothing(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    names = []
    for kind, (make, suffix) in sorted(h.TRUNCATED.items()):
        (src / f"{kind}.{suffix}").write_bytes(make())
        names.append(f"{kind}.{suffix}")
    (src / "bomb.jpg").write_bytes(h.scan_bomb_jpeg(scans=2000))
    names.append("bomb.jpg")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "imgtool", "process", str(src), "-o", str(out), "-q",
                          "--backend", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    for name in names:
        mine = [line for line in lines if name in line]
        assert len(mine) == 1, (name, lines)
        assert "Traceback" not in run.stderr
    assert any("scans" in line for line in lines if "bomb.jpg" in line)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
