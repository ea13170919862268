"""The blur operation as users get it: sigma auto by default (visible), 3x3 the old kernel exactly, both backends agreeing.

- The default (``--blur-sigma auto``) changes a camera photo visibly: a mean
  absolute difference of at least 8 levels, on the corpus' 12 MP photos (where
  the corpus is: ../shared/corpus/photos or $IMGTOOL_CORPUS; skipped only when
  it is absent) and on a generated image with a camera photo's statistics (always).
- ``--blur-sigma 3x3`` (and the job option) reproduces the old worker's
  [1 2 1] x [1 2 1] / 16 kernel exactly, against a reference written here.
- From sigma 1 to 50 the cpu backend and the CPU build of the kernels agree
  within 1 through each backend's registered implementation of the blur
  (Settings in, the operation's pixels out), across boxblur.cu's block and
  segment boundaries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import imagegen
from helpers import assert_image_close
from imgtool.backends.cpu import CpuBackend, premultiply, unpremultiply
from imgtool.backends.cuda import CudaBackend
from imgtool.backends.cudaboxes import BLOCK, SEGMENT
from imgtool.ops import Settings, auto_sigma

VISIBLE = 8.0  # mean absolute difference, levels: the bar for "visibly blurred"
TOLERANCE = 1
REPO = Path(__file__).resolve().parent.parent


def _photo_dir() -> Path:
    env = os.environ.get("IMGTOOL_CORPUS")
    if env:
        base = Path(env)
        return base / "photos" if (base / "photos").is_dir() else base
    return REPO.parent / "shared" / "corpus" / "photos"


def _twelve_mp_photos() -> list[Path]:
    folder = _photo_dir()
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"):
            with Image.open(p) as im:
                if im.width * im.height >= 11_000_000:  # "12 MP": 4032 x 3024 is 12.2
                    found.append(p)
    return found


TWELVE_MP = _twelve_mp_photos()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean())


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgtool", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def blurred_by_the_cli(tmp_path: Path, img: np.ndarray, *args) -> np.ndarray:
    """``imgtool process --ops blur --lossless`` of ``img`` (as a PNG), read back."""
    src = tmp_path / "in" / "photo.png"
    src.parent.mkdir(exist_ok=True)
    Image.fromarray(img).save(src)
    out = tmp_path / "out"
    r = run("process", src, "-o", out, "--force", "--backend", "cpu", "--ops", "blur", "--lossless",
            "--effort", "0", *args)
    assert r.returncode == 0, r.stderr
    with Image.open(out / "photo_blur.webp") as im:
        return np.asarray(im.convert(im.mode))


# ---- the default is visible -------------------------------------------------------------


def test_default_blur_visibly_changes_a_camera_like_photo(tmp_path):
    img = imagegen.camera_photo(1024, 768)
    old = blurred_by_the_cli(tmp_path, img, "--blur-sigma", "3x3")
    default = blurred_by_the_cli(tmp_path, img)
    # The generated image is a camera photo as far as the old kernel can tell: it barely changes it.
    assert mean_abs_diff(old, img) < 2.0
    assert mean_abs_diff(default, img) >= VISIBLE


@pytest.mark.skipif(not TWELVE_MP, reason=f"no 12 MP photos in {_photo_dir()} (the corpus is not here)")
@pytest.mark.parametrize("path", TWELVE_MP, ids=lambda p: p.name)
def test_default_blur_visibly_changes_the_corpus_12_mp_photos(tmp_path, path):
    from imgtool.pipeline import Pipeline, Task

    with Image.open(path) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    pipe = Pipeline(Settings(ops=("blur",), lossless=True, effort=0), backend="cpu", jobs=1)
    try:
        result = pipe.process(Task(path, tmp_path))
    finally:
        pipe.close()
    assert result.status == "done", result.error
    with Image.open(result.outputs["blur"]) as im:
        blurred = np.asarray(im.convert("RGB"))
    assert mean_abs_diff(blurred, upright) >= VISIBLE, path.name


# ---- 3x3 is the old kernel ---------------------------------------------------------------


def _clamped(n: int, offset: int) -> np.ndarray:
    return np.clip(np.arange(n) + offset, 0, n - 1)


def old_kernel(img: np.ndarray) -> np.ndarray:
    """The old worker's blur: [1 2 1] down and across with clamped edges, (sum + 8) // 16, on premultiplied alpha."""
    src = premultiply(img) if img.shape[2] == 4 else img
    h, w = src.shape[:2]
    a = src.astype(np.int64)
    rows = a[_clamped(h, -1)] + 2 * a + a[_clamped(h, 1)]
    both = rows[:, _clamped(w, -1)] + 2 * rows + rows[:, _clamped(w, 1)]
    out = ((both + 8) // 16).astype(np.uint8)
    return unpremultiply(out) if img.shape[2] == 4 else out


@pytest.mark.parametrize("channels", [3, 4])
def test_3x3_reproduces_the_old_kernel_exactly(channels):
    rng = np.random.default_rng(channels)
    img = rng.integers(0, 256, (45, 67, channels), dtype=np.uint8)
    if channels == 4:
        img[..., 3][rng.random((45, 67)) < 0.3] = 0
    want = old_kernel(img)
    by_option = Settings(ops=("blur",), blur_sigma="3x3")
    by_job = Settings(ops=("blur",)).with_job_options({"blur": {"sigma": "3x3"}})
    assert by_job == by_option
    assert np.array_equal(np.asarray(CpuBackend().apply_image(Image.fromarray(img), by_job)["blur"]), want)
    kernels = CudaBackend("host")
    try:
        assert np.array_equal(kernels.apply(img, by_job)["blur"], want)
    finally:
        kernels.close()


def test_3x3_on_the_command_line_writes_the_old_kernel(tmp_path):
    img = imagegen.photo(96, 64)
    assert np.array_equal(blurred_by_the_cli(tmp_path, img, "--blur-sigma", "3x3"), old_kernel(img))


# ---- large sigmas: the cpu backend and the kernels agree -------------------------------------

BX, BY = BLOCK
ROW_SPAN, COL_SPAN = BX * SEGMENT, BY * SEGMENT  # what one block covers along a row, down a column
# (width, height) across boxblur.cu's edges: the columns' 32-wide blocks, a segment's length along
# rows and down columns, a block of segments each way; 1x1 and odd sizes.
SIZES = [(1, 1), (2, 3), (37, 41), (BX - 1, 9), (BX + 1, 5), (SEGMENT - 1, 3), (SEGMENT + 1, 6),
         (4, SEGMENT + 1), (ROW_SPAN - 1, 2), (ROW_SPAN + 1, 3), (3, COL_SPAN - 1), (2, COL_SPAN + 1)]
SIGMAS = [1.0, 1.5, 2.4, 4.0, 7.5, 12.0, 20.0, 33.3, 45.36, 50.0]


@pytest.fixture(scope="module")
def kernels():
    backend = CudaBackend("host")
    yield backend
    backend.close()


def _noise(w: int, h: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    if channels == 4:
        pick = rng.random((h, w))
        img[..., 3][pick < 0.25] = 0
        img[..., 3][pick > 0.75] = 255
    return img


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_large_sigmas_agree_through_the_registered_implementations(kernels, size, channels):
    w, h = size
    img = _noise(w, h, channels, seed=w * 7 + h)
    cpu = CpuBackend()
    for sigma in SIGMAS:
        settings = Settings(ops=("blur",), blur_sigma=sigma)
        want = np.asarray(cpu.apply_image(Image.fromarray(img), settings)["blur"])
        assert_image_close(kernels.apply(img, settings)["blur"], want, TOLERANCE, f"{w}x{h}x{channels} sigma {sigma}")


@pytest.mark.parametrize("size", [(67, 45), (900, 700), (5000, 80)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_auto_sigma_agrees_and_is_the_box_cascade_of_that_sigma(kernels, size):
    w, h = size
    img = _noise(w, h, 3, seed=w)
    cpu = CpuBackend()
    auto = np.asarray(cpu.apply_image(Image.fromarray(img), Settings(ops=("blur",)))["blur"])
    explicit = np.asarray(cpu.apply_image(Image.fromarray(img),
                                          Settings(ops=("blur",), blur_sigma=auto_sigma(w, h)))["blur"])
    assert np.array_equal(auto, explicit)
    assert_image_close(kernels.apply(img, Settings(ops=("blur",)))["blur"], auto, TOLERANCE, f"auto {w}x{h}")
