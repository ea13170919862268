"""The CPU build of the kernels (imgtool.backends.hostcuda) itself: PyCUDA's call path, run on the host.

It is how the kernels are tested without a GPU, so its own semantics are
tested here with small kernels: barriers over shared memory, the built-in
index variables in 1, 2 and 3 dimensions, argument passing, errors a GPU would
report, streams, and the build cache.  Then its check mode (the GPU sanitizer)
with kernels that each have one planted fault: every one must be reported,
with the kernel's name, and the same kernels without the fault must pass.
g++ is required: without it these fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import on_ci
from imgtool.backends import hostcuda as cuda

BARRIER_SRC = r"""
// Reverse each block's slice through shared memory.
__global__ void reverse(int* data) {
    __shared__ int s[256];
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    s[t] = data[base + t];
    __syncthreads();
    data[base + t] = s[blockDim.x - 1 - t];
}

// Tree sum: log2(n) barriers in a loop, every thread reading what others wrote.
__global__ void block_sum(const int* in, int* out) {
    __shared__ int s[256];
    const int t = threadIdx.x;
    s[t] = in[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (int step = blockDim.x / 2; step > 0; step /= 2) {
        if (t < step) s[t] += s[t + step];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// 2D tile transpose: a barrier between writing rows and reading columns.
__global__ void transpose(const float* in, float* out, int n) {
    __shared__ float tile[16][17];
    int x = blockIdx.x * 16 + threadIdx.x, y = blockIdx.y * 16 + threadIdx.y;
    if (x < n && y < n) tile[threadIdx.y][threadIdx.x] = in[y * n + x];
    __syncthreads();
    x = blockIdx.y * 16 + threadIdx.x;
    y = blockIdx.x * 16 + threadIdx.y;
    if (x < n && y < n) out[y * n + x] = tile[threadIdx.x][threadIdx.y];
}

// Barrier votes, and threads that have returned do not hold the others up.
__global__ void votes(const int* pred, int* out) {
    const int t = threadIdx.x;
    if (t >= 40) return;
    const int p = pred[t];
    const int c = __syncthreads_count(p);
    const int a = __syncthreads_and(p);
    const int o = __syncthreads_or(p);
    if (t == 0) { out[0] = c; out[1] = a; out[2] = o; }
}

// Shared memory is per block even when blocks run on several host threads at once.
__global__ void own_shared(int* out, int rounds) {
    __shared__ int mine[64];
    const int t = threadIdx.x;
    int bad = 0;
    for (int r = 0; r < rounds; ++r) {
        mine[t] = blockIdx.x * 1000 + r;
        __syncthreads();
        if (mine[(t + 1) % blockDim.x] != (int)(blockIdx.x * 1000 + r)) bad = 1;
        __syncthreads();
    }
    out[blockIdx.x * blockDim.x + t] = bad;
}

// A trap after a barrier, inside a fiber.
__global__ void trap_after_sync(int* data) {
    __shared__ int s[32];
    s[threadIdx.x] = threadIdx.x;
    __syncthreads();
    if (threadIdx.x == 5) __trap();
    __syncthreads();
    data[threadIdx.x] = s[31 - threadIdx.x];
}
"""

INDEX_SRC = r"""
__global__ void where(unsigned int* out) {
    const unsigned int bid = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const unsigned int tid = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    unsigned int* o = out + (size_t)(bid * (blockDim.x * blockDim.y * blockDim.z) + tid) * 12;
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
    o[6] = blockDim.x; o[7] = blockDim.y; o[8] = blockDim.z;
    o[9] = gridDim.x; o[10] = gridDim.y; o[11] = gridDim.z;
}

__global__ void scalars(double* out, int i, unsigned int u, float f, double d, long long ll,
                        unsigned char c, const float* p) {
    out[0] = i; out[1] = u; out[2] = f; out[3] = d; out[4] = (double)ll; out[5] = c; out[6] = p[0];
}

__global__ void count(unsigned int* counter) { atomicAdd(counter, 1u); }

__global__ void oob(int* data, int n) { data[n + threadIdx.x] = 1; }

__global__ void boom(int* data) { if (threadIdx.x == 3) __trap(); data[threadIdx.x] = 1; }
"""


@pytest.fixture(scope="module", autouse=True)
def _init():
    cuda.init()
    cuda.Device(0).make_context()
    yield
    cuda.Context.pop()


# The normal build's semantics (the check mode's are tested further down).
@pytest.fixture(scope="module")
def barrier_mod():
    return cuda.SourceModule(BARRIER_SRC, check=False)


@pytest.fixture(scope="module")
def index_mod():
    return cuda.SourceModule(INDEX_SRC, check=False)


def to_device(a: np.ndarray):
    d = cuda.mem_alloc(a.nbytes)
    cuda.memcpy_htod(d, a)
    return d


def from_device(d, like: np.ndarray) -> np.ndarray:
    out = np.empty_like(like)
    cuda.memcpy_dtoh(out, d)
    return out


# ---- barriers and shared memory ------------------------------------------------


def test_module_knows_its_kernels_and_barrier(barrier_mod, index_mod):
    assert barrier_mod.kernel_names == ["reverse", "block_sum", "transpose", "votes", "own_shared", "trap_after_sync"]
    assert barrier_mod.uses_barrier and not index_mod.uses_barrier


def test_barrier_reverse(barrier_mod):
    data = np.arange(256 * 9, dtype=np.int32)
    d = to_device(data)
    barrier_mod.get_function("reverse")(d, block=(256, 1, 1), grid=(9, 1))
    assert np.array_equal(from_device(d, data).reshape(9, 256), data.reshape(9, 256)[:, ::-1])


def test_barrier_in_a_loop(barrier_mod):
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, 256 * 5, dtype=np.int32)
    out = np.zeros(5, np.int32)
    d_out = to_device(out)
    barrier_mod.get_function("block_sum")(to_device(data), d_out, block=(256, 1, 1), grid=(5, 1))
    assert np.array_equal(from_device(d_out, out), data.reshape(5, 256).sum(axis=1))


def test_barrier_2d_transpose(barrier_mod):
    n = 37  # partial tiles on both edges
    a = np.arange(n * n, dtype=np.float32).reshape(n, n)
    d_out = cuda.mem_alloc(a.nbytes)
    grid = (-(-n // 16), -(-n // 16))
    barrier_mod.get_function("transpose")(to_device(a), d_out, np.int32(n), block=(16, 16, 1), grid=grid)
    assert np.array_equal(from_device(d_out, a), a.T)


def test_barrier_votes_and_exited_threads(barrier_mod):
    f = barrier_mod.get_function("votes")
    out = np.zeros(3, np.int32)
    for pred, want in [
        (np.ones(64, np.int32), (40, 1, 1)),
        (np.r_[np.ones(10), np.zeros(54)].astype(np.int32), (10, 0, 1)),
        (np.zeros(64, np.int32), (0, 0, 0)),
    ]:
        d_out = to_device(out)
        f(to_device(pred), d_out, block=(64, 1, 1), grid=(1, 1))
        assert tuple(from_device(d_out, out)) == want


def test_shared_memory_is_per_block_across_host_threads(barrier_mod, monkeypatch):
    monkeypatch.setenv("IMGTOOL_HOSTCUDA_THREADS", "4")
    out = np.ones(64 * 64, np.int32)
    d_out = to_device(out)
    barrier_mod.get_function("own_shared")(d_out, np.int32(20), block=(64, 1, 1), grid=(64, 1))
    assert not from_device(d_out, out).any()


# ---- the index variables ---------------------------------------------------------


@pytest.mark.parametrize(
    "block, grid",
    [((7, 1, 1), (5, 1)), ((4, 3, 1), (3, 2)), ((3, 2, 2), (2, 3, 2)), ((1, 1, 1), (1, 1)), ((32, 32, 1), (2, 1))],
    ids=["1d", "2d", "3d", "single", "1024-threads"],
)
def test_index_variables(index_mod, block, grid):
    grid3 = tuple(grid) + (1,) * (3 - len(grid))
    n = int(np.prod(block)) * int(np.prod(grid3))
    d = cuda.mem_alloc(n * 12 * 4)
    index_mod.get_function("where")(d, block=block, grid=grid)
    got = from_device(d, np.empty((n, 12), np.uint32))
    want = []
    for bz in range(grid3[2]):
        for by in range(grid3[1]):
            for bx in range(grid3[0]):
                for tz in range(block[2]):
                    for ty in range(block[1]):
                        for tx in range(block[0]):
                            want.append((tx, ty, tz, bx, by, bz, *block, *grid3))
    assert np.array_equal(got, np.array(want, np.uint32))


# ---- arguments -----------------------------------------------------------------


def test_scalar_and_pointer_arguments(index_mod):
    f = index_mod.get_function("scalars")
    assert [k for k, _ in f.params] == ["p", "i", "u", "f", "f", "i", "u", "p"]
    src = np.array([0.0, 2.5, 0.0], np.float32)
    d_src = to_device(src)
    out = np.zeros(7, np.float64)
    d_out = to_device(out)
    # a pointer into the middle of an allocation, passed as a raw address
    f(d_out, np.int32(-7), np.uint32(4_000_000_000), np.float32(1.5), np.float64(1e300), np.int64(-(2**40)),
      np.uint8(200), np.uintp(int(d_src) + 4), block=(1, 1, 1))
    assert list(from_device(d_out, out)) == [-7, 4e9, 1.5, 1e300, -(2**40), 200, 2.5]


@pytest.mark.parametrize(
    "args, match",
    [
        ((7,), "invalid type on parameter #0"),
        ((np.float32(1),), "invalid type on parameter #0"),
    ],
)
def test_argument_type_errors(index_mod, args, match):
    with pytest.raises(TypeError, match=match):
        index_mod.get_function("count")(*args, block=(1, 1, 1))


def test_argument_errors(index_mod):
    f = index_mod.get_function("scalars")
    d = cuda.mem_alloc(64)
    ok = [d, np.int32(1), np.uint32(1), np.float32(1), np.float64(1), np.int64(1), np.uint8(1), d]
    with pytest.raises(TypeError, match="takes 8 arguments"):
        f(*ok[:-1], block=(1, 1, 1))
    with pytest.raises(TypeError, match="is 4 bytes"):
        f(d, np.int64(1), *ok[2:], block=(1, 1, 1))
    with pytest.raises(TypeError, match="invalid type on parameter #1"):
        f(d, 1, *ok[2:], block=(1, 1, 1))
    with pytest.raises(ValueError, match="block"):
        f(*ok)
    with pytest.raises(cuda.LogicError, match="over 1024"):
        f(*ok, block=(64, 32, 1))
    with pytest.raises(cuda.LogicError):
        f(*ok, block=(1, 1, 1), grid=(1, 70000))
    with pytest.raises(cuda.LogicError, match="not in a device allocation"):
        f(*ok[:-1], np.uintp(12345), block=(1, 1, 1))
    with pytest.raises(cuda.LogicError, match="named symbol not found"):
        index_mod.get_function("nope")
    freed = cuda.mem_alloc(16)
    freed.free()
    with pytest.raises(cuda.LogicError, match="freed"):
        f(freed, *ok[1:], block=(1, 1, 1))


def test_prepared_call(index_mod):
    f = index_mod.get_function("count").prepare("P")
    counter = to_device(np.zeros(1, np.uint32))
    f.prepared_call((3, 1), (5, 1, 1), counter)
    assert from_device(counter, np.zeros(1, np.uint32))[0] == 15


# ---- errors a GPU would report ---------------------------------------------------


def test_atomics_across_parallel_blocks(index_mod, monkeypatch):
    monkeypatch.setenv("IMGTOOL_HOSTCUDA_THREADS", "4")
    counter = to_device(np.zeros(1, np.uint32))
    index_mod.get_function("count")(counter, block=(256, 1, 1), grid=(300, 1))
    assert from_device(counter, np.zeros(1, np.uint32))[0] == 256 * 300


def test_out_of_bounds_write_is_a_launch_error(index_mod):
    d = to_device(np.zeros(8, np.int32))
    with pytest.raises(cuda.LaunchError, match="outside a device allocation"):
        index_mod.get_function("oob")(d, np.int32(8), block=(4, 1, 1))


def test_trap_is_a_launch_error(index_mod):
    d = to_device(np.zeros(8, np.int32))
    with pytest.raises(cuda.LaunchError, match=r"__trap\(\) in block \(0,0,0\) thread \(3,0,0\)"):
        index_mod.get_function("boom")(d, block=(8, 1, 1))


def test_trap_in_a_fiber_is_a_launch_error(barrier_mod):
    d = to_device(np.zeros(32, np.int32))
    with pytest.raises(cuda.LaunchError, match=r"thread \(5,0,0\)"):
        barrier_mod.get_function("trap_after_sync")(d, block=(32, 1, 1), grid=(3, 1))


def test_memory_errors():
    with pytest.raises(cuda.LogicError):
        cuda.mem_alloc(0)
    d = cuda.mem_alloc(16)
    with pytest.raises(cuda.LogicError, match="outside"):
        cuda.memcpy_htod(d, np.zeros(17, np.uint8))
    with pytest.raises(cuda.LogicError, match="outside"):
        cuda.memcpy_dtoh(np.zeros(32, np.uint8), d)
    cuda.set_memory_limit(1 << 20)
    try:
        with pytest.raises(cuda.MemoryError):
            cuda.mem_alloc(2 << 20)
    finally:
        cuda.set_memory_limit(None)
    free, total = cuda.mem_get_info()
    assert 0 < free <= total


def test_compile_error_reports_the_compiler_message():
    with pytest.raises(cuda.CompileError, match="undeclared|not declared"):
        cuda.SourceModule("__global__ void k(int* p) { p[0] = missing; }")


def test_missing_compiler_is_a_runtime_error(monkeypatch):
    monkeypatch.setenv("IMGTOOL_HOSTCUDA_CXX", "/nonexistent/g++")
    with pytest.raises(cuda.RuntimeError, match="no host C.. compiler"):
        cuda.init()


def test_device_and_context():
    dev = cuda.Device(0)
    assert cuda.Device.count() == 1 and "hostcuda" in dev.name()
    assert dev.get_attribute(cuda.device_attribute.MAX_THREADS_PER_BLOCK) == 1024
    ctx = dev.make_context()
    cuda.Context.synchronize()
    ctx.pop()
    ctx.detach()
    with pytest.raises(cuda.LogicError):
        cuda.Device(1)


# ---- streams ---------------------------------------------------------------------


def test_stream_copies_are_asynchronous_and_ordered(index_mod):
    stream = cuda.Stream()
    gate = cuda.Event()
    blocker = __import__("threading").Event()
    stream._submit(blocker.wait)  # hold the stream so the copies below stay queued
    host_in = cuda.pagelocked_empty(1000, np.float32)
    host_in[:] = 3.0
    host_out = cuda.pagelocked_zeros(1000, np.float32)
    d = cuda.mem_alloc(host_in.nbytes)
    cuda.memcpy_htod_async(d, host_in, stream)
    cuda.memcpy_dtoh_async(host_out, d, stream)
    gate.record(stream)
    assert not stream.is_done() and not gate.query()
    assert not host_out.any()  # nothing has run yet, as on a GPU
    blocker.set()
    stream.synchronize()
    assert gate.query() and (host_out == 3.0).all()


def test_stream_reports_kernel_failure_at_synchronize(index_mod):
    stream = cuda.Stream()
    d = to_device(np.zeros(8, np.int32))
    index_mod.get_function("boom")(d, block=(8, 1, 1), stream=stream)
    with pytest.raises(cuda.LaunchError, match="__trap"):
        stream.synchronize()
    stream.synchronize()  # reported once


# ---- the build cache ---------------------------------------------------------------

CACHE_SRC = "__global__ void one(int* p) { p[threadIdx.x] = THE_VALUE; }"


def test_cache_reuse_across_processes(tmp_path):
    cache = tmp_path / "cache"
    first = cuda.SourceModule(CACHE_SRC, options=["-DTHE_VALUE=5"], cache_dir=cache)
    assert not first.cache_hit
    assert [p.name for p in cache.iterdir()] == [first.library_path.name]  # no build leftovers
    script = textwrap.dedent(
        f"""
        import numpy as np
        from imgtool.backends import hostcuda as cuda
        from imgtool.backends.hostcuda import compiler
        cuda.init()
        m = cuda.SourceModule({CACHE_SRC!r}, options=["-DTHE_VALUE=5"], cache_dir={str(cache)!r})
        d = cuda.mem_alloc(16)
        m.get_function("one")(d, block=(4, 1, 1))
        out = np.zeros(4, np.int32)
        cuda.memcpy_dtoh(out, d)
        print(m.cache_hit, compiler._build_stats["compiles"], out.tolist())
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "0", "[5,", "5,", "5,", "5]"]
    other = cuda.SourceModule(CACHE_SRC, options=["-DTHE_VALUE=6"], cache_dir=cache)
    assert not other.cache_hit and other.library_path != first.library_path


def test_extern_c_wrapping_and_templates_in_no_extern_c():
    src = "template <int N> __device__ int times(int v) { return N * v; }\n" \
          'extern "C" __global__ void tpl(int* p) { p[0] = times<3>(7); }\n'
    m = cuda.SourceModule(src, no_extern_c=True)
    d = to_device(np.zeros(1, np.int32))
    m.get_function("tpl")(d, block=(1, 1, 1))
    assert from_device(d, np.zeros(1, np.int32))[0] == 21
    with pytest.raises(cuda.CompileError):
        cuda.SourceModule(src)  # a template inside PyCUDA's extern "C" wrapper is an error, as with nvcc


# ---- the check mode (sanitizer.py): planted faults -----------------------------------
#
# Each kernel below has one fault of a kind only a GPU punishes; FIXED_SRC has the
# same kernels without it.  Both are ordinary CUDA (they compile to PTX, see
# test_planted_faults_compile_to_ptx): the checks are in the CPU build.

PLANTED_SRC = r"""
// Averages each row with the one below, loaded into shared memory first; the
// last row's "row below" is one row past the image (loaded, never used).
__global__ void read_past_last_row(const unsigned char* src, unsigned char* dst, int width, int height) {
    __shared__ unsigned char rows[2][64];
    const int x = threadIdx.x, y = blockIdx.x;
    rows[0][x] = src[y * width + x];
    rows[1][x] = src[(y + 1) * width + x];
    __syncthreads();
    dst[y * width + x] = y + 1 < height ? (rows[0][x] + rows[1][x]) / 2 : rows[0][x];
}

// A grid-stride row loop that runs one row too far.
__global__ void write_past_last_row(unsigned char* dst, int width, int height) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    for (int y = blockIdx.y; y <= height; y += gridDim.y)
        if (x < width) dst[y * width + x] = (unsigned char)(x + 3 * y);
}

// Shifts an array down by one; element 0 goes to index -1.
__global__ void write_before_first(const int* src, int* dst, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i - 1] = src[i];
}

// Reverses each 64-element tile through shared memory in a grid-stride loop,
// without the barrier that keeps the next round from overwriting the tile.
__global__ void stride_missing_barrier(const int* in, int* out, int n) {
    __shared__ int tile[64];
    for (int base = blockIdx.x * 64; base < n; base += gridDim.x * 64) {
        const int i = base + threadIdx.x;
        tile[threadIdx.x] = i < n ? in[i] : 0;
        __syncthreads();
        if (i < n) out[i] = tile[63 - threadIdx.x];
    }
}

// Swaps neighbours through shared memory, the barrier inside `if (i < n)`: the
// last block's threads past n never reach it.
__global__ void divergent_barrier(const int* in, int* out, int n) {
    __shared__ int tile[64];
    const int i = blockIdx.x * 64 + threadIdx.x;
    if (i < n) {
        tile[threadIdx.x] = in[i];
        __syncthreads();
        out[i] = tile[threadIdx.x ^ 1];
    }
}

// Adds each element's right neighbour: the last thread reads tile[64].
__global__ void shared_one_past(const int* in, int* out) {
    __shared__ int tile[64];
    const int t = threadIdx.x;
    tile[t] = in[blockIdx.x * 64 + t];
    __syncthreads();
    out[blockIdx.x * 64 + t] = tile[t] + tile[t + 1];
}

// The same through a pointer into the tile.
__global__ void shared_pointer_one_past(const int* in, int* out) {
    __shared__ int tile[64];
    const int t = threadIdx.x;
    tile[t] = in[blockIdx.x * 64 + t];
    __syncthreads();
    const int* p = &tile[t];
    out[blockIdx.x * 64 + t] = p[0] + p[1];
}
"""

FIXED_SRC = r"""
__global__ void read_past_last_row(const unsigned char* src, unsigned char* dst, int width, int height) {
    __shared__ unsigned char rows[2][64];
    const int x = threadIdx.x, y = blockIdx.x;
    rows[0][x] = src[y * width + x];
    rows[1][x] = src[min(y + 1, height - 1) * width + x];
    __syncthreads();
    dst[y * width + x] = y + 1 < height ? (rows[0][x] + rows[1][x]) / 2 : rows[0][x];
}

__global__ void write_past_last_row(unsigned char* dst, int width, int height) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    for (int y = blockIdx.y; y < height; y += gridDim.y)
        if (x < width) dst[y * width + x] = (unsigned char)(x + 3 * y);
}

__global__ void write_before_first(const int* src, int* dst, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i > 0 && i < n) dst[i - 1] = src[i];
}

__global__ void stride_missing_barrier(const int* in, int* out, int n) {
    __shared__ int tile[64];
    for (int base = blockIdx.x * 64; base < n; base += gridDim.x * 64) {
        const int i = base + threadIdx.x;
        tile[threadIdx.x] = i < n ? in[i] : 0;
        __syncthreads();
        if (i < n) out[i] = tile[63 - threadIdx.x];
        __syncthreads();
    }
}

__global__ void divergent_barrier(const int* in, int* out, int n) {
    __shared__ int tile[64];
    const int i = blockIdx.x * 64 + threadIdx.x;
    if (i < n) tile[threadIdx.x] = in[i];
    __syncthreads();
    if (i < n) out[i] = tile[threadIdx.x ^ 1];
}

__global__ void shared_one_past(const int* in, int* out) {
    __shared__ int tile[65];
    const int t = threadIdx.x;
    tile[t] = in[blockIdx.x * 64 + t];
    if (t == 0) tile[64] = 0;
    __syncthreads();
    out[blockIdx.x * 64 + t] = tile[t] + tile[t + 1];
}

__global__ void shared_pointer_one_past(const int* in, int* out) {
    __shared__ int tile[65];
    const int t = threadIdx.x;
    tile[t] = in[blockIdx.x * 64 + t];
    if (t == 0) tile[64] = 0;
    __syncthreads();
    const int* p = &tile[t];
    out[blockIdx.x * 64 + t] = p[0] + p[1];
}
"""


@pytest.fixture(scope="module")
def planted_mod():
    return cuda.SourceModule(PLANTED_SRC, check=True)


@pytest.fixture(scope="module")
def fixed_mod():
    return cuda.SourceModule(FIXED_SRC, check=True)


def _rows(width: int, height: int) -> np.ndarray:
    return np.random.default_rng(width * height).integers(0, 256, (height, width), dtype=np.uint8)


def _tile_reversed(a: np.ndarray) -> np.ndarray:
    return np.concatenate([t[::-1] for t in np.split(a, len(a) // 64)])


def _neighbour_sums(a: np.ndarray) -> np.ndarray:
    tiles = a.reshape(-1, 64)
    return (tiles + np.pad(tiles[:, 1:], ((0, 0), (0, 1)))).reshape(-1)


# Each case: kernel, the launch (arguments made by a function of the module's
# planted/fixed state), what the fixed kernel must compute, and what the
# planted one must be reported as.
def _case_read_past_last_row(mod):
    w, h = 64, 5
    src = _rows(w, h)
    dst = cuda.mem_alloc(w * h)
    mod.get_function("read_past_last_row")(to_device(src), dst, np.int32(w), np.int32(h), block=(w, 1, 1), grid=(h, 1))
    s = src.astype(np.int32)
    want = np.vstack([(s[:-1] + s[1:]) // 2, s[-1:]]).astype(np.uint8)
    return from_device(dst, want), want


def _case_write_past_last_row(mod):
    w, h = 40, 7
    dst = cuda.mem_alloc(w * h)
    mod.get_function("write_past_last_row")(dst, np.int32(w), np.int32(h), block=(32, 4, 1), grid=(2, 2))
    want = (np.arange(w)[None, :] + 3 * np.arange(h)[:, None]).astype(np.uint8)
    return from_device(dst, want), want


def _case_write_before_first(mod):
    n = 100
    src = np.arange(1000, 1000 + n, dtype=np.int32)
    dst = to_device(np.full(n, -1, np.int32))
    mod.get_function("write_before_first")(to_device(src), dst, np.int32(n), block=(64, 1, 1), grid=(2, 1))
    want = np.r_[src[1:], -1].astype(np.int32)
    return from_device(dst, want), want


def _case_stride_missing_barrier(mod):
    n = 64 * 5
    src = np.arange(n, dtype=np.int32) * 7
    dst = cuda.mem_alloc(src.nbytes)
    mod.get_function("stride_missing_barrier")(to_device(src), dst, np.int32(n), block=(64, 1, 1), grid=(5, 1))
    return from_device(dst, src), _tile_reversed(src)


def _case_divergent_barrier(mod):
    n = 100
    src = np.arange(n, dtype=np.int32) + 50
    dst = to_device(np.zeros(n, np.int32))
    mod.get_function("divergent_barrier")(to_device(src), dst, np.int32(n), block=(64, 1, 1), grid=(2, 1))
    return from_device(dst, src), src[np.arange(n) ^ 1]


def _case_shared(kernel):
    def case(mod):
        src = np.arange(128, dtype=np.int32) * 3
        dst = cuda.mem_alloc(src.nbytes)
        mod.get_function(kernel)(to_device(src), dst, block=(64, 1, 1), grid=(2, 1))
        return from_device(dst, src), _neighbour_sums(src)

    return case


PLANTED_CASES = {
    # 5 rows of 64 bytes: the read of row 5 starts at byte 320 of the 320-byte source.
    "read_past_last_row": (_case_read_past_last_row,
                           r"invalid read at byte offset 320 of parameter #0 \(a 320-byte buffer: 1 byte\(s\) past"),
    # 7 rows of 40: row 7 starts at byte 280.
    "write_past_last_row": (_case_write_past_last_row,
                            r"invalid write at byte offset 280 of parameter #0 \(a 280-byte buffer: 1 byte\(s\) past"),
    # dst[-1] of int: 4 bytes before; only the start-aligned layout has a guard there.
    "write_before_first": (_case_write_before_first,
                           r"buffers start-aligned.*invalid write at byte offset -4 of parameter #1 "
                           r"\(a 400-byte buffer: 4 byte\(s\) before its first byte\)"),
    # The uncapped grid runs the loop once and is right; a capped grid makes it go round.
    "stride_missing_barrier": (_case_stride_missing_barrier,
                               r"a race: two schedules disagree on parameter #1 .*grid capped to \(1,1,1\)"),
    # Block 1 holds elements 64..127; threads 36..63 of it are past n = 100.
    "divergent_barrier": (_case_divergent_barrier,
                          r"barrier divergence: thread \(0,0,0\) waits at the barrier of kernel\.cu:\d+:\d+ while "
                          r"thread \(36,0,0\) \(and 27 more\) returned without reaching it in block \(1,0,0\)"),
    "shared_one_past": (_case_shared("shared_one_past"),
                        r"index 64 out of bounds for type 'int \[64\]' at kernel\.cu:\d+:\d+ in block \(\d,0,0\) "
                        r"thread \(63,0,0\)"),
    "shared_pointer_one_past": (_case_shared("shared_pointer_one_past"),
                                r"invalid read at byte offset 256 of __shared__ tile \(a 256-byte array: 1 byte\(s\) "
                                r"past its last byte\).*thread \(63,0,0\)"),
}


@pytest.mark.parametrize("kernel", sorted(PLANTED_CASES))
def test_check_mode_reports_the_planted_fault(planted_mod, kernel):
    case, report = PLANTED_CASES[kernel]
    with pytest.raises(cuda.LaunchError) as info:
        case(planted_mod)
    message = str(info.value)
    assert message.startswith(f"kernel {kernel} (grid ("), message
    assert re.search(report, message), message


@pytest.mark.parametrize("kernel", sorted(PLANTED_CASES))
def test_check_mode_passes_the_fixed_kernel(fixed_mod, kernel):
    got, want = PLANTED_CASES[kernel][0](fixed_mod)
    assert np.array_equal(got, want)


def test_a_failed_check_launch_leaves_the_buffers_alone(planted_mod):
    n = 100
    before = np.full(n, -1, np.int32)
    dst = to_device(before)
    with pytest.raises(cuda.LaunchError, match="write_before_first"):
        planted_mod.get_function("write_before_first")(to_device(np.arange(n, dtype=np.int32)), dst, np.int32(n),
                                                       block=(64, 1, 1), grid=(2, 1))
    assert np.array_equal(from_device(dst, before), before)


# ---- the check mode: races, synccheck and the rest ---------------------------------------

RACES_SRC = r"""
// Two threads write each element: which one wins depends on the order.
__global__ void same_element(int* out) { out[threadIdx.x / 2] = threadIdx.x; }

// Half the block writes the tile, all of it reads it.
__global__ void unwritten_shared(int* out) {
    __shared__ int s[64];
    const int t = threadIdx.x;
    if (t < 32) s[t] = t;
    __syncthreads();
    out[t] = s[t];
}

// Two barriers on one line, one per branch.
__global__ void two_barriers(int* out) {
    __shared__ int s[64];
    const int t = threadIdx.x;
    s[t] = t;
    if (t % 2) { __syncthreads(); } else { __syncthreads(); }
    out[t] = s[63 - t];
}

// Each block adds its sum to a total: the order of integer atomics does not matter.
__global__ void block_total(const int* in, int* total) {
    atomicAdd(total, in[blockIdx.x * blockDim.x + threadIdx.x]);
}

// Reads gridDim.x as the stride of a grid-stride loop over n elements, and
// threadIdx via a device function.
__device__ int lane() { return threadIdx.x; }
__global__ void stride_copy(const int* in, int* out, int n) {
    for (int i = blockIdx.x * blockDim.x + lane(); i < n; i += gridDim.x * blockDim.x) out[i] = in[i] + 1;
}
"""


@pytest.fixture(scope="module")
def races_mod():
    return cuda.SourceModule(RACES_SRC, check=True)


def test_check_mode_reports_a_write_write_race(races_mod):
    with pytest.raises(cuda.LaunchError, match=r"kernel same_element .*a race.*threads forward.*threads reversed"):
        races_mod.get_function("same_element")(cuda.mem_alloc(32 * 4), block=(64, 1, 1))


def test_check_mode_reports_a_read_of_shared_memory_nobody_wrote(races_mod):
    # Elements 32..63 hold whatever shared memory held: a different byte under each schedule.
    with pytest.raises(cuda.LaunchError, match=r"kernel unwritten_shared .*first at byte offset 128 "):
        races_mod.get_function("unwritten_shared")(cuda.mem_alloc(64 * 4), block=(64, 1, 1))


def test_synccheck_tells_apart_two_barriers_on_one_line(races_mod):
    with pytest.raises(cuda.LaunchError) as info:
        races_mod.get_function("two_barriers")(cuda.mem_alloc(64 * 4), block=(64, 1, 1))
    m = re.search(r"barrier of kernel\.cu:(\d+):(\d+) while thread \(1,0,0\) waits at the one of kernel\.cu:(\d+):(\d+)",
                  str(info.value))
    assert m, str(info.value)
    line = [i + 1 for i, text in enumerate(RACES_SRC.splitlines()) if "if (t % 2)" in text][0]
    assert int(m.group(1)) == int(m.group(3)) == line and m.group(2) != m.group(4)


def test_check_mode_accepts_what_does_not_depend_on_order(races_mod):
    data = np.arange(256 * 6, dtype=np.int32)
    total = to_device(np.zeros(1, np.int32))
    races_mod.get_function("block_total")(to_device(data), total, block=(256, 1, 1), grid=(6, 1))
    assert from_device(total, np.zeros(1, np.int32))[0] == data.sum()
    n = 1000
    out = cuda.mem_alloc(4 * n)
    races_mod.get_function("stride_copy")(to_device(data[:n]), out, np.int32(n), block=(64, 1, 1), grid=(16, 1))
    assert np.array_equal(from_device(out, data[:n]), data[:n] + 1)


def test_check_mode_passes_the_barrier_kernels(barrier_mod):
    mod = cuda.SourceModule(BARRIER_SRC, check=True)
    data = np.arange(256 * 9, dtype=np.int32)
    d = to_device(data)
    mod.get_function("reverse")(d, block=(256, 1, 1), grid=(9, 1))
    assert np.array_equal(from_device(d, data).reshape(9, 256), data.reshape(9, 256)[:, ::-1])
    sums = np.zeros(9, np.int32)
    d_sums = to_device(sums)
    mod.get_function("block_sum")(to_device(data), d_sums, block=(256, 1, 1), grid=(9, 1))
    assert np.array_equal(from_device(d_sums, sums), data.reshape(9, 256).sum(axis=1))
    n = 37
    a = np.arange(n * n, dtype=np.float32).reshape(n, n)
    d_t = cuda.mem_alloc(a.nbytes)
    mod.get_function("transpose")(to_device(a), d_t, np.int32(n), block=(16, 16, 1), grid=(3, 3))
    assert np.array_equal(from_device(d_t, a), a.T)
    flags = np.ones(64 * 8, np.int32)
    d_flags = to_device(flags)
    mod.get_function("own_shared")(d_flags, np.int32(5), block=(64, 1, 1), grid=(8, 1))
    assert not from_device(d_flags, flags).any()
    # Threads that return before a barrier the others wait at: tolerated by the
    # normal build (as sm_70+ does), reported by the check mode.
    with pytest.raises(cuda.LaunchError, match=r"kernel votes .*thread \(40,0,0\) \(and 23 more\) returned"):
        mod.get_function("votes")(to_device(np.ones(64, np.int32)), cuda.mem_alloc(12), block=(64, 1, 1))
    with pytest.raises(cuda.LaunchError, match=r"kernel trap_after_sync .*__trap\(\) in block \(0,0,0\) thread \(5,0,0\)"):
        mod.get_function("trap_after_sync")(cuda.mem_alloc(32 * 4), block=(32, 1, 1))


def test_check_mode_reports_on_a_stream(planted_mod):
    stream = cuda.Stream()
    src = to_device(np.zeros(64 * 3, np.uint8))
    planted_mod.get_function("read_past_last_row")(src, cuda.mem_alloc(64 * 3), np.int32(64), np.int32(3),
                                                   block=(64, 1, 1), grid=(3, 1), stream=stream)
    with pytest.raises(cuda.LaunchError, match="kernel read_past_last_row .*invalid read at byte offset 192"):
        stream.synchronize()


def test_race_reports_are_reproducible_and_seeded(planted_mod, monkeypatch):
    def report():
        with pytest.raises(cuda.LaunchError) as info:
            _case_stride_missing_barrier(planted_mod)
        return str(info.value)

    first = report()
    assert report() == first
    monkeypatch.setenv("IMGTOOL_HOSTCUDA_CHECK_SEED", "12345")
    other = report()
    seeds = [re.findall(r"seed (0x[0-9a-f]+)", text) for text in (first, other)]
    assert seeds[0] and seeds[1] and seeds[0] != seeds[1]
    # Only the forward and reversed schedules: an uncapped grid runs the loop once, and agrees.
    monkeypatch.setenv("IMGTOOL_HOSTCUDA_CHECK_SCHEDULES", "0")
    got, want = _case_stride_missing_barrier(planted_mod)
    assert np.array_equal(got, want)


def test_check_mode_follows_the_environment(monkeypatch):
    src = "__global__ void k(int* p) { p[threadIdx.x] = 1; }"
    monkeypatch.setenv("IMGTOOL_HOSTCUDA_CHECK", "1")
    assert cuda.check_mode() and cuda.SourceModule(src).check
    monkeypatch.setenv("IMGTOOL_HOSTCUDA_CHECK", "0")
    assert not cuda.check_mode() and not cuda.SourceModule(src).check
    with cuda.checking():
        assert cuda.SourceModule(src).check
    assert not cuda.SourceModule(src).check
    monkeypatch.setenv("IMGTOOL_HOSTCUDA_CHECK_SCHEDULES", "many")
    with pytest.raises(cuda.LogicError, match="IMGTOOL_HOSTCUDA_CHECK_SCHEDULES"):
        cuda.SourceModule(src, check=True).get_function("k")(cuda.mem_alloc(4), block=(1, 1, 1))


def test_grid_stride_dimensions_are_the_ones_a_kernel_reads():
    src = """
    __global__ void rows(int* p) { for (int y = blockIdx.y; y < 9; y += gridDim.y) p[y] = 0; }
    __global__ void plain(int* p) { p[blockIdx.x] = gridDim . x; }
    __global__ void none(int* p) { p[0] = blockDim.x; }
    """
    m = cuda.SourceModule(src, check=True)
    assert m._built.grid_strides == {"rows": {1}, "plain": {0}, "none": set()}
    # A device function that reads gridDim counts for every kernel (it may be called by any).
    helper = cuda.SourceModule("__device__ unsigned depth() { return gridDim.z; }\n" + src, check=True)
    assert helper._built.grid_strides == {"rows": {1, 2}, "plain": {0, 2}, "none": {2}}


def test_check_source_keeps_lines_and_leaves_comments_and_namespace_scope():
    from imgtool.backends.hostcuda.compiler import check_source

    src = (
        "__shared__ int file_scope[4];\n"
        "// __shared__ int in_a_comment[4]; __syncthreads();\n"
        'extern "C" __global__ void k(int* p) {\n'
        "    __shared__ unsigned char\n        tile[2][TILE];\n"
        "    __shared__ float one;\n"
        "    __syncthreads(); if (__syncthreads_or(p[0])) p[1] = 0;\n"
        "}\n"
    )
    out = check_source(src)
    assert out.count("\n") == src.count("\n")
    lines = out.splitlines()
    assert lines[0] == "__shared__ int file_scope[4];" and lines[1] == src.splitlines()[1]
    assert 'auto& tile = *hc::shared_array<unsigned char[2][TILE], 0>("tile");' in out
    assert 'auto& one = *hc::shared_array<float, 1>("one");' in out
    assert "    hc_syncthreads<5>(); if (hc_syncthreads_or<26>(p[0])) p[1] = 0;" in lines


@pytest.mark.parametrize("source", ["PLANTED_SRC", "FIXED_SRC", "RACES_SRC"])
def test_planted_faults_compile_to_ptx(tmp_path, source):
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.access("/usr/local/cuda/bin/nvcc", os.X_OK) else None)
    if nvcc is None:
        if on_ci():
            pytest.fail("nvcc is missing on CI: the planted-fault kernels must compile to PTX there")
        pytest.skip("nvcc is not installed")
    text = globals()[source]
    cu = tmp_path / "planted.cu"
    cu.write_text('extern "C" {\n' + text + "\n}\n")  # as PyCUDA's SourceModule wraps it
    ptx = tmp_path / "planted.ptx"
    proc = subprocess.run([nvcc, "--ptx", "-arch=sm_75", "-o", str(ptx), str(cu)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = re.findall(r"__global__ void (\w+)\(", text)
    for name in names:
        assert f".entry {name}(" in ptx.read_text()


# ---- the package's import graph ----------------------------------------------------------


def _imports(path, package: str, names: set[str]) -> set[str]:
    """The modules of ``package`` that the module at ``path`` imports (function-level imports too)."""
    import ast

    me = path.stem
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            targets = [node.module] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            targets = [node.module[len(package) + 1:].split(".")[0]]
        elif isinstance(node, ast.Import):
            targets = [a.name[len(package) + 1:].split(".")[0] for a in node.names if a.name.startswith(package + ".")]
        else:
            continue
        out |= {t.split(".")[0] for t in targets if t and t.split(".")[0] in names and t.split(".")[0] != me}
    return out


def test_hostcuda_import_graph_has_no_cycle():
    from pathlib import Path

    import imgtool.backends.hostcuda as package

    root = Path(package.__file__).parent
    modules = {p.stem: p for p in root.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path, package.__name__, set(modules)) for name, path in modules.items()}
    assert graph["compiler"] >= {"driver", "sanitizer", "toolchain", "errors"}  # the parser sees imports
    done, path_ = set(), []

    def visit(name):
        assert name not in path_, f"import cycle: {' -> '.join(path_[path_.index(name):] + [name])}"
        if name in done:
            return
        path_.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        path_.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
