"""The CPU build of the kernels (imgtool.backends.hostcuda) itself: PyCUDA's call path, run on the host.

It is how the kernels are tested without a GPU, so its own semantics are
tested here with small kernels: barriers over shared memory, the built-in
index variables in 1, 2 and 3 dimensions, argument passing, errors a GPU would
report, streams, and the build cache.  g++ is required: without it these fail.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

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


@pytest.fixture(scope="module")
def barrier_mod():
    return cuda.SourceModule(BARRIER_SRC)


@pytest.fixture(scope="module")
def index_mod():
    return cuda.SourceModule(INDEX_SRC)


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
    assert graph["compiler"] >= {"driver", "toolchain", "errors"}  # the parser sees imports
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
