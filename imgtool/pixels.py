"""Raw 8-bit pixels as the C fast paths produce them, without numpy or a PIL copy."""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from PIL import Image


def image_bytes(im: Image.Image) -> bytes:
    """``im.tobytes()`` in one piece.

    Pillow's tobytes encodes in 64 KiB chunks and joins them, copying every
    byte twice; asking its raw encoder for the whole image at once copies
    once (a third less time on a 12 MP photo).  Any surprise from that
    internal interface falls back to tobytes.
    """
    size = im.width * im.height * len(im.mode)
    try:
        encoder = Image._getencoder(im.mode, "raw", im.mode)
        try:
            encoder.setimage(im.im, (0, 0, *im.size))
            _consumed, status, data = encoder.encode(size + 1)
        finally:
            encoder.cleanup()
        if status > 0 and len(data) == size:
            return data
    except Exception:  # noqa: BLE001 - the public path below always works
        pass
    return im.tobytes()


@dataclass(frozen=True)
class Pixels:
    """``height`` rows of ``width`` RGB or RGBA pixels (straight alpha), rows contiguous."""

    width: int
    height: int
    channels: int
    data: bytes | bytearray | memoryview

    @property
    def mode(self) -> str:
        return "RGBA" if self.channels == 4 else "RGB"

    @classmethod
    def from_array(cls, a) -> "Pixels":
        """A view of a C-contiguous uint8 (h, w, 3|4) array (no copy)."""
        import numpy as np

        a = np.ascontiguousarray(a)
        return cls(a.shape[1], a.shape[0], a.shape[2], memoryview(a).cast("B"))

    def to_image(self) -> Image.Image:
        return Image.frombuffer(self.mode, (self.width, self.height), self.data, "raw", self.mode, 0, 1)

    def __array__(self, dtype=None, copy=None):
        a = self.to_array()
        return a if dtype is None else a.astype(dtype)

    def to_array(self):
        import numpy as np

        return np.frombuffer(self.data, np.uint8).reshape(self.height, self.width, self.channels)


# What one thread's Scratch keeps between images: the blur and the placeholder
# of a 16 MP RGB photo, or of a 12 MP RGBA one.
SCRATCH_KEEP_BYTES = 64 << 20


# Anonymous memory the kernel maps in one call (MAP_POPULATE, Linux) instead
# of one page fault per page at first touch, and without the GIL: about 12 ms
# for a 12 MP photo's blur and placeholder against 20 ms for a bytearray.
_POPULATE_FLAGS = (mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
                   if hasattr(mmap, "MAP_POPULATE") else None)


def _new_buffer(size: int):
    """``size`` zero bytes, writable: mapped at once where the OS can, else a bytearray."""
    if _POPULATE_FLAGS is not None and size > 0:
        try:
            return mmap.mmap(-1, size, flags=_POPULATE_FLAGS)
        except OSError:  # out of address space or locked-memory limits: the plain way
            pass
    return bytearray(size)


class Scratch:
    """Output buffers that one worker thread reuses from one image to the next.

    A fresh buffer of tens of megabytes is paid for again at its first touch
    (the kernel zeroes and maps every page: on a 12 MP photo, a third of the
    C blur's time); writing into the same memory image after image is not.
    A buffer handed out for ``key`` is valid until ``key`` is asked for again,
    so a thread must be done with an image's outputs (encoded them) before it
    runs the next.  At most ``keep`` bytes are kept in all: past that a
    request gets None and the caller makes a fresh buffer, which is not kept.
    """

    def __init__(self, keep: int = SCRATCH_KEEP_BYTES):
        self.keep = keep
        self._buffers: dict[str, bytearray | mmap.mmap] = {}

    def take(self, key: str, size: int) -> memoryview | None:
        buf = self._buffers.get(key)
        if buf is None or len(buf) < size:
            self._buffers.pop(key, None)
            if size + self.kept_bytes > self.keep:
                return None
            buf = self._buffers[key] = _new_buffer(size)
        return memoryview(buf)[:size]

    @property
    def kept_bytes(self) -> int:
        return sum(len(b) for b in self._buffers.values())
