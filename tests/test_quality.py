"""The thumbnail's quality bar: PSNR >= 40 dB against Pillow's LANCZOS, on a zone plate and real photos.

Measured on the computed pixels (what ``--lossless`` writes), for the cpu
backend and for the kernels (the cuda backend on the CPU build of the kernels).
The photos are ../shared/corpus/photos beside the repository, or $IMGTOOL_CORPUS:
absent, these tests skip, except on CI (CI=true), where they fail.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import imagegen
from helpers import on_ci, psnr
from imgtool.backends.cpu import CpuBackend
from imgtool.backends.cuda import CudaBackend
from imgtool.ops import THUMBNAIL, Settings, output_size

PSNR_BAR = 40.0
THUMB_WIDTH = 256
REPO = Path(__file__).resolve().parent.parent
ON_CI = on_ci()


def _photo_dir() -> Path:
    env = os.environ.get("IMGTOOL_CORPUS")
    if env:
        base = Path(env)
        return base / "photos" if (base / "photos").is_dir() else base
    return REPO.parent / "shared" / "corpus" / "photos"


PHOTO_DIR = _photo_dir()
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
PHOTOS = sorted(p for p in PHOTO_DIR.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES) if PHOTO_DIR.is_dir() else []


@pytest.fixture(scope="module")
def backends():
    """Both ways of computing a thumbnail; each input is decoded and referenced once for both."""
    made = {"cpu": CpuBackend(), "kernels": CudaBackend("host")}
    yield made
    for b in made.values():
        b.close()


def assert_quality(backends, img: np.ndarray, what: str, record=None) -> None:
    # The thumbnail reduces first (Pillow's reducing_gap=3.0), so where the
    # scale is 6 or more the scores are finite: about 44 dB on the zone plate,
    # 53-56 dB on the photos; smaller inputs are plain Lanczos (inf).
    size = thumb_size(img.shape[1], img.shape[0])
    want = reference(img, size)
    scores = {name: psnr(b.thumbnail(img, *size), want) for name, b in backends.items()}
    if record is not None:
        for name, s in scores.items():
            record(f"psnr_{name}", round(s, 2))
    low = {name: f"{s:.1f} dB" for name, s in scores.items() if s < PSNR_BAR}
    assert not low, f"{what}: below {PSNR_BAR} dB: {low}"


def thumb_size(w: int, h: int) -> tuple[int, int]:
    return output_size(THUMBNAIL, w, h, Settings(thumb_width=THUMB_WIDTH))


def reference(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The spec's reference: plain Pillow LANCZOS (no reducing gap)."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


@functools.lru_cache(maxsize=1)
def zone_plate() -> np.ndarray:
    return imagegen.zone_plate(2048)


def test_zone_plate(backends, record_property):
    assert_quality(backends, zone_plate(), "2048x2048 zone plate", record_property)


def test_zone_plate_measure_sees_aliasing():
    # The measure itself: point sampling (the old worker's way) must fail the bar.
    img = zone_plate()
    step = img.shape[1] // THUMB_WIDTH
    aliased = img[step // 2 :: step, step // 2 :: step]
    assert psnr(aliased, reference(img, thumb_size(*img.shape[1::-1]))) < 30.0


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def test_corpus_present():
    if not PHOTOS:
        msg = f"no photos in {PHOTO_DIR} (set IMGTOOL_CORPUS)"
        if ON_CI:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_photo(backends, path, record_property):
    assert_quality(backends, decoded(path), path.name, record_property)


# ---- several widths (--thumb-width 256,640,1280): each from the full image, each meets the bar ----

WIDTHS = (256, 640, 1280)


def assert_widths_quality(backends, img: np.ndarray, what: str) -> None:
    settings = Settings(ops=(THUMBNAIL,), thumb_width=WIDTHS)
    h, w = img.shape[:2]
    low = {}
    for name, b in backends.items():
        got = b.apply(img, settings)
        assert list(got) == ["thumbnail", "thumbnail-640", "thumbnail-1280"][:len(got)]
        for key, width in zip(got, WIDTHS):
            size = (width, max(1, round(h * width / w))) if w > width else (w, h)
            assert got[key].shape[1::-1] == size, f"{what} {key} on {name}"
            score = psnr(got[key], reference(img, size))
            if score < PSNR_BAR:
                low[f"{name} {key}"] = f"{score:.1f} dB"
    assert not low, f"{what}: below {PSNR_BAR} dB: {low}"


def test_every_width_meets_the_bar_on_a_zone_plate_and_a_camera_photo(backends):
    assert_widths_quality(backends, zone_plate(), "2048x2048 zone plate")
    assert_widths_quality(backends, imagegen.camera_photo(1600, 1200, seed=3), "1600x1200 camera-like photo")


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_every_width_meets_the_bar_on_photos(backends, path):
    assert_widths_quality(backends, decoded(path), path.name)


def test_every_width_written_with_lossless_meets_the_bar(tmp_path):
    """End to end: ``process --thumb-width 256,640,1280,4096 --lossless``; 4096 is over the image's width."""
    import json
    import subprocess
    import sys

    img = zone_plate()
    Image.fromarray(img).save(tmp_path / "zone.png")
    r = subprocess.run([sys.executable, "-m", "imgtool", "process", str(tmp_path / "zone.png"), "-o",
                        str(tmp_path / "out"), "--backend", "cpu", "--ops", "thumbnail", "--thumb-width",
                        "256,640,1280,4096", "--lossless", "--effort", "0", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)
    assert sorted(line["outputs"]) == ["thumbnail", "thumbnail-1280", "thumbnail-640"]
    assert list(line["skippedOutputs"]) == ["thumbnail-4096"] and "2048" in line["skippedOutputs"]["thumbnail-4096"]
    assert not (tmp_path / "out" / "zone_thumbnail-4096.webp").exists()
    for key, width in (("thumbnail", 256), ("thumbnail-640", 640), ("thumbnail-1280", 1280)):
        name = "zone_thumbnail.webp" if key == "thumbnail" else f"zone_{key}.webp"
        assert line["outputs"][key] == str(tmp_path / "out" / name)
        with Image.open(line["outputs"][key]) as im:
            got = np.asarray(im.convert("RGB"))
        assert got.shape[:2] == (width, width)
        assert psnr(got, reference(img, (width, width))) >= PSNR_BAR, key
