"""GPU figures where a CUDA GPU and PyCUDA are at hand.

UNTESTED: the machines this harness was written on have no GPU.  It relies on
``imgtool.backends.cuda.CudaBackend(runtime="pycuda")`` with ``thumbnail``,
``blur`` and ``halfsize`` taking and returning host ndarrays; the timings
below therefore include the host<->device copies unless the backend offers
``kernel_seconds(op, img)`` (seconds of the kernel alone), which is used when
present.  Effective bandwidth = (bytes of the input image + bytes of the
output) / time, against the device's own device-to-device copy bandwidth.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MISSING = (
    "per-kernel effective bandwidth on 12 MP RGB and RGBA images",
    "--backend cuda against --backend cpu end to end",
    "GPU busy share of wall time",
)


def unavailable() -> str | None:
    """Why there are no GPU figures here, or None when a device answers."""
    try:
        import pycuda.driver as cuda
    except Exception as exc:  # ImportError, or a broken build of pycuda
        return f"pycuda does not import ({type(exc).__name__}: {exc})"
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA device"
    except Exception as exc:
        return f"CUDA does not answer ({exc})"
    return None


def copy_bandwidth(nbytes: int = 1 << 29, repeats: int = 5) -> float:
    """The device's device-to-device copy bandwidth, bytes/s (read + written)."""
    import pycuda.driver as cuda

    ctx = cuda.Device(0).make_context()
    try:
        a, b = cuda.mem_alloc(nbytes), cuda.mem_alloc(nbytes)
        start, end = cuda.Event(), cuda.Event()
        best = float("inf")
        for _ in range(repeats):
            start.record()
            cuda.memcpy_dtod(b, a, nbytes)
            end.record()
            end.synchronize()
            best = min(best, end.time_since(start) / 1000.0)
        return 2 * nbytes / best
    finally:
        ctx.pop()


def kernel_bandwidth(width: int = 4000, height: int = 3000, repeats: int = 5,
                     runtime: str = "pycuda") -> list[dict]:
    """Per-kernel timings; ``runtime="host"`` (the CPU build of the kernels) only smoke-tests this code."""
    from imgtool.backends.cuda import CudaBackend

    from . import auto_sigma, half_size, thumb_size

    backend = CudaBackend(runtime=runtime)
    rng = np.random.default_rng(0)
    rows = []
    try:
        for channels in (3, 4):
            img = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
            tw, th = thumb_size(width, height)
            hw, hh = half_size(width, height)
            calls = {
                "thumbnail": (lambda: backend.thumbnail(img, tw, th), tw * th),
                "blur": (lambda: backend.blur(img, None), width * height),  # the 3x3 kernel
                "blur auto": (lambda: backend.blur(img, auto_sigma(width, height)), width * height),
                "halfsize": (lambda: backend.halfsize(img), hw * hh),
            }
            for op, (call, out_pixels) in calls.items():
                call()  # compile and warm up
                timer = getattr(backend, "kernel_seconds", None)
                if timer is not None:
                    secs = min(timer(op, img) for _ in range(repeats))
                    what = "kernel"
                else:
                    secs = float("inf")
                    for _ in range(repeats):
                        t = time.perf_counter()
                        call()
                        secs = min(secs, time.perf_counter() - t)
                    what = "call incl. copies"
                moved = (width * height + out_pixels) * channels
                rows.append({"op": op, "channels": channels, "seconds": secs,
                             "bandwidth": moved / secs, "timed": what})
    finally:
        backend.close()
    return rows


class BusySampler:
    """The GPU's utilisation (share of time a kernel ran) sampled by nvidia-smi every 100 ms."""

    def __enter__(self):
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "100", "-i", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
        return self

    def __exit__(self, *exc):
        self.samples = []
        if self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate()
            self.samples = [float(x) for x in out.split() if x.replace(".", "", 1).isdigit()]

    @property
    def busy_share(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100.0 if self.samples else None


def imgtool_argv(corpus: Path, out: Path, jobs: int, backend: str, blur: str | None = None) -> list[str]:
    """``imgtool process`` at its defaults; ``blur``: a ``--blur-sigma`` other than the default's."""
    extra = ["--blur-sigma", blur] if blur is not None else []
    return [sys.executable, "-m", "imgtool", "-q", "process", str(corpus), "-o", str(out),
            "--force", "-j", str(jobs), "--backend", backend, *extra]
