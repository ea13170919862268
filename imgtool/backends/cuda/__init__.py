"""The cuda backend: kernels/*.cu through PyCUDA, driven by one GPU dispatcher thread.

Callers (the pipeline's decode/encode threads) submit a job and wait on a
future; one dispatcher thread owns the CUDA context and does every CUDA call.
It keeps a few slots, each with a stream, pinned host buffers and device
buffers, and issues a job's upload, kernels and downloads asynchronously on a
free slot before it waits for an earlier one, so one image's copies overlap
another's kernels.  The same code runs on ``runtime="host"``, the CPU build of
the kernels (imgtool.backends.hostcuda), which is how it is tested without a GPU.

The thumbnail is Pillow's ``Image.resize(..., LANCZOS, reducing_gap=3.0)``,
bit for bit (what the cpu backend runs): an integer box reduce (resample.cu's
``reduce_box``) where the scale allows one, then the two Lanczos-3 passes over
the reduced image with the fractional box that keeps the geometry, in Pillow's
pass order; see ``thumbnail_stages``.

The package: ``plan`` decides launches on the host (kernel preludes, geometry,
argument checks), ``dispatcher`` is the thread that owns the context,
``operations`` registers each operation's CudaKernel, and this module is the
backend the pipeline calls.
"""

from __future__ import annotations

import os
import weakref

import numpy as np

from ...errors import BackendUnavailable
from ...ops import Settings
from ...ops.blur import BLUR
from ...ops.low_quality import LOW_QUALITY
from ...ops.thumbnail import THUMBNAIL
from .. import Backend
from . import plan
from .dispatcher import SLOTS, Dispatcher, Job, Runtime
from .operations import CUDA, KEEP_INPUT, CudaKernel
from .plan import (  # the kernels' tests and tools read them here
    BOX_BLOCK,
    BOX_PIXELS,
    GAUSS_H_BLOCK,
    GAUSS_H_PIXELS,
    GAUSS_V_BLOCKS,
    GAUSS_V_PIXELS,
    HALFSIZE_BLOCK,
    MAX_GRID_Y,
    MAX_STATIC_SHARED,
    NVCC_OPTIONS,
    RESAMPLE_BLOCK,
    check_image,
    check_sigma,
    check_size,
    gauss_geometry,
    horizontal_first,
    kernel_source,
    module_defines,
    thumbnail_stages,
)

RUNTIME_ENV = "IMGTOOL_CUDA_RUNTIME"
RUNTIMES = ("pycuda", "host")


class CudaBackend(Backend):
    """The kernels on a GPU (``runtime="pycuda"``) or on the CPU build of them (``"host"``)."""

    name = CUDA

    def __init__(self, runtime: str | None = None, *, slots: int = SLOTS):
        runtime = runtime or os.environ.get(RUNTIME_ENV) or "pycuda"
        if runtime not in RUNTIMES:
            raise BackendUnavailable(f"unknown CUDA runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.runtime = runtime
        self._dispatcher = Dispatcher(Runtime(runtime), slots)
        self.device_name = self._dispatcher.start()
        # The dispatcher thread holds no reference to the backend, so dropping
        # the backend stops the thread and frees the context.
        self._finalizer = weakref.finalize(self, self._dispatcher.stop)

    def _run(self, img: np.ndarray, ops: list) -> dict[str, np.ndarray]:
        if not ops:
            return {}
        return self._dispatcher.submit(Job(img, ops)).result()

    def apply(self, img: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
        """Every operation of ``settings`` from one upload of ``img``."""
        img = check_image(img)
        h, w = img.shape[:2]
        launches, out = [], {}
        keys = []
        for op in settings.ops:
            kernel = self.implementation(op)
            prepared = kernel.prepare(settings, w, h)
            # Several outputs (the thumbnail's widths) come by key, one launch each.
            for key, params in (prepared.items() if isinstance(prepared, dict) else [(op, prepared)]):
                keys.append(key)
                if params is KEEP_INPUT:
                    out[key] = img.copy()
                else:
                    launches.append((key, kernel, params))
        out.update(self._run(img, launches))
        return {key: out[key] for key in keys}

    # The operations one at a time on arrays: what the kernels' tests call.

    def thumbnail(self, img: np.ndarray, width: int, height: int) -> np.ndarray:
        img = check_image(img)
        width, height = check_size(width, height)
        if (width, height) == (img.shape[1], img.shape[0]):
            return img.copy()
        return self._run(img, [(THUMBNAIL, self.implementation(THUMBNAIL), (width, height))])[THUMBNAIL]

    def blur(self, img: np.ndarray, sigma: float | None) -> np.ndarray:
        img = check_image(img)
        sigma = check_sigma(sigma)
        return self._run(img, [(BLUR, self.implementation(BLUR), (sigma,))])[BLUR]

    def halfsize(self, img: np.ndarray) -> np.ndarray:
        img = check_image(img)
        return self._run(img, [(LOW_QUALITY, self.implementation(LOW_QUALITY), ())])[LOW_QUALITY]

    def close(self) -> None:
        self._finalizer()


__all__ = [
    "BOX_BLOCK", "BOX_PIXELS", "CUDA", "GAUSS_H_BLOCK", "GAUSS_H_PIXELS", "GAUSS_V_BLOCKS", "GAUSS_V_PIXELS",
    "HALFSIZE_BLOCK", "KEEP_INPUT", "MAX_GRID_Y", "MAX_STATIC_SHARED", "NVCC_OPTIONS", "RESAMPLE_BLOCK",
    "RUNTIMES", "RUNTIME_ENV", "CudaBackend", "CudaKernel", "gauss_geometry", "horizontal_first",
    "kernel_source", "module_defines", "plan", "thumbnail_stages",
]
