"""The cpu backend's paths agree: the C fast paths, Pillow's filters and the numpy references."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from helpers import on_ci
from imgtool.backends import cpu
from imgtool.backends.cpu import CpuBackend, premultiply, unpremultiply
from imgtool.imageio import libwebp as webp
from imgtool.ops import THUMBNAIL_REDUCING_GAP, Settings, output_size

SIZES = [(1, 1), (1, 9), (9, 1), (2, 2), (3, 3), (3, 5), (17, 33), (64, 31), (5, 300), (129, 7)]


def _image(h, w, c, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if c == 4:
        a[..., 3][rng.random((h, w)) < 0.2] = 0
        a[..., 3][rng.random((h, w)) < 0.2] = 255
    return a


# ---- references written from the arithmetic contract, not taken from imgtool ----------


def _clamped(n: int, offset: int) -> np.ndarray:
    """Indices 0..n-1 moved by ``offset``, held at the edges (clamp to edge)."""
    return np.clip(np.arange(n) + offset, 0, n - 1)


def blur121_reference(img: np.ndarray) -> np.ndarray:
    """The old worker's kernel: [1 2 1] down and across, clamped edges, (sum + 8) // 16 in integers."""
    h, w = img.shape[:2]
    a = img.astype(np.int64)
    rows = sum(weight * a[_clamped(h, dy)] for dy, weight in ((-1, 1), (0, 2), (1, 1)))
    both = sum(weight * rows[:, _clamped(w, dx)] for dx, weight in ((-1, 1), (0, 2), (1, 1)))
    return ((both + 8) // 16).astype(np.uint8)


def gaussian_taps_reference(sigma: float) -> np.ndarray:
    """exp(-k^2 / 2 sigma^2) for k = -r..r, r = ceil(3 sigma) (at least 1), summing to 1, as float32."""
    r = max(1, math.ceil(3 * sigma))
    k = np.arange(-r, r + 1, dtype=np.float64)
    taps = np.exp(-(k * k) / (2.0 * sigma * sigma))
    return (taps / taps.sum()).astype(np.float32)


def gaussian_reference(img: np.ndarray, sigma: float) -> np.ndarray:
    """The separable Gaussian: along rows then columns, each a float32 sum taken tap by tap in
    offset order over clamped neighbours, then rounded half up and clipped to 0..255."""
    taps = gaussian_taps_reference(sigma)
    r = len(taps) // 2
    h, w = img.shape[:2]
    src = img.astype(np.float32)
    across = np.zeros(src.shape, np.float32)
    for i, t in enumerate(taps):
        across += src[:, _clamped(w, i - r)] * t
    down = np.zeros(src.shape, np.float32)
    for i, t in enumerate(taps):
        down += across[_clamped(h, i - r)] * t
    return np.clip(np.floor(down + np.float32(0.5)), 0, 255).astype(np.uint8)


def _reference(a, sigma):
    """Straight from the arithmetic contract, in numpy, on premultiplied alpha (Pillow's RGBa)."""
    src = premultiply(a) if a.shape[2] == 4 else a
    out = blur121_reference(src) if sigma is None else gaussian_reference(src, sigma)
    return unpremultiply(out) if a.shape[2] == 4 else out


def test_the_references_hold_what_the_contract_says():
    # A lone bright pixel spreads as the kernel's own weights.
    impulse = np.zeros((5, 5, 3), np.uint8)
    impulse[2, 2] = 160
    assert blur121_reference(impulse)[1:4, 1:4, 0].tolist() == [[10, 20, 10], [20, 40, 20], [10, 20, 10]]
    flat = np.full((4, 7, 4), 77, np.uint8)
    assert (blur121_reference(flat) == 77).all() and (gaussian_reference(flat, 3.3) == 77).all()
    taps = gaussian_taps_reference(1.0)
    assert len(taps) == 7 and abs(float(taps.sum()) - 1) < 1e-6 and taps[3] == taps.max()
    assert np.array_equal(taps, taps[::-1])


def test_c_fast_path_is_built():
    # CI builds the package with a C compiler: a missing extension there is a
    # packaging bug, not something to skip past.
    if cpu._cpufast is None and on_ci():
        pytest.fail("imgtool.backends._cpufast was not built")
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")


@pytest.mark.parametrize("c", [3, 4])
@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("sigma", [None, 0.5, 1.7, 6.0])
def test_blur_paths_agree_exactly(h, w, c, sigma):
    a = _image(h, w, c, seed=h * 1000 + w)
    ref = _reference(a, sigma)
    assert np.array_equal(cpu.blur_array(a, sigma, fast=False), ref)
    if cpu._cpufast is not None:
        assert np.array_equal(cpu.blur_array(a, sigma, fast=True), ref)


def test_blur_radius_larger_than_the_image():
    # The direct taps (what sigmas below 1 and the bench's control run) clamp past both edges.
    a = _image(4, 6, 3)
    assert np.array_equal(cpu.blur_array(a, 50.0), _reference(a, 50.0))


@pytest.mark.parametrize("c", [3, 4])
@pytest.mark.parametrize("h, w", SIZES)
def test_halfsize_takes_pixel_2x_plus_1(h, w, c):
    a = _image(h, w, c)
    ys = [min(2 * y + 1, h - 1) for y in range(max(1, h // 2))]
    xs = [min(2 * x + 1, w - 1) for x in range(max(1, w // 2))]
    assert np.array_equal(CpuBackend().halfsize(a), a[np.ix_(ys, xs)])


@pytest.mark.parametrize("c", [3, 4])
def test_apply_image_matches_array_methods(c):
    a = _image(300, 401, c)
    im = Image.fromarray(a)
    for sigma in (None, 2.0):
        s = Settings(blur_sigma=sigma)
        out = CpuBackend().apply_image(im, s)
        b = CpuBackend()
        assert np.array_equal(np.asarray(out["thumbnail"]), b.thumbnail(a, *output_size("thumbnail", 401, 300, s)))
        assert np.array_equal(np.asarray(out["blur"]), b.blur(a, sigma))
        assert np.array_equal(np.asarray(out["low-quality"]), b.halfsize(a))


@pytest.mark.parametrize("c", [3, 4])
@pytest.mark.parametrize(
    "h, w, th, tw", [(333, 517, 165, 256), (1000, 1543, 99, 153), (61, 101, 4, 9), (700, 40, 97, 40)]
)
def test_thumbnail_is_pillow_lanczos_with_reducing_gap(h, w, th, tw, c):
    # The contract: Image.resize(LANCZOS, reducing_gap=3.0), alpha premultiplied by Pillow.
    assert THUMBNAIL_REDUCING_GAP == 3.0
    a = _image(h, w, c)
    ref = np.asarray(Image.fromarray(a).resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0))
    assert np.array_equal(CpuBackend().thumbnail(a, tw, th), ref)


def test_thumbnail_reduces_first_where_the_scale_allows():
    # 1543 / 153 / 3 = 3.36: a reduce by 3 first, so not plain Lanczos (but close to it).
    a = _image(1000, 1543, 3)
    plain = np.asarray(Image.fromarray(a).resize((153, 99), Image.Resampling.LANCZOS))
    assert not np.array_equal(CpuBackend().thumbnail(a, 153, 99), plain)
    # Under a third of the scale again no reduce happens: plain Lanczos exactly.
    a = _image(333, 517, 3)
    plain = np.asarray(Image.fromarray(a).resize((256, 165), Image.Resampling.LANCZOS))
    assert np.array_equal(CpuBackend().thumbnail(a, 256, 165), plain)


@pytest.mark.parametrize("c", [3, 4])
@pytest.mark.parametrize("h, w", [(300, 256), (200, 100), (1, 1)])
def test_thumbnail_never_upscales(h, w, c):
    # An input no wider than the thumbnail keeps its size and its pixels.
    a = _image(h, w, c)
    s = Settings(ops=("thumbnail",))
    assert output_size("thumbnail", w, h, s) == (w, h)
    assert np.array_equal(np.asarray(CpuBackend().apply(a, s)["thumbnail"]), a)
    out = CpuBackend().apply_image(Image.fromarray(a), s)["thumbnail"]
    assert np.array_equal(out.to_array() if hasattr(out, "to_array") else np.asarray(out), a)


@pytest.mark.parametrize("c", [3, 4])
def test_webp_from_array_equals_from_image(c):
    a = _image(50, 70, c)
    im = Image.fromarray(a)
    assert webp.encode_simple(a, 80, 4, False) == webp.encode_simple(im, 80, 4, False)
    view = _image(100, 140, c)[::2, ::2]  # rows not contiguous: copied first
    assert webp.encode_simple(view, 80, 4, False) == webp.encode_simple(Image.fromarray(np.ascontiguousarray(view)), 80, 4, False)


@pytest.mark.parametrize("c", [3, 4])
@pytest.mark.parametrize("h, w", SIZES)
def test_c_halfsize_matches_pillow_path(h, w, c):
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    a = _image(h, w, c)
    got = np.frombuffer(cpu._cpufast.halfsize(a.tobytes(), None, w, h, c), np.uint8)
    assert np.array_equal(got.reshape(max(1, h // 2), max(1, w // 2), c), CpuBackend().halfsize(a))


def test_c_blur_into_given_buffer_equals_new_bytes():
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    a = _image(40, 30, 4)
    dst = bytearray(a.size)
    assert cpu._cpufast.blur121(a.tobytes(), dst, 30, 40, 4) is None
    assert bytes(dst) == cpu._cpufast.blur121(a.tobytes(), None, 30, 40, 4)
    with pytest.raises(ValueError):
        cpu._cpufast.blur121(b"short", None, 30, 40, 4)
    with pytest.raises(ValueError):
        cpu._cpufast.blur121(a.tobytes(), bytearray(10), 30, 40, 4)


def test_c_halfsize_into_given_buffer_equals_new_bytes():
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    a = _image(41, 31, 3)
    dst = bytearray(20 * 15 * 3)
    assert cpu._cpufast.halfsize(a.tobytes(), dst, 31, 41, 3) is None
    assert bytes(dst) == cpu._cpufast.halfsize(a.tobytes(), None, 31, 41, 3)
    with pytest.raises(ValueError, match="dst must hold 900 bytes"):
        cpu._cpufast.halfsize(a.tobytes(), bytearray(31 * 41 * 3), 31, 41, 3)


def test_scratch_reuses_its_buffers_and_keeps_no_more_than_its_limit():
    from imgtool.pixels import Scratch

    s = Scratch(keep=1000)
    a = s.take("blur", 600)
    a[:] = b"x" * 600
    b = s.take("blur", 400)  # smaller: the same memory
    assert len(b) == 400 and bytes(b[:3]) == b"xxx"
    assert s.kept_bytes == 600
    assert s.take("low-quality", 500) is None  # 600 + 500 would pass the limit
    assert len(s.take("low-quality", 300)) == 300
    assert s.kept_bytes == 900
    c = s.take("blur", 700)  # larger: the old one is dropped, and 700 + 300 fits
    assert len(c) == 700 and bytes(c[:3]) == b"\0\0\0"
    assert s.kept_bytes == 1000
    assert s.take("blur", 800) is None and s.kept_bytes == 300  # not kept either


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_outputs_through_a_scratch_equal_fresh_ones_image_after_image(mode):
    # One thread's buffers carried from image to image, smaller, larger, odd
    # sizes: every output equals what a call without them gives.
    from imgtool.pixels import Scratch

    backend, scratch = CpuBackend(), Scratch()
    c = len(mode)
    for i, (h, w) in enumerate([(300, 401), (17, 9), (1, 1), (513, 640), (2, 3), (300, 401)]):
        im = Image.fromarray(_image(h, w, c, seed=i), mode)
        for settings in (Settings(), Settings(blur_sigma=2.0)):
            fresh = backend.apply_image(im, settings)
            reused = backend.apply_image(im, settings, scratch)
            for op in settings.ops:
                assert np.array_equal(np.asarray(reused[op]), np.asarray(fresh[op])), (op, h, w)
    assert 0 < scratch.kept_bytes <= 513 * 640 * c * 5 // 4 + 4 * c


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("h, w", [(1, 1), (1, 9), (9, 1), (2, 2), (3, 7), (211, 333), (1500, 1200)])
def test_arrow_source_reads_the_image_in_place_with_the_same_results(mode, h, w):
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    from imgtool.backends.filters import gaussian_weights

    c = len(mode)
    a = _image(h, w, c, seed=w)
    im = Image.fromarray(a, mode)
    source = cpu.c_source(im)
    assert isinstance(source, tuple), "a decoded image should be one block, exported in place"
    raw = a.tobytes()
    f = cpu._cpufast
    assert f.blur121(source, None, w, h, c) == f.blur121(raw, None, w, h, c)
    assert f.gaussian(source, None, w, h, c, gaussian_weights(1.5)) == f.gaussian(raw, None, w, h, c, gaussian_weights(1.5))
    assert f.halfsize(source, None, w, h, c) == f.halfsize(raw, None, w, h, c)
    with pytest.raises(ValueError):
        f.blur121(source, None, w + 1, h, c)  # the export's size is checked


def test_webp_encode_while_another_thread_is_importing_numpy(monkeypatch):
    # A first import of numpy in progress elsewhere puts a module without
    # ndarray yet into sys.modules; an encode at that moment must not trip on it.
    import sys
    import types

    im = Image.fromarray(_image(20, 30, 3))
    expected = webp.encode_simple(im, 80, 4, False)
    monkeypatch.setitem(sys.modules, "numpy", types.ModuleType("numpy"))
    assert webp.encode_simple(im, 80, 4, False) == expected


_LANCZOS_CASES = [
    # (in w, in h, out w, out h): reductions of every kind, both pass orders,
    # one pass only, upscales, 1-pixel edges, and the thumbnail's own sizes.
    (640, 480, 256, 192), (1704, 2272, 256, 341), (4032, 3024, 256, 192), (1024, 768, 256, 192),
    (300, 2000, 256, 1707), (2000, 300, 256, 38), (300, 900, 300, 100), (900, 300, 100, 300),
    (257, 64, 256, 64), (64, 257, 64, 256), (17, 13, 40, 29), (1, 1, 1, 1), (1, 50, 1, 7),
    (50, 1, 7, 1), (3, 5, 1, 1), (511, 383, 256, 191),
]


@pytest.mark.parametrize("w, h, ow, oh", _LANCZOS_CASES)
def test_c_lanczos_equals_pillow_resize(w, h, ow, oh):
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    im = Image.fromarray(_image(h, w, 3, seed=w * 7 + h))
    want = im.resize((ow, oh), Image.Resampling.LANCZOS).tobytes()
    assert cpu._cpufast.lanczos(cpu.arrow_source(im), None, w, h, ow, oh, (0.0, 0.0, w, h)) == want


@pytest.mark.parametrize("seed", range(12))
def test_c_lanczos_with_fractional_boxes_equals_pillow(seed):
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    rng = np.random.default_rng(seed)
    w, h = (int(v) for v in rng.integers(1, 300, 2))
    ow, oh = (int(v) for v in rng.integers(1, 200, 2))
    x0, x1 = sorted(float(v) for v in rng.uniform(0, w, 2))
    y0, y1 = sorted(float(v) for v in rng.uniform(0, h, 2))
    im = Image.fromarray(_image(h, w, 3, seed=seed))
    want = im.resize((ow, oh), Image.Resampling.LANCZOS, box=(x0, y0, x1, y1)).tobytes()
    got = cpu._cpufast.lanczos(cpu.arrow_source(im), None, w, h, ow, oh, (x0, y0, x1, y1))
    assert got == want, (w, h, ow, oh, (x0, y0, x1, y1))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("w, h", [(4032, 3024), (1704, 2272), (640, 480), (2000, 301), (257, 3000)])
def test_thumbnail_image_equals_pillow_with_its_reducing_gap(mode, w, h):
    im = Image.fromarray(_image(h, w, len(mode), seed=h), mode)
    ow, oh = output_size("thumbnail", w, h, Settings())
    want = im.resize((ow, oh), Image.Resampling.LANCZOS, reducing_gap=THUMBNAIL_REDUCING_GAP)
    assert np.array_equal(np.asarray(cpu.thumbnail_image(im, ow, oh)), np.asarray(want))


# Image sizes with and without partial last blocks, factors of both parities
# and 1 on one axis (Pillow has code of its own for 1xN, Nx1, 2x2 ... 5x5).
_REDUCE_SIZES = [(1, 1), (2, 3), (7, 5), (33, 17), (100, 60), (641, 481), (1001, 753)]
_REDUCE_FACTORS = [(1, 2), (2, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 5), (7, 3), (2, 9), (17, 4)]


@pytest.mark.parametrize("w, h", _REDUCE_SIZES)
def test_c_reduce_equals_pillow_reduce_exactly(w, h):
    # A box of the whole reduced image at its own size is no resampling: the
    # output is the reduce itself, partial last column and row included.
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    im = Image.fromarray(_image(h, w, 3, seed=w + h))
    for fx, fy in _REDUCE_FACTORS:
        want = im.reduce((fx, fy))
        rw, rh = want.size
        got = cpu._cpufast.lanczos(cpu.arrow_source(im), None, w, h, rw, rh, (0.0, 0.0, rw, rh), (fx, fy))
        assert got == want.tobytes(), (w, h, fx, fy)


@pytest.mark.parametrize("w, h", [(641, 481), (1001, 753), (4032, 301)])
def test_c_reduce_then_lanczos_equals_pillow(w, h):
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    im = Image.fromarray(_image(h, w, 3, seed=w))
    for fx, fy in _REDUCE_FACTORS:
        rw, rh = im.reduce((fx, fy)).size
        box = (0.0, 0.0, w / fx, h / fy)
        for ow, oh in [(max(1, rw // 3), max(1, rh // 2)), (min(256, rw + 5), max(1, rh - 1))]:
            want = im.reduce((fx, fy)).resize((ow, oh), Image.Resampling.LANCZOS, box=box).tobytes()
            got = cpu._cpufast.lanczos(cpu.arrow_source(im), None, w, h, ow, oh, box, (fx, fy))
            assert got == want, (w, h, fx, fy, ow, oh)


def test_c_lanczos_checks_its_arguments():
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    im = Image.fromarray(_image(20, 30, 3))
    src = cpu.arrow_source(im)
    with pytest.raises(ValueError, match="inside the image"):
        cpu._cpufast.lanczos(src, None, 30, 20, 10, 10, (0.0, 0.0, 31.0, 20.0))
    with pytest.raises(ValueError, match=">= 1"):
        cpu._cpufast.lanczos(src, None, 30, 20, 0, 10, (0.0, 0.0, 30.0, 20.0))
    with pytest.raises(ValueError, match="Arrow export"):
        cpu._cpufast.lanczos(im.tobytes(), None, 30, 20, 10, 10, (0.0, 0.0, 30.0, 20.0))
    with pytest.raises(ValueError, match="reduce factors"):
        cpu._cpufast.lanczos(src, None, 30, 20, 10, 10, (0.0, 0.0, 15.0, 10.0), (0, 2))
    with pytest.raises(ValueError, match="inside the image"):  # the box is the reduced image's
        cpu._cpufast.lanczos(src, None, 30, 20, 10, 10, (0.0, 0.0, 16.0, 10.0), (2, 2))


# Every width up to past two of the vector blur's 8-pixel steps, and its edges
# on both sides of them, for each source layout.
BLUR_WIDTHS = [*range(1, 45), 63, 64, 65, 301]


@pytest.mark.parametrize("h", [1, 2, 3, 6])
def test_c_blur121_of_rgb_equals_the_reference_at_every_width(h):
    # RGB runs vector loops (AVX2) where the CPU has them: packed bytes and
    # Pillow's 4-byte pixels read in place, each against the numpy contract.
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    for w in BLUR_WIDTHS:
        a = _image(h, w, 3, seed=w)
        ref = blur121_reference(a).tobytes()
        assert cpu._cpufast.blur121(a.tobytes(), None, w, h, 3) == ref, (h, w, "packed")
        assert cpu._cpufast.blur121(cpu.arrow_source(Image.fromarray(a)), None, w, h, 3) == ref, (h, w, "RGBX")
        # Into a buffer with guard bytes after it: no store lands past the image.
        guarded = bytearray(b"\xa5" * (len(ref) + 32))
        cpu._cpufast.blur121(cpu.arrow_source(Image.fromarray(a)), memoryview(guarded)[:len(ref)], w, h, 3)
        assert guarded[:len(ref)] == ref and guarded[len(ref):] == b"\xa5" * 32, (h, w, "guard")


def test_c_plain_loops_equal_the_vector_ones():
    # Where SSE4.1/AVX2 are missing (or off) the plain C loops run: the same bytes.
    if cpu._cpufast is None:
        pytest.skip("built without a C compiler")
    import subprocess
    import sys

    code = """
import sys
sys.path.insert(0, %r)
import numpy as np
from PIL import Image
from imgtool.backends import cpu
from test_cpu_backend import blur121_reference
assert not cpu._cpufast.simd()
rng = np.random.default_rng(5)
for w, h, ow, oh in [(640, 480, 256, 192), (300, 2000, 256, 1707), (17, 13, 40, 29), (1, 50, 1, 7)]:
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    got = cpu._cpufast.lanczos(cpu.arrow_source(im), None, w, h, ow, oh, (0.0, 0.0, w, h))
    assert got == im.resize((ow, oh), Image.Resampling.LANCZOS).tobytes(), (w, h, ow, oh)
for w, h, fx, fy in [(641, 481, 2, 2), (1001, 753, 5, 5), (33, 17, 7, 3)]:
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    want = im.reduce((fx, fy))
    rw, rh = want.size
    got = cpu._cpufast.lanczos(cpu.arrow_source(im), None, w, h, rw, rh, (0.0, 0.0, rw, rh), (fx, fy))
    assert got == want.tobytes(), (w, h, fx, fy)
for w in %r:
    a = rng.integers(0, 256, (3, w, 3), dtype=np.uint8)
    ref = blur121_reference(a).tobytes()
    assert cpu._cpufast.blur121(a.tobytes(), None, w, 3, 3) == ref, w
    assert cpu._cpufast.blur121(cpu.arrow_source(Image.fromarray(a)), None, w, 3, 3) == ref, w
print("ok")
""" % (os.path.dirname(os.path.abspath(__file__)), BLUR_WIDTHS)
    env = dict(os.environ, IMGTOOL_NO_SIMD="1")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "ok", run.stderr
