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

from .. import ops
from ..errors import BackendUnavailable
from ..ops import Settings

if TYPE_CHECKING:  # numpy is imported where it is used: it costs start-up
    import numpy as np

log = logging.getLogger("imgtool")

BACKENDS = ("auto", "cuda", "cpu")


class Backend:
    """What the pipeline needs from a backend.  Methods must be thread-safe.

    A backend runs the operations it has registered an implementation for
    (``ops.implement(<its name>, <operation>, ...)``); what an implementation
    is, is the backend's own business.  It looks them up with
    ``implementation`` and never compares operation names.
    """

    name = "base"

    def implementation(self, op: str):
        """What this backend registered for ``op``; BackendUnavailable when nothing."""
        impl = ops.implementation(self.name, op)
        if impl is None:
            raise BackendUnavailable(f"the {self.name} backend has no implementation of {op!r}")
        return impl

    def check(self, operations) -> None:
        """BackendUnavailable unless this backend can run every one of ``operations``."""
        for op in operations:
            self.implementation(op)

    def apply(self, img: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
        """Run every operation of ``settings.ops`` on one uint8 (h, w, 3|4) array."""
        raise NotImplementedError

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
