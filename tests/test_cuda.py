"""The cuda backend's own behaviour: runtimes, argument checks, the dispatcher thread, GPU errors.

These run on the CPU build of the kernels (runtime "host"); the kernels'
results are tested in test_kernels.py.
"""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers import assert_image_close
from imgtool.backends import cuda as cuda_mod
from imgtool.backends import get_backend, hostcuda
from imgtool.backends.cpu import CpuBackend
from imgtool.backends.cuda import CudaBackend
from imgtool.errors import BackendUnavailable, GPUError
from imgtool.ops import Settings


def image(w: int, h: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.fixture
def backend():
    b = CudaBackend("host")
    yield b
    b.close()


def test_runtime_from_environment(monkeypatch):
    monkeypatch.setenv("IMGTOOL_CUDA_RUNTIME", "host")
    b = CudaBackend()
    try:
        assert b.runtime == "host" and b.name == "cuda" and "hostcuda" in b.device_name
    finally:
        b.close()


def test_get_backend_cuda_uses_the_runtime(monkeypatch):
    monkeypatch.setenv("IMGTOOL_CUDA_RUNTIME", "host")
    b = get_backend("cuda")
    try:
        assert isinstance(b, CudaBackend)
    finally:
        b.close()


def test_unknown_runtime_is_unavailable():
    with pytest.raises(BackendUnavailable, match="unknown CUDA runtime"):
        CudaBackend("opencl")


@pytest.mark.skipif(importlib.util.find_spec("pycuda") is not None, reason="PyCUDA is installed here")
def test_without_pycuda_the_backend_is_unavailable(monkeypatch):
    monkeypatch.delenv("IMGTOOL_CUDA_RUNTIME", raising=False)
    with pytest.raises(BackendUnavailable, match="PyCUDA") as err:
        CudaBackend()
    assert "\n" not in err.value.message
    assert get_backend("auto").name == "cpu"


def test_host_runtime_without_compiler_is_unavailable(monkeypatch):
    monkeypatch.setenv("IMGTOOL_HOSTCUDA_CXX", "/nonexistent/g++")
    with pytest.raises(BackendUnavailable, match="no CUDA device answered.*compiler"):
        CudaBackend("host")


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda b: b.thumbnail(np.zeros((4, 4, 3), np.float32), 2, 2), ValueError),
        (lambda b: b.thumbnail(np.zeros((4, 4), np.uint8), 2, 2), ValueError),
        (lambda b: b.thumbnail(np.zeros((4, 4, 2), np.uint8), 2, 2), ValueError),
        (lambda b: b.thumbnail(np.zeros((0, 4, 3), np.uint8), 2, 2), ValueError),
        (lambda b: b.thumbnail([[1, 2, 3]], 2, 2), TypeError),
        (lambda b: b.thumbnail(np.zeros((4, 4, 3), np.uint8), 0, 2), ValueError),
        (lambda b: b.thumbnail(np.zeros((4, 4, 3), np.uint8), 2.0, 2), TypeError),
        (lambda b: b.blur(np.zeros((4, 4, 3), np.uint8), 0.0), ValueError),
        (lambda b: b.blur(np.zeros((4, 4, 3), np.uint8), 50.5), ValueError),
        (lambda b: b.blur(np.zeros((4, 4, 3), np.uint8), float("nan")), ValueError),
        (lambda b: b.blur(np.zeros((4, 4, 3), np.uint8), "2"), TypeError),
    ],
)
def test_arguments_checked_before_any_launch(backend, monkeypatch, call, error):
    def no_submit(job):
        raise AssertionError("a bad argument reached the dispatcher")

    monkeypatch.setattr(backend._dispatcher, "submit", no_submit)
    with pytest.raises(error):
        call(backend)


def test_non_contiguous_input_is_accepted(backend):
    img = image(40, 30, 4)[:, ::2]
    assert_image_close(backend.thumbnail(img, 7, 9), CpuBackend().thumbnail(np.ascontiguousarray(img), 7, 9), 1)


def test_many_caller_threads(backend):
    cpu = CpuBackend()
    imgs = [image(20 + i, 15 + 2 * i, 3 + i % 2, seed=i) for i in range(24)]
    settings = Settings(thumb_width=9, blur_sigma=1.1)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda im: backend.apply(im, settings), imgs))
    for im, got in zip(imgs, results):
        want = cpu.apply(im, settings)
        for op in want:
            assert_image_close(got[op], want[op], 1, op)


def test_gpu_memory_error_is_retryable_and_the_backend_recovers(backend):
    small, big = image(16, 16), image(900, 900)
    backend.blur(small, 2.0)
    hostcuda.set_memory_limit(2 << 20)
    try:
        with pytest.raises(GPUError) as err:
            backend.blur(big, 2.0)  # needs ~13 MB of device memory
        assert err.value.retryable
        assert backend.blur(small, 2.0).shape == small.shape  # still works within the limit
    finally:
        hostcuda.set_memory_limit(None)
    assert backend.blur(big, 2.0).shape == big.shape


def test_kernel_failure_is_a_gpu_error_for_that_image_only(backend, monkeypatch):
    real = cuda_mod.plan.kernel_source

    def trapping(name, defines):
        src = real(name, defines)
        if name == "downscale.cu":
            src = src.replace("const int sx =", "if (x == 0 && width == 13) __trap();\n    const int sx =")
        return src

    monkeypatch.setattr(cuda_mod.plan, "kernel_source", trapping)
    with pytest.raises(GPUError, match="LaunchError"):
        backend.halfsize(image(13, 5))
    assert backend.halfsize(image(12, 5)).shape == (2, 6, 3)  # a new context, the next image is fine
    monkeypatch.setattr(cuda_mod.plan, "kernel_source", real)


def test_a_context_that_cannot_be_rebuilt_fails_jobs_instead_of_hanging(backend, monkeypatch):
    real = cuda_mod.plan.kernel_source
    monkeypatch.setattr(
        cuda_mod.plan, "kernel_source",
        lambda name, defines: real(name, defines).replace("const int sx =", "__trap();\n    const int sx ="),
    )

    def no_device():
        raise hostcuda.RuntimeError("the device fell off the bus")

    monkeypatch.setattr(backend._dispatcher, "_open", no_device)
    with pytest.raises(GPUError):
        backend.halfsize(image(9, 9))
    backend._dispatcher.thread.join(timeout=10)
    with pytest.raises(GPUError, match="closed"):
        backend.halfsize(image(9, 9))


def test_closed_backend_refuses_work():
    b = CudaBackend("host")
    b.close()
    b.close()  # idempotent
    with pytest.raises(GPUError, match="closed"):
        b.halfsize(image(4, 4))


def test_dispatcher_thread_is_the_only_cuda_caller(backend, monkeypatch):
    seen = set()
    real = hostcuda.memcpy_htod_async

    def spy(*args, **kwargs):
        seen.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(hostcuda, "memcpy_htod_async", spy)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: backend.halfsize(image(8 + i, 8)), range(8)))
    assert seen == {"imgtool-gpu"}


def test_dropping_the_backend_stops_its_thread():
    b = CudaBackend("host")
    thread = b._dispatcher.thread
    del b
    import gc

    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()
