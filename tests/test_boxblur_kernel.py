"""kernels/boxblur.cu (the box-cascade Gaussian) against the cpu backend's C and numpy paths.

The real kernel source runs on the CPU build of the kernels (hostcuda, always)
and, in the ``gpu`` group, on a real GPU through PyCUDA (skipped where there is
none), launched by imgtool.backends.cudaboxes as the cuda backend will.  Sizes
sweep the kernels' block and segment boundaries; sigmas 1 to 50.  Tolerance 1
per channel (the spec's); the arithmetic is integers, so in practice the bytes
are the same.  The kernel also compiles to PTX for sm_75 and sm_90.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from helpers import assert_image_close, on_ci
from imgtool import kernels
from imgtool.backends import cpu
from imgtool.backends.cuda import NVCC_OPTIONS
from imgtool.backends.cudaboxes import BLOCK, SEGMENT, boxes_defines, boxes_source, enqueue_boxes, level_bytes

TOLERANCE = 1
ON_CI = on_ci()
BX, BY = BLOCK
ROW_SPAN = BX * SEGMENT  # pixels a block covers along a row (4096)
COL_SPAN = BY * SEGMENT  # rows a block covers down a column (1024)

# (width, height): 1x1, 1xN, Nx1, odd sizes; block-1 / block / block+1 for the
# columns' 32-column blocks; a segment's length -1 / = / +1 along rows and down
# columns; a block of segments -1 / = / +1 both ways.
SIZES = [
    (1, 1), (1, 13), (13, 1), (2, 3), (37, 41), (65, 63),
    (BX - 1, 5), (BX, 6), (BX + 1, 7),
    (SEGMENT - 1, 3), (SEGMENT, 2), (SEGMENT + 1, 4),
    (3, SEGMENT - 1), (2, SEGMENT), (5, SEGMENT + 1),
    (ROW_SPAN - 1, 2), (ROW_SPAN, 1), (ROW_SPAN + 1, 2),
    (3, COL_SPAN - 1), (1, COL_SPAN), (2, COL_SPAN + 1),
]
MID_SIGMAS = [1.7, 4.5, 12.0, 30.0, 2.2, 7.1, 19.5]


def _id(size):
    return f"{size[0]}x{size[1]}"


def _noise(h, w, c, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if c == 4:
        pick = rng.random((h, w))
        a[..., 3][pick < 0.25] = 0
        a[..., 3][(pick >= 0.25) & (pick < 0.5)] = 255
    return a


class Runner:
    """The kernel on one runtime: compiled once per channel count, run synchronously."""

    def __init__(self, runtime: str):
        if runtime == "host":
            from imgtool.backends import hostcuda as driver
            from imgtool.backends.hostcuda import SourceModule
        else:
            try:
                import pycuda.driver as driver
                from pycuda.compiler import SourceModule
                driver.init()
                if driver.Device.count() < 1:
                    raise RuntimeError("no CUDA device")
            except Exception as exc:  # noqa: BLE001 - any failure means no GPU here
                pytest.skip(f"no GPU here: {exc}")
        driver.init()
        self.driver, self.SourceModule = driver, SourceModule
        self.context = driver.Device(0).make_context()
        self.modules = {}
        self.buffers = {}

    def module(self, channels):
        if channels not in self.modules:
            self.modules[channels] = self.SourceModule(
                boxes_source(channels), options=list(NVCC_OPTIONS),
                include_dirs=[str(kernels.KERNEL_DIR)], no_extern_c=True)
        return self.modules[channels]

    def buffer(self, name, nbytes):
        # Exactly the size asked for, new each time: the host build's red zones
        # around it catch a write past the end, its poison a read of unwritten memory.
        old = self.buffers.pop(name, None)
        if old is not None:
            old.free()
        self.buffers[name] = self.driver.mem_alloc(max(nbytes, 1))
        return self.buffers[name]

    def blur(self, img: np.ndarray, sigma: float) -> np.ndarray:
        h, w, c = img.shape
        src = self.buffer("src", img.nbytes)
        self.driver.memcpy_htod(src, np.ascontiguousarray(img))
        dst = self.buffer("dst", img.nbytes)
        enqueue_boxes(self.module(c).get_function, self.buffer, src, dst, w, h, c, sigma)
        out = np.empty_like(img)
        self.driver.memcpy_dtoh(out, dst)
        for name, alloc in self.buffers.items():
            assert getattr(alloc, "canaries_intact", lambda: True)(), f"a kernel wrote past {name}"
        return out

    def close(self):
        for alloc in self.buffers.values():
            alloc.free()
        self.buffers.clear()
        self.context.pop()


@pytest.fixture(scope="module", params=["host", pytest.param("pycuda", marks=pytest.mark.gpu)])
def kernel(request):
    runner = Runner(request.param)
    yield runner
    runner.close()


@pytest.mark.parametrize("size", SIZES, ids=_id)
@pytest.mark.parametrize("channels", [3, 4])
def test_kernel_matches_cpu(kernel, size, channels):
    w, h = size
    i = SIZES.index(size)
    img = _noise(h, w, channels, seed=i * 10 + channels)
    for sigma in (1.0, MID_SIGMAS[i % len(MID_SIGMAS)], 50.0):
        want = cpu.boxes_array(img, sigma)
        assert_image_close(kernel.blur(img, sigma), want, TOLERANCE, f"{w}x{h}x{channels} sigma {sigma}")


@pytest.mark.parametrize("sigma", [1.0, 1.15, 2.5, 3.0, 6.0, 10.0, 15.5, 25.0, 40.0, 45.36, 50.0])
def test_kernel_matches_numpy_path_over_sigmas(kernel, sigma):
    img = _noise(47, 53, 4, seed=int(sigma * 100))
    assert_image_close(kernel.blur(img, sigma), cpu.boxes_array(img, sigma, fast=False), TOLERANCE, f"sigma {sigma}")


def test_kernel_checks_its_arguments_before_any_launch(kernel):
    calls = []

    def function(name):
        calls.append(name)
        raise AssertionError("launched")

    for bad in [dict(width=0), dict(height=2**31), dict(channels=2), dict(sigma=0.5), dict(sigma=51.0),
                dict(width=True)]:
        args = dict(width=4, height=4, channels=3, sigma=2.0) | bad
        with pytest.raises(ValueError):
            enqueue_boxes(function, kernel.buffer, None, None, args["width"], args["height"], args["channels"],
                          args["sigma"])
    assert calls == []


def test_level_buffers_hold_the_first_pass():
    # The rows' first level is w + 2 (extent - r1 - 1) wide; the columns' as much taller.
    from imgtool.backends.boxblur import box_cascade, extent

    p = box_cascade(10.0)
    grow = 2 * (extent(p) - int(p[0, 0]) - 1)
    assert level_bytes(100, 20, 3, 10.0) == 2 * 3 * max(20 * (100 + grow), (20 + grow) * 100)


# ---- PTX -------------------------------------------------------------------------


def _nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None and os.access("/usr/local/cuda/bin/nvcc", os.X_OK):
        nvcc = "/usr/local/cuda/bin/nvcc"
    if nvcc is None:
        if ON_CI:
            pytest.fail("nvcc is missing on CI: the kernels must be compiled to PTX there")
        pytest.skip("nvcc is not installed")
    return nvcc


@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_kernel_compiles_to_ptx(tmp_path, arch):
    nvcc = _nvcc()
    ptxas = shutil.which("ptxas") or os.path.join(os.path.dirname(nvcc), "ptxas")
    for channels in (3, 4):
        src = tmp_path / f"boxblur_{channels}.cu"
        src.write_text(boxes_source(channels))
        ptx = src.with_suffix(".ptx")
        run = subprocess.run([nvcc, "--ptx", f"-arch={arch}", *NVCC_OPTIONS, "-I", str(kernels.KERNEL_DIR),
                              "-o", str(ptx), str(src)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        text = ptx.read_text()
        for axis in ("rows", "cols"):
            for kind in ("first", "mid", "last"):
                assert f".entry boxes_{axis}_{kind}(" in text
        check = subprocess.run([ptxas, f"-arch={arch}", str(ptx), "-o", str(ptx.with_suffix(".cubin"))],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    assert boxes_defines(3)["SEGMENT"] == SEGMENT
