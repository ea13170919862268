"""Image-operation backends: ``cpu`` (numpy/Pillow) and ``cuda`` (PyCUDA kernels).

Every backend takes and returns C-contiguous ``uint8`` arrays of shape
(height, width, channels) with 3 (RGB) or 4 (RGBA, straight alpha) channels.
Resampling and blurring happen on premultiplied alpha inside the backend;
what comes back is straight alpha again.  All backends compute the same
arithmetic and agree within 1 per 8-bit channel (the kernels' tests check it).
"""

from __future__ import annotations

import logging
import threading

from typing import TYPE_CHECKING

from ..errors import BackendUnavailable
from ..ops import BLUR, LOW_QUALITY, THUMBNAIL, Settings, output_size

if TYPE_CHECKING:  # numpy is imported where it is used: it costs start-up
    import numpy as np

log = logging.getLogger("imgtool")

BACKENDS = ("auto", "cuda", "cpu")


class Backend:
    """What the pipeline needs from a backend.  Methods must be thread-safe."""

    name = "base"

    def thumbnail(self, img: np.ndarray, width: int, height: int) -> np.ndarray:
        raise NotImplementedError

    def blur(self, img: np.ndarray, sigma: float | None) -> np.ndarray:
        raise NotImplementedError

    def halfsize(self, img: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply(self, img: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
        """Run every operation of ``settings.ops`` on one image.

        A backend that can do better than one call per operation (the cuda
        backend uploads the image once) overrides this.
        """
        h, w = img.shape[:2]
        out = {}
        for op in settings.ops:
            if op == THUMBNAIL:
                tw, th = output_size(op, w, h, settings)
                out[op] = img if (tw, th) == (w, h) else self.thumbnail(img, tw, th)
            elif op == BLUR:
                out[op] = self.blur(img, settings.blur_sigma)
            elif op == LOW_QUALITY:
                out[op] = self.halfsize(img)
        return out

    def apply_image(self, im, settings: Settings, scratch=None) -> dict:
        """``apply`` for a PIL image (RGB or RGBA), returning PIL images or Pixels.

        The pipeline calls this; the cpu backend overrides it to skip the
        copies into and out of numpy.  ``scratch`` (a ``pixels.Scratch`` of
        the calling thread) may hold the outputs: they are then valid until
        the same thread's next call with it.
        """
        import numpy as np

        from ..pixels import Pixels

        arrays = self.apply(np.asarray(im), settings)
        return {op: Pixels.from_array(a) for op, a in arrays.items()}

    def close(self) -> None:
        pass


def _check_pycuda_installed() -> None:
    """Fail fast, before importing the cuda backend (and numpy), where PyCUDA is absent."""
    import importlib.util
    import os

    if os.environ.get("IMGTOOL_CUDA_RUNTIME", "pycuda") == "pycuda" and importlib.util.find_spec("pycuda") is None:
        raise BackendUnavailable("PyCUDA is not installed; pip install 'imgtool[cuda]' where CUDA is")


_lock = threading.Lock()
_said_auto = False


def get_backend(name: str = "auto") -> Backend:
    """The backend called ``name``; ``auto`` is cuda when a GPU answers, else cpu."""
    global _said_auto
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name in ("auto", "cuda"):
        try:
            _check_pycuda_installed()
            from .cuda import CudaBackend

            backend = CudaBackend()
        except BackendUnavailable as exc:
            if name == "cuda":
                raise
            with _lock:
                if not _said_auto:
                    log.info("backend: cpu (no cuda: %s)", exc.message)
                    _said_auto = True
        else:
            if name == "auto":
                with _lock:
                    if not _said_auto:
                        log.info("backend: cuda (%s)", backend.device_name)
                        _said_auto = True
            return backend
    from .cpu import CpuBackend

    return CpuBackend()
