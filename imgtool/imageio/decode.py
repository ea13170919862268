"""Decoding: an image file to an upright sRGB Pillow image, its header checked against the limits first."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from PIL import Image

from .. import budgets, storage
from . import video
from ..errors import (
    UnsupportedFormat,
    CorruptImage,
    ImageTooLarge,
    ImgtoolError,
    ResourceExhausted,
    UnsupportedFormat,
    from_os_error,
)
from . import depth, pillow
from .colour import to_srgb
from .sniff import SHORTEST_IMAGE, SNIFF_BYTES, available, not_accepted, sniff

if TYPE_CHECKING:  # numpy is imported where it is used, off the hot path
    import numpy as np

#: Seconds a video's frame may take (``--video-timeout``), in a list so that it can be set for every thread.
VIDEO_TIMEOUT = [video.DEFAULT_TIMEOUT]


def set_video_timeout(seconds: float) -> None:
    """``--video-timeout``: the time budget of decoding a video's frame, from now on."""
    if not seconds > 0:
        raise ValueError("the video timeout must be > 0")
    VIDEO_TIMEOUT[0] = float(seconds)


# EXIF orientation -> the transposition that makes the image upright.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: Pillow's format name and the upright size."""

    format: str
    width: int
    height: int
    has_alpha: bool

    @property
    def decoded_bytes(self) -> int:
        """What the decoded 8-bit image will hold (RGBA where there is alpha, else RGB)."""
        return self.width * self.height * (4 if self.has_alpha else 3)


class Opened:
    """An image file opened with Pillow and its header checked; no pixel decoded yet.

    ``info`` is the header's word; ``decode()`` decodes.  Use it as a context
    manager: on exit the file is closed, and the Pillow image too unless
    ``decode()`` handed it (or what was made from it) to the caller.
    """

    def __init__(self, file: BinaryIO, name, max_pixels: int, owned=None):
        self.name = name
        self.max_pixels = max_pixels
        self.file: BinaryIO | None = file
        self._owned = owned  # what to close with the file (the opener of a path)
        self.image: Image.Image | None = None
        self.format = ""
        self._kept: Image.Image | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        head = self.file.read(SNIFF_BYTES)
        formats = sniff(head)
        if not formats and video.sniff_video(head):
            self.file.seek(0)
            self._open_video()
            return
        if not formats and len(head) < SHORTEST_IMAGE:
            raise CorruptImage(f"only {len(head)} bytes: too short to be an image", self.name)
        if not formats:
            raise not_accepted(head, self.name)
        if "HEIF" in formats or "AVIF" in formats:
            formats = available(formats, self.name)
        self.format = "/".join(formats)
        if "TIFF" in formats:
            pillow.quiet_libtiff()
        pillow.allow_up_to(self.max_pixels)
        pillow.load_plugins(formats)
        with _decode_errors(self.name, self.format, self.max_pixels):
            self.file.seek(0)
            try:
                self.image = Image.open(self.file, formats=formats)
            except Exception:
                if "TIFF" in formats:  # Pillow refuses a compression it has no name for at open
                    _check_tiff_codec(None, self.name, _first_ifd_compression(self.file))
                raise
            self.format = self.image.format or self.format
            w, h = self.image.size
            if w * h > self.max_pixels:
                raise ImageTooLarge(
                    f"{w}x{h} ({_mp(w * h)}) is over the limit of {_mp(self.max_pixels)}", self.name
                )
            if w <= 0 or h <= 0:
                raise CorruptImage(f"its header gives an empty size {w}x{h}", self.name)
            if self.format == "TIFF":
                _check_tiff_codec(self.image, self.name)

    def _open_video(self) -> None:
        """A video upload: its frame at 1 s, upright, decoded now (reading a video's header means
        opening its streams; the frame's size is checked against the pixel limit before it is decoded)."""
        try:
            import av  # noqa: F401 - only to say what is missing
        except ImportError:
            raise UnsupportedFormat("video uploads need PyAV: pip install 'imgtool[video]'", self.name) from None
        frame = video.video_frame(self.file, max_pixels=self.max_pixels, timeout=VIDEO_TIMEOUT[0],
                                  name=str(self.name))
        frame.info = {}
        self.format = "video"
        self.image = self._kept = frame

    @property
    def decoded_bytes(self) -> int:
        """What the decoded 8-bit image will hold, from the header (RGBA where there is alpha, else RGB)."""
        w, h = self.image.size  # orientation swaps the sides, not their product
        return w * h * (4 if self.image.has_transparency_data else 3)

    @property
    def info(self) -> ImageInfo:
        """The format, upright size and alpha from the header; reads no pixel data."""
        im = self.image
        with _decode_errors(self.name, self.format, self.max_pixels):
            w, h = im.size
            if _orientation(im, decoded=False) >= 5:
                w, h = h, w
            return ImageInfo(self.format, w, h, im.has_transparency_data)

    def decode(self) -> Image.Image:
        """The image, loaded: mode RGB or RGBA, sRGB, upright, no metadata (its ``info`` is empty)."""
        im = self.image
        if self.format == "video":
            return im  # already the upright RGB frame
        with _decode_errors(self.name, self.format, self.max_pixels):
            # The scan count and the data's length against the header, before the decoder runs.
            budgets.check(self.file, im.format or self.format, im, self.name)
            if type(im).__module__.startswith("pillow_heif"):
                # Tiles past the end of the file would be painted in: libheif says so first.
                from .heif import check_items

                self.file.seek(0)
                check_items(self.file.read(), self.name)
            top = rawmodes = None
            if im.format in ("TIFF", "PNG"):
                top = depth.declared_maximum(im, self.file)
                rawmodes = depth.raw_modes(im) if top else None
            im.load()
            orientation = _orientation(im)
            scaled = depth.decode_scaled(im, top, rawmodes, self.file) if top else None
            out = to_srgb(scaled if scaled is not None else im)
            if orientation in _ORIENTATION:
                out = out.transpose(_ORIENTATION[orientation])
        out.info = {}
        self._kept = out
        return out

    def close(self) -> None:
        if self.image is not None and self.image is not self._kept:
            self.image.close()
        self.image = None
        if self.file is not None:
            self.file.close()
            self.file = None
        if self._owned is not None:
            owned, self._owned = self._owned, None
            owned.close()

    def __enter__(self) -> "Opened":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_image(source, max_pixels: int, name=None) -> Opened:
    """``source`` opened as an image: a binary file object (``name`` names it in errors), or a
    location its store opens (``imgtool.storage``).

    Raises the named errors of a missing, unreadable, unsupported or
    over-the-limit file; a file whose data is corrupt further in fails in
    ``decode()``.
    """
    if hasattr(source, "read"):
        return Opened(source, name if name is not None else getattr(source, "name", None), max_pixels)
    opened = storage.for_location(source).open_input(source)
    return Opened(opened.file, opened.name, max_pixels, owned=opened)


def probe(path: str | os.PathLike, max_pixels: int) -> ImageInfo:
    """Read only the header of ``path``: its format, upright size and whether it has alpha.

    Raises the same named errors as :func:`decode` for a missing, unsupported,
    unreadable or over-the-limit file, but decodes no pixel, so a file whose
    data is corrupt further in may still fail in ``decode``.
    """
    with open_image(path, max_pixels) as opened:
        return opened.info


def decode(path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    """Read ``path`` into a C-contiguous uint8 (h, w, 3|4) array: sRGB, upright, straight alpha.

    RGBA when the input has any transparency (an alpha channel, a transparent
    palette entry or colour key), RGB otherwise.  The EXIF orientation is
    applied; embedded ICC profiles (and CMYK) are converted to sRGB; 16-bit and
    float samples are scaled to 8 bits; an animation gives its first frame.
    The size is checked against ``max_pixels`` from the header, before any pixel
    is decoded.  Every failure is an :class:`ImgtoolError` naming the file and
    the reason.  The array may be read-only.
    """
    import numpy as np

    return np.asarray(decode_image(path, max_pixels))


def decode_image(path: str | os.PathLike, max_pixels: int) -> Image.Image:
    """What :func:`decode` returns, as a loaded Pillow image of mode RGB or RGBA.

    For callers that stay in Pillow: no copy into numpy.  The image carries
    no metadata (its ``info`` is empty) and no longer needs the file.
    """
    with open_image(path, max_pixels) as opened:
        return opened.decode()


def _check_tiff_codec(im: Image.Image | None, name, compression: int | None = None) -> None:
    """A valid TIFF in a compression this build's libtiff lacks (WebP, ZSTD, LERC...) is unsupported, not corrupt."""
    from PIL import TiffImagePlugin

    if im is not None:
        compression = im.tag_v2.get(259, 1)
    if not isinstance(compression, int) or compression == 1:
        return
    if compression not in TiffImagePlugin.COMPRESSION_INFO or pillow.tiff_codec_configured(compression) is False:
        label = TiffImagePlugin.COMPRESSION_INFO.get(compression)
        label = f"{label} compression ({compression})" if label else f"compression scheme {compression}"
        raise UnsupportedFormat(f"unsupported TIFF variant: {label}, which this build's libtiff cannot decode",
                                name)


def _first_ifd_compression(file: BinaryIO) -> int | None:
    """The Compression tag (259) of a TIFF's first IFD, read from the file; None when it cannot be found."""
    try:
        file.seek(0)
        head = file.read(16)
        order = {b"II": "little", b"MM": "big"}.get(head[:2])
        if order is None:
            return None
        big = int.from_bytes(head[2:4], order) == 43  # BigTIFF: 8-byte offsets, 20-byte entries
        offset = int.from_bytes(head[8:16] if big else head[4:8], order)
        file.seek(offset)
        count = int.from_bytes(file.read(8 if big else 2), order)
        size = 20 if big else 12
        entries = file.read(min(count, 4096) * size)
        for i in range(0, len(entries) - size + 1, size):
            if int.from_bytes(entries[i:i + 2], order) == 259:
                at = 12 if big else 8
                return int.from_bytes(entries[i + at:i + at + 2], order)
    except (OSError, ValueError):
        return None
    return None


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels" if pixels >= 100_000 else f"{pixels} pixels"


class _decode_errors:
    """Context manager mapping whatever Pillow, libheif or lcms raise to named errors."""

    def __init__(self, path, fmt: str, max_pixels: int):
        self.path = path
        self.fmt = fmt
        self.max_pixels = max_pixels

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if isinstance(exc, ImgtoolError) and exc.path is None:
            raise type(exc)(exc.message, self.path) from exc  # name the file
        if exc is None or isinstance(exc, ImgtoolError) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, Image.DecompressionBombError):
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = _mp(int(found[1])) if found else "its size"
            raise ImageTooLarge(f"{size} is over the limit of {_mp(self.max_pixels)}", self.path) from exc
        if isinstance(exc, MemoryError) or _OUT_OF_MEMORY.search(str(exc)):
            # A decoder's own allocation failure too (libjpeg "Insufficient memory", libwebp, libheif):
            # the same file may decode when the machine has room, so never "corrupt".
            raise ResourceExhausted("out of memory while decoding", self.path) from exc
        if isinstance(exc, OSError) and exc.errno is not None:
            # A real I/O failure (Pillow's own decoding errors carry no errno).
            raise from_os_error(exc, self.path) from exc
        raise CorruptImage(
            f"truncated or corrupt {self.fmt} file ({_one_line(exc)})", self.path
        ) from exc


_OUT_OF_MEMORY = re.compile(r"out of memory|insufficient memory|not enough memory|cannot allocate memory|"
                            r"memory allocation failed|failed to allocate|alloc(ation)? error", re.I)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    # Pillow names the file object in some messages; the path is said already.
    if "<_io." in text:
        text = text.split(" <_io.")[0]
    if len(text) > 200:
        text = text[:197] + "..."
    return text or type(exc).__name__


def _orientation(im: Image.Image, decoded: bool = True) -> int:
    """The EXIF (or XMP) orientation, 1-8; 1 when absent or unreadable.

    pillow-heif applies HEIF's own rotation and reports 1; Pillow's AVIF plugin
    reports AVIF's rotation as an EXIF orientation.  Before the pixels are
    decoded, a PNG's eXIf chunk is known only when it comes before the image
    data (where Pillow and cameras put it): Pillow would decode the whole image
    to look further.
    """
    if not decoded and im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a corrupt EXIF block must not cost the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
