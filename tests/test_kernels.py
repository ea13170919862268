"""The kernels (kernels/*.cu) against the cpu backend, through the cuda backend's own code.

Every comparison runs on the CPU build of the kernels (runtime "host", always)
and, in the ``gpu`` group, on a real GPU through PyCUDA (skipped where there
is none).  Sizes sweep the block boundaries of every kernel; the tolerance is
1 per channel, as the spec promises (in practice the host build is bit-exact).
Every kernel also compiles to PTX with nvcc for sm_75 and sm_90.

The host runtime runs in hostcuda's check mode (the GPU sanitizer of
imgtool/backends/hostcuda/sanitizer.py) unless IMGTOOL_HOSTCUDA_CHECK=0: every
launch runs under several thread and block orders and capped grids, on buffers
against guard pages, with array bounds and barriers checked, and must give the
same bytes every time.  The backend's device buffers are allocated at their
exact size here (not rounded up, not reused), so the guard pages sit at the
real end of every image.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import assert_image_close, on_ci
from imgtool import kernels
from imgtool.backends import cuda as cuda_backend
from imgtool.backends.cuda import dispatcher as cuda_dispatcher
from imgtool.backends import hostcuda
from imgtool.backends.cpu import CpuBackend
from imgtool.backends.cuda import CudaBackend, kernel_source, module_defines, thumbnail_stages
from imgtool.backends.filters import lanczos_coefficients, reduce_factors, reduce_multiplier
from imgtool.errors import BackendUnavailable, GPUError
from imgtool.ops import Settings, blur_radius

TOLERANCE = 1
ON_CI = on_ci()
# The sanitizer is on for these tests unless turned off explicitly (CI never does).
CHECK = os.environ.get("IMGTOOL_HOSTCUDA_CHECK", "1").strip() != "0"

BX, BY = cuda_backend.RESAMPLE_BLOCK  # 32 x 8, also halfsize's block
BOX_ROWS = cuda_backend.BOX_BLOCK[1] * cuda_backend.BOX_PIXELS  # box121's tile: 32 x 32
TILE_W = cuda_backend.GAUSS_H_BLOCK[0] * cuda_backend.GAUSS_H_PIXELS  # gauss_h's row tile (128)
TILE_V = cuda_backend.GAUSS_V_BLOCKS[0][1] * cuda_backend.GAUSS_V_PIXELS  # gauss_v's column tile (16, small radii)
assert (BX, BY) == cuda_backend.BOX_BLOCK == cuda_backend.HALFSIZE_BLOCK

# (width, height): 1x1, 1xN, Nx1, block-1 / block / block+1 in each direction
# (heights 31..33 are box121's tile too), the Gaussian tiles' edges, odd primes.
SIZES = [
    (1, 1), (1, 13), (13, 1), (2, 2), (3, 2),
    (BX - 1, BY - 1), (BX, BY), (BX + 1, BY + 1),
    (BY - 1, BX - 1), (BY, BX), (BY + 1, BX + 1),
    (5, BOX_ROWS - 1), (6, BOX_ROWS), (7, BOX_ROWS + 1),
    (TILE_W - 1, 3), (TILE_W, 5), (TILE_W + 1, 2),
    (3, TILE_V - 1), (4, TILE_V), (5, TILE_V + 1),
    (37, 41), (97, 5), (5, 97), (65, 63),
]
# None: the 3x3 kernel; below 1 the direct taps (blur.cu's gauss_h/gauss_v); from 1 the box cascade (boxblur.cu).
SIGMAS = [None, 0.5, 0.8, 1.3, 4.0]


def _id(size):
    return f"{size[0]}x{size[1]}"


def make_image(width: int, height: int, channels: int, seed: int) -> np.ndarray:
    """Noise (the hardest case for rounding), with alpha that includes 0 and 255 and values between."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if channels == 4:
        pick = rng.random((height, width))
        img[..., 3][pick < 0.25] = 0
        img[..., 3][(pick >= 0.25) & (pick < 0.5)] = 255
    return img


@pytest.fixture(scope="module")
def cpu():
    return CpuBackend()


_backends: dict[str, CudaBackend] = {}


@contextlib.contextmanager
def exact_device_buffers():
    """The backend's device buffers at the size asked for, fresh for every job (no slack for an overrun to hide in)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cuda_dispatcher, "round_up", lambda n: max(1, n))
        mp.setattr(cuda_dispatcher, "KEEP_BUFFER_BYTES", -1)  # a job's buffers are freed when it is done
        yield


@pytest.fixture(scope="module", autouse=True)
def _sanitizer():
    """hostcuda's check mode for every kernel module built by these tests."""
    with exact_device_buffers(), hostcuda.checking(CHECK):
        yield


@pytest.fixture(
    scope="module",
    params=["host", pytest.param("pycuda", marks=pytest.mark.gpu)],
)
def kernel_backend(request):
    """The cuda backend on the CPU build of the kernels, and (gpu group) on a real GPU."""
    runtime = request.param
    if runtime not in _backends:
        try:
            _backends[runtime] = CudaBackend(runtime)
        except BackendUnavailable as exc:
            if runtime == "pycuda":
                pytest.skip(f"no GPU here: {exc.message}")
            raise  # the host build must work everywhere (g++ is required)
    yield _backends[runtime]


def teardown_module():
    for backend in _backends.values():
        backend.close()
    _backends.clear()


# ---- thumbnail (resample.cu) -------------------------------------------------


# (in_size, out_size, box): the box a reduce by 5 of 4032 leaves is 0..806.4 of 807.
@pytest.mark.parametrize(
    "in_size, out_size, box",
    [(1, 1, None), (1, 5, None), (5, 1, None), (4032, 256, None), (256, 4032, None), (97, 13, None), (13, 97, None),
     (807, 256, (0.0, 4032 / 5)), (34, 3, (0.0, 101 / 3)), (20, 7, (0.5, 19.25))],
)
def test_lanczos_coefficients(in_size, out_size, box):
    bounds, coeffs, ksize = lanczos_coefficients(in_size, out_size, *(box or ()))
    assert bounds.shape == (out_size, 2) and coeffs.shape == (out_size, ksize)
    assert bounds.dtype == coeffs.dtype == np.int32 and not coeffs.flags.writeable
    first, count = bounds[:, 0], bounds[:, 1]
    assert (first >= 0).all() and (count >= 1).all() and (first + count <= in_size).all() and (count <= ksize).all()
    # Each row sums to one in 22-bit fixed point, give or take the rounding of its taps.
    sums = coeffs.astype(np.int64).sum(axis=1)
    assert (np.abs(sums - (1 << 22)) <= count).all()
    assert not coeffs[np.arange(ksize)[None, :] >= count[:, None]].any()  # zero past count


def test_lanczos_coefficients_box_is_float32_and_cached():
    # Pillow parses the box as C floats: any double that rounds to the same float is the same box.
    a = lanczos_coefficients(807, 256, 0.0, 4032 / 5)
    assert lanczos_coefficients(807, 256, 0, float(np.float32(4032 / 5))) is a
    assert lanczos_coefficients(807, 256) is not a  # 0..807 is another box
    assert lanczos_coefficients(97, 13, 0.0, 97.0) is lanczos_coefficients(97, 13)
    for bad in ((-0.5, 10.0), (0.0, 97.5), (5.0, 4.0), (0.0, float("nan"))):
        with pytest.raises(ValueError):
            lanczos_coefficients(97, 13, *bad)
    with pytest.raises(TypeError):
        lanczos_coefficients(97, 13, True)


def test_reduce_multiplier_is_pillows():
    # Powers of two are Pillow's exact shifts (2x2: >> 2); others round down from 2**32 / (256 n).
    assert reduce_multiplier(1) == 1 << 24 and reduce_multiplier(4) == 1 << 22 and reduce_multiplier(16) == 1 << 20
    for n in (3, 5, 6, 7, 9, 15, 25, 233 * 3):
        m = reduce_multiplier(n)
        assert abs(m - 2**32 / (256 * n)) <= 1 + 2**32 / (256 * n) * 2**-23  # float32, then truncated
        assert ((255 * n + n // 2) * m) >> 24 == 255  # an all-white block stays white, below 2**32


# (w, h, thumbnail w, h, the reduce factors Pillow picks): unequal factors, a
# factor of 1 on one axis, sizes that are not a multiple of the factor (partial
# last column/row/corner), Pillow's special cases 2x2..5x5, 1xN and Nx1, a
# reduce followed by one pass only, and a very large factor.
REDUCE_CASES = [
    (101, 61, 9, 4, (3, 5)),
    (64, 53, 20, 3, (1, 5)),
    (97, 40, 5, 13, (6, 1)),
    (40, 90, 40, 7, (1, 4)),  # reduce, then the vertical pass only
    (91, 33, 11, 33, (2, 1)),  # reduce, then the horizontal pass only
    (61, 47, 10, 7, (2, 2)),
    (100, 100, 11, 11, (3, 3)),
    (125, 125, 10, 10, (4, 4)),
    (151, 151, 10, 10, (5, 5)),
    (30, 61, 20, 10, (1, 2)),
    (61, 30, 10, 20, (2, 1)),
    (30, 91, 20, 10, (1, 3)),
    (91, 30, 10, 20, (3, 1)),
    (96, 96, 16, 16, (2, 2)),  # a multiple of the factor: no partial blocks
    (3 * (2 * BX + 1) + 2, 4 * (2 * BY + 1) + 3, 2 * BX + 1, 2 * BY + 1, (1, 1)),  # 3.03 / 3: no reduce
    (4 * (2 * BX + 1) + 2, 4 * (2 * BY + 1) + 3, 2 * BX + 1, BY + 1, (1, 2)),
    (700, 9, 1, 1, (233, 3)),
]


@pytest.mark.parametrize("w, h, tw, th, factors", REDUCE_CASES, ids=lambda v: str(v).replace(" ", ""))
def test_reduce_cases_exercise_what_they_say(w, h, tw, th, factors):
    assert reduce_factors(w, h, tw, th) == factors
    stages = thumbnail_stages(w, h, tw, th)
    if factors != (1, 1):
        assert stages[0] == ("reduce", *factors)
    passes = [s[0] for s in stages if s[0] != "reduce"]
    assert sorted(passes) == (["h"] if tw != w else []) + (["v"] if th != h else [])


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("w, h, tw, th, factors", REDUCE_CASES, ids=lambda v: str(v).replace(" ", ""))
def test_thumbnail_reduce_matches_cpu(kernel_backend, cpu, w, h, tw, th, factors, channels):
    img = make_image(w, h, channels, seed=w * 1000 + h)
    assert_image_close(
        kernel_backend.thumbnail(img, tw, th), cpu.thumbnail(img, tw, th), TOLERANCE,
        f"thumbnail {w}x{h}x{channels} -> {tw}x{th} (reduce {factors})",
    )


def test_thumbnail_reduce_of_white_stays_white(kernel_backend, cpu):
    # Large blocks of 255 (the largest sums), and opaque RGBA through premultiplication.
    img = np.full((300, 700, 4), 255, np.uint8)
    out = kernel_backend.thumbnail(img, 3, 2)
    assert np.array_equal(out, cpu.thumbnail(img, 3, 2)) and (out == 255).all()


def _thumb_targets(w: int, h: int) -> list[tuple[int, int]]:
    return sorted(
        {
            (max(1, w * 3 // 8), max(1, h * 3 // 8)),  # downscale both ways
            (w + 5, h + 2),  # upscale
            (max(1, w // 2), h),  # horizontal pass only
            (w, max(1, h // 3)),  # vertical pass only
            (max(1, w - 1), max(1, h // 4)),  # Pillow runs the vertical pass first here
        }
        - {(w, h)}
    )


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("size", SIZES, ids=_id)
def test_thumbnail_matches_cpu(kernel_backend, cpu, size, channels):
    w, h = size
    img = make_image(w, h, channels, seed=w * 1000 + h)
    for tw, th in _thumb_targets(w, h):
        assert_image_close(
            kernel_backend.thumbnail(img, tw, th), cpu.thumbnail(img, tw, th), TOLERANCE,
            f"thumbnail {w}x{h}x{channels} -> {tw}x{th}",
        )


@pytest.mark.parametrize("channels", [3, 4])
def test_thumbnail_large_downscale(kernel_backend, cpu, channels):
    # A scale of 11 gives ksize 67: long coefficient rows, many output blocks.
    img = make_image(701, 523, channels, seed=7)
    assert_image_close(kernel_backend.thumbnail(img, 64, 48), cpu.thumbnail(img, 64, 48), TOLERANCE)


def test_thumbnail_same_size_is_a_copy(kernel_backend):
    img = make_image(9, 7, 4, seed=1)
    out = kernel_backend.thumbnail(img, 9, 7)
    assert out is not img and np.array_equal(out, img)


# ---- blur (blur.cu) ----------------------------------------------------------


@pytest.mark.parametrize("sigma", SIGMAS, ids=lambda s: f"sigma={s}")
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("size", SIZES, ids=_id)
def test_blur_matches_cpu(kernel_backend, cpu, size, channels, sigma):
    w, h = size
    img = make_image(w, h, channels, seed=w * 7 + h)
    assert_image_close(
        kernel_backend.blur(img, sigma), cpu.blur(img, sigma), TOLERANCE, f"blur {w}x{h}x{channels} {sigma}"
    )


@pytest.mark.parametrize("sigma", [12.0, 50.0])
@pytest.mark.parametrize("size", [(1, 1), (7, 5), (33, 30)], ids=_id)
@pytest.mark.parametrize("channels", [3, 4])
def test_blur_radius_larger_than_image(kernel_backend, cpu, size, channels, sigma):
    w, h = size
    assert blur_radius(sigma) > max(w, h)
    img = make_image(w, h, channels, seed=3)
    assert_image_close(kernel_backend.blur(img, sigma), cpu.blur(img, sigma), TOLERANCE)


def test_blur_tall_image_column_tiles(kernel_backend, cpu):
    # gauss_v's column tile: several tiles down, a narrow last one across.
    img = make_image(19, 300, 4, seed=11)
    assert_image_close(kernel_backend.blur(img, 2.2), cpu.blur(img, 2.2), TOLERANCE)


# ---- low-quality (downscale.cu) ------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("size", SIZES + [(2 * BX + 1, 2 * BY + 1), (2 * BX, 2 * BY)], ids=_id)
def test_halfsize_matches_cpu(kernel_backend, cpu, size, channels):
    w, h = size
    img = make_image(w, h, channels, seed=w + h)
    assert_image_close(kernel_backend.halfsize(img), cpu.halfsize(img), 0, f"halfsize {w}x{h}x{channels}")


# ---- all operations of one upload, random sizes --------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    w=st.integers(1, 90),
    h=st.integers(1, 90),
    channels=st.sampled_from([3, 4]),
    thumb_width=st.integers(1, 100),
    sigma=st.sampled_from([None, 0.3, 0.5, 1.3, 4.0]),
    seed=st.integers(0, 2**16),
)
def test_apply_random_sizes(kernel_backend, cpu, w, h, channels, thumb_width, sigma, seed):
    img = make_image(w, h, channels, seed)
    s = Settings(thumb_width=thumb_width, blur_sigma=sigma)
    got, want = kernel_backend.apply(img, s), cpu.apply(img, s)
    assert list(got) == list(want)
    for op in want:
        assert_image_close(got[op], want[op], TOLERANCE, f"{op} of {w}x{h}x{channels}")


def test_apply_runs_only_the_requested_operations(kernel_backend, cpu):
    img = make_image(50, 20, 3, seed=5)
    s = Settings(ops=("low-quality", "blur"), blur_sigma=None)
    got = kernel_backend.apply(img, s)
    assert list(got) == ["low-quality", "blur"]
    assert_image_close(got["blur"], cpu.blur(img, None), TOLERANCE)


# ---- the sanitizer on faults planted in a scratch copy of blur.cu -------------------

# (what to change in blur.cu, the operation, what the sanitizer must report)
BLUR_FAULTS = {
    # gauss_h loads the rows of its tile past the last row unclamped (they are never stored)
    "row-past-the-end": ("const int ly = min(y, height - 1);", "const int ly = y;", 0.8,
                         r"kernel gauss_h \(grid \(1,10,1\), block \(32,4,1\); .*invalid read at byte offset 4551 "
                         r"of parameter #0 \(a 4551-byte buffer: 1 byte\(s\) past its last byte\)"),
    # box121 without the barrier before its row loop reloads the tile
    "missing-barrier": ("        __syncthreads();  // the next rows overwrite the tile\n", "", None,
                        r"kernel box121 \(grid \(2,2,1\), block \(32,8,1\)\): a race: .*grid capped to"),
}


@pytest.mark.parametrize("fault", sorted(BLUR_FAULTS))
def test_sanitizer_finds_a_fault_planted_in_blur_cu(monkeypatch, fault):
    old, new, sigma, report = BLUR_FAULTS[fault]
    original = kernels.source

    def planted(name):
        text = original(name)
        if name == "blur.cu":
            assert old in text
            text = text.replace(old, new)
        return text

    monkeypatch.setattr(kernels, "source", planted)
    img = make_image(41, 37, 3, seed=4)  # 4551 bytes
    with hostcuda.checking():
        backend = CudaBackend("host")
        try:
            with pytest.raises(GPUError, match=report):
                backend.blur(img, sigma)
        finally:
            backend.close()


# ---- other block shapes ----------------------------------------------------------
#
# Every kernel takes its block geometry from the generated prelude, so it must
# compute the same pixels with any other one: non-power-of-two blocks, other
# pixels per thread, and the column tile's other shapes.  (The sanitizer checks
# these launches as it does the others.)
OTHER_GEOMETRY = {
    "RESAMPLE_BLOCK": (16, 3),
    "HALFSIZE_BLOCK": (8, 5),
    "BOX_BLOCK": (16, 3),
    "BOX_PIXELS": 3,
    "GAUSS_H_BLOCK": (8, 3),
    "GAUSS_H_PIXELS": 3,
    "GAUSS_V_BLOCKS": ((8, 3), (4, 6)),
    "GAUSS_V_PIXELS": 5,
}
# Across that geometry's edges: 16 x 3 and 8 x 5 blocks, box121's 9 rows, the
# row tile's 24 columns, the column tile's 15 rows; then odd sizes.
OTHER_SIZES = [(1, 1), (15, 2), (16, 3), (17, 4), (7, 4), (8, 5), (9, 6), (5, 8), (6, 9), (7, 10),
               (23, 3), (24, 2), (25, 5), (3, 14), (4, 15), (5, 16), (37, 41)]


@contextlib.contextmanager
def other_block_shapes():
    """A host backend whose kernels are built and launched with OTHER_GEOMETRY."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in OTHER_GEOMETRY.items():
            # plan decides the launches; the package re-exports its constants.
            for module in (cuda_backend, cuda_backend.plan):
                assert hasattr(module, name), name
                mp.setattr(module, name, value)
        backend = CudaBackend("host")
        try:
            yield backend
        finally:
            backend.close()


def _shape_runs(w: int, h: int, channels: int) -> list:
    """(what, the call on a backend, tolerance against the cpu backend) for one image size."""
    runs = [(f"blur {sigma}", lambda b, img, s=sigma: b.blur(img, s), TOLERANCE) for sigma in (None, 0.8, 1.3)]
    runs += [(f"thumbnail -> {tw}x{th}", lambda b, img, t=(tw, th): b.thumbnail(img, *t), TOLERANCE)
             for tw, th in _thumb_targets(w, h)]
    runs.append(("halfsize", lambda b, img: b.halfsize(img), 0))
    return runs


@pytest.mark.parametrize("channels", [3, 4])
def test_kernels_with_other_block_shapes(cpu, channels):
    images = {(w, h): make_image(w, h, channels, seed=w * 31 + h) for w, h in OTHER_SIZES}
    usual_backend = CudaBackend("host")  # the usual geometry: run before the constants change
    try:
        usual = {size: [run(usual_backend, img) for _, run, _ in _shape_runs(*size, channels)]
                 for size, img in images.items()}
    finally:
        usual_backend.close()
    with other_block_shapes() as backend:
        assert module_defines("downscale.cu", channels)["BLOCK_Y"] == 5
        for size, img in images.items():
            what = f"{size[0]}x{size[1]}x{channels} with other block shapes"
            for (op, run, tolerance), same in zip(_shape_runs(*size, channels), usual[size]):
                got = run(backend, img)
                assert_image_close(got, run(cpu, img), tolerance, f"{op} {what}")
                assert np.array_equal(got, same), f"{op} {what}: not the bytes of the usual block shapes"


def test_the_host_kernels_here_run_under_the_sanitizer():
    """What this module's host tests run: every kernel's launches checked, unless IMGTOOL_HOSTCUDA_CHECK=0."""
    from imgtool.backends.hostcuda import sanitizer

    before = sanitizer.stats["launches"].copy()
    backend = CudaBackend("host")
    try:
        # 30 x 20 -> 4 x 3: a reduce by 2 x 2, then both Lanczos passes; every blur; the placeholder.
        img = make_image(30, 20, 4, seed=2)
        backend.apply(img, Settings(thumb_width=4, blur_sigma=1.3))
        backend.blur(img, None)
        backend.blur(img, 0.8)
    finally:
        backend.close()
    checked = sanitizer.stats["launches"] - before
    for names in KERNEL_FILES.values():
        for name in names:
            assert (checked[name] > 0) is CHECK, f"{name}: {checked[name]} checked launches, check mode {CHECK}"


# ---- PTX ---------------------------------------------------------------------

KERNEL_FILES = {"resample.cu": ["reduce_box", "resample_h", "resample_v"], "blur.cu": ["box121", "gauss_h", "gauss_v"],
                "downscale.cu": ["halfsize"],
                "boxblur.cu": [f"boxes_{axis}_{kind}" for axis in ("rows", "cols") for kind in ("first", "mid", "last")]}


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
@pytest.mark.parametrize("name", sorted(KERNEL_FILES))
def test_kernels_compile_to_ptx(tmp_path, name, arch):
    nvcc = _nvcc()
    # Both channel counts; blur.cu at its largest radius (the most shared memory).
    variants = [(4, 150), (3, 1)]
    procs = []
    for channels, radius in variants:
        src = tmp_path / f"{channels}_{radius}_{name}"
        src.write_text(kernel_source(name, module_defines(name, channels, radius)))
        ptx = src.with_suffix(".ptx")
        cmd = [nvcc, "--ptx", f"-arch={arch}", *cuda_backend.NVCC_OPTIONS,
               "-I", str(kernels.KERNEL_DIR), "-o", str(ptx), str(src)]
        procs.append((ptx, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for ptx, proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"nvcc failed for {ptx.name}:\n{out}"
        text = ptx.read_text()
        for kernel in KERNEL_FILES[name]:
            assert f".entry {kernel}(" in text, f"{kernel} missing from {ptx.name}"
        # The float sums must round like the cpu backend's: no fused multiply-add.
        assert "fma.rn.f32" not in text, f"{ptx.name} contracts float multiply-adds"
        # ptxas checks the resources (48 KiB of static shared memory, registers).
        ptxas = shutil.which("ptxas") or os.path.join(os.path.dirname(nvcc), "ptxas")
        check = subprocess.run([ptxas, f"-arch={arch}", str(ptx), "-o", str(ptx.with_suffix(".cubin"))],
                               capture_output=True, text=True, timeout=300)
        assert check.returncode == 0, f"ptxas rejected {ptx.name}:\n{check.stderr}"
