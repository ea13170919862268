"""Decoding images into upright sRGB arrays (orientation, colour, alpha, limits), and atomic WebP writes."""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from PIL import Image, ImageChops

from . import webp
from .pixels import Pixels

if TYPE_CHECKING:  # numpy and lcms are imported where they are used, off the hot path
    import numpy as np
    from PIL import ImageCms

from .errors import (
    CorruptImage,
    ImageTooLarge,
    ImgtoolError,
    ResourceExhausted,
    UnsupportedFormat,
    from_os_error,
)

log = logging.getLogger("imgtool")

#: Pillow format names of the inputs imgtool accepts (MPO, the multi-picture
#: JPEG of many phones, is opened by Pillow's JPEG plugin).
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")

#: libwebp cannot hold an image wider or taller than this.
WEBP_MAX_SIDE = 16383

_SNIFF_BYTES = 1024
# No image file in an accepted format is shorter (the smallest GIF takes 26 bytes).
_SHORTEST_IMAGE = 20

# Leading bytes of each accepted format (ISO media files, HEIF and AVIF, are told
# apart by their ftyp brands in _sniff).
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
# Well-known files that are not accepted, named in the error message.
_OTHER_MAGIC = (
    (b"%PDF", "PDF documents"),
    (b"%!PS", "PostScript/EPS files"),
    (b"\xc5\xd0\xd3\xc6", "PostScript/EPS files"),
    (b"8BPS", "Photoshop (PSD) files"),
    (b"\x00\x00\x01\x00", "ICO files"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 images"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 images"),
    (b"\xff\x0a", "JPEG XL images"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL images"),
    (b"qoif", "QOI images"),
    (b"PK\x03\x04", "ZIP archives"),
    (b"\x1f\x8b", "gzip files"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_ISO_IMAGE_BRANDS = {b"mif1", b"msf1"}  # either HEIF or AVIF

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

_DEEP_GRAY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}

# Pillow reports damage it recovers from (a corrupt EXIF block, a malformed
# MPO) as UserWarnings, and images over its own pixel limit as
# DecompressionBombWarnings: imgtool decides and reports these itself (or
# decodes the image regardless), and a warning printed per file would break
# the one-line-per-failure output.  The filter is process-wide: a warnings
# context per call is not thread-safe.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Pillow also logs some damage at ERROR level ("More samples per pixel than
# can be decoded") before raising; with no handler configured for it, Python
# prints that on stderr.  A NullHandler, as the logging docs ask of libraries,
# keeps it for whoever configures logging and out of imgtool's output.
logging.getLogger("PIL").addHandler(logging.NullHandler())

_pillow_lock = threading.Lock()


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: Pillow's format name and the upright size."""

    format: str
    width: int
    height: int
    has_alpha: bool


def probe(path: str | os.PathLike, max_pixels: int) -> ImageInfo:
    """Read only the header of ``path``: its format, upright size and whether it has alpha.

    Raises the same named errors as :func:`decode` for a missing, unsupported,
    unreadable or over-the-limit file, but decodes no pixel, so a file whose
    data is corrupt further in may still fail in ``decode``.
    """
    with _opened(path, max_pixels) as opened:
        im = opened.image
        with _decode_errors(path, opened.format, max_pixels):
            w, h = im.size
            if _orientation(im, decoded=False) >= 5:
                w, h = h, w
            return ImageInfo(opened.format, w, h, im.has_transparency_data)


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
    with _opened(path, max_pixels) as opened:
        im = opened.image
        with _decode_errors(path, opened.format, max_pixels):
            im.load()
            orientation = _orientation(im)
            out = _to_srgb(im)
            if orientation in _ORIENTATION:
                out = out.transpose(_ORIENTATION[orientation])
        out.info = {}
        opened.keep(out)
    return out


def encode_webp(
    img: np.ndarray | Image.Image | Pixels, quality: int, effort: int, lossless: bool
) -> bytes:
    """WebP bytes of ``img`` (uint8 RGB or straight-alpha RGBA), with no metadata.

    Lossless keeps the colour of fully transparent pixels too (``exact``), so
    the file holds exactly the computed pixels.
    """
    if isinstance(img, Pixels):
        w, h = img.width, img.height
    elif webp._is_ndarray(img):
        if img.dtype.name != "uint8" or img.ndim != 3 or img.shape[2] not in (3, 4):
            raise ValueError(f"expected a uint8 (h, w, 3|4) array, not {img.dtype} {img.shape}")
        h, w = img.shape[:2]
    elif img.mode not in ("RGB", "RGBA"):
        raise ValueError(f"expected an RGB or RGBA image, not {img.mode}")
    else:
        w, h = img.size
    if w > WEBP_MAX_SIDE or h > WEBP_MAX_SIDE:
        raise ImageTooLarge(f"{w}x{h} is over WebP's limit of {WEBP_MAX_SIDE} pixels a side")
    fast = webp.encode_simple(img, quality, effort, lossless)
    if fast is not None:
        return fast
    if isinstance(img, Pixels):
        img = img.to_image()
    elif webp._is_ndarray(img):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    # Pillow's WebP writer takes metadata only from these arguments, never from
    # img.info, so leaving them out writes none.
    img.save(buf, "WEBP", quality=quality, method=effort, lossless=lossless, exact=lossless)
    return buf.getvalue()


def write_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place.

    The temporary file (``.imgtool-*.tmp``, hidden, in the target folder so the
    rename stays on one filesystem) is created with mode 0o666 less the umask,
    like any new file.  A symlink at ``path`` is replaced by the rename, never
    followed.  The folder is created if missing.  ``fsync`` makes the data
    durable before the rename (about a millisecond a file), for callers that
    record the write as done elsewhere.  OS failures become named errors.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    except OSError as exc:
        raise from_os_error(exc, path, writing=True) from exc


def _create_temp(folder: Path) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, f".imgtool-{os.urandom(8).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # 64 random bits: practically never
            continue


# --- opening -----------------------------------------------------------------


class _opened:
    """Context manager: the file opened with Pillow and its header checked.

    ``image`` and ``format`` are set on entry.  On exit the file is closed and
    the image too, unless :meth:`keep` handed it (or what was made from it)
    to the caller.
    """

    def __init__(self, path: str | os.PathLike, max_pixels: int):
        self.path = path
        self.max_pixels = max_pixels
        self.file: BinaryIO | None = None
        self.image: Image.Image | None = None
        self.format = ""
        self._kept: Image.Image | None = None

    def keep(self, im: Image.Image) -> None:
        self._kept = im

    def __enter__(self) -> "_opened":
        try:
            self.file = _open_regular_file(self.path)
            head = self.file.read(_SNIFF_BYTES)
            formats = _sniff(head)
            if not formats and len(head) < _SHORTEST_IMAGE:
                raise CorruptImage(f"only {len(head)} bytes: too short to be an image", self.path)
            if not formats:
                raise _not_accepted(head, self.path)
            if "HEIF" in formats or "AVIF" in formats:
                formats = _available(formats, self.path)
            self.format = "/".join(formats)
            if "TIFF" in formats:
                _quiet_libtiff()
            _allow_pillow_up_to(self.max_pixels)
            _load_plugins(formats)
            with _decode_errors(self.path, self.format, self.max_pixels):
                self.file.seek(0)
                self.image = Image.open(self.file, formats=formats)
                self.format = self.image.format or self.format
                w, h = self.image.size
                if w * h > self.max_pixels:
                    raise ImageTooLarge(
                        f"{w}x{h} ({_mp(w * h)}) is over the limit of {_mp(self.max_pixels)}",
                        self.path,
                    )
                if w <= 0 or h <= 0:
                    raise CorruptImage(f"its header gives an empty size {w}x{h}", self.path)
            return self
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc_info) -> None:
        if self.image is not None and self.image is not self._kept:
            self.image.close()
        self.image = None
        if self.file is not None:
            self.file.close()
            self.file = None


# Pillow's own plugins for the sniffed formats (HEIF and AVIF from pillow-heif
# register themselves; Pillow's AVIF plugin is found by its fallback).
_PLUGINS = {
    "JPEG": "JpegImagePlugin",
    "PNG": "PngImagePlugin",
    "GIF": "GifImagePlugin",
    "TIFF": "TiffImagePlugin",
    "BMP": "BmpImagePlugin",
    "WEBP": "WebPImagePlugin",
}


def _load_plugins(formats: tuple[str, ...]) -> None:
    """Import the Pillow plugins ``formats`` need, and only those.

    On its first open Pillow imports five plugins whatever the file (its
    ``preinit``: BMP, GIF, JPEG, PPM, PNG), a third of a JPEG run's start-up
    before the first decode.  Once the needed ones are registered its
    ``open`` finds them; for any format not registered, and for every other
    caller, Pillow's own fallback (``init``, all plugins) still runs.
    """
    if getattr(Image, "_initialized", 1) >= 1:
        return
    for fmt in formats:
        if fmt in _PLUGINS and fmt not in Image.OPEN:
            try:
                __import__(f"PIL.{_PLUGINS[fmt]}")
            except ImportError:
                return  # Pillow's own preinit and init report it their way
    if all(fmt in Image.OPEN for fmt in formats):
        Image._initialized = 1  # what preinit sets once it has run


def _open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading, refusing anything but a regular file.

    O_NONBLOCK keeps a FIFO from blocking the open forever; it changes nothing
    for a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise from_os_error(exc, path) from exc
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UnsupportedFormat("is a directory, not an image file", path)
        if not stat.S_ISREG(st.st_mode):
            raise UnsupportedFormat("is not a regular file", path)
        if st.st_size == 0:
            raise CorruptImage("empty file (0 bytes)", path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _sniff(head: bytes) -> tuple[str, ...]:
    """The accepted formats ``head`` may be, by its leading bytes; () when none.

    A file shorter than its format's magic number still counts as that format,
    so that a file truncated that early is reported as truncated, not foreign.
    """
    for magic, fmt in _MAGIC:
        if head.startswith(magic) or (len(head) < len(magic) and magic.startswith(head)):
            return (fmt,)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ("WEBP",)
    if head[4:8] == b"ftyp":
        brands = _ftyp_brands(head)
        if brands & _AVIF_BRANDS:
            return ("AVIF",)
        if brands & _HEIF_BRANDS:
            return ("HEIF",)
        if brands & _ISO_IMAGE_BRANDS:
            return ("AVIF", "HEIF")
    return ()


def _ftyp_brands(head: bytes) -> set[bytes]:
    size = int.from_bytes(head[:4], "big")
    end = min(max(size, 16), len(head))
    brands = {head[8:12]}
    brands.update(head[i : i + 4] for i in range(16, end - 3, 4))
    return brands


def _not_accepted(head: bytes, path) -> ImgtoolError:
    """The error for a file that is none of the accepted formats, naming what it seems to be."""
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic):
            return UnsupportedFormat(f"{what} are not supported", path)
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("latin-1").strip()
        return UnsupportedFormat(f"an ISO media file of brand {brand!r} (video?), not an image", path)
    text = _as_text(head)
    if text is not None:
        lowered = text.lower()
        if "<svg" in lowered or "http://www.w3.org/2000/svg" in lowered:
            return UnsupportedFormat("SVG images are not supported", path)
        if "<html" in lowered or "<!doctype html" in lowered:
            return UnsupportedFormat("an HTML page, not an image", path)
        return UnsupportedFormat("a text file, not an image", path)
    return UnsupportedFormat(
        "not an image in an accepted format (" + ", ".join(ACCEPTED_FORMATS) + ")", path
    )


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    for encoding in ("utf-8", "utf-16"):
        try:
            # The sniffed bytes may end in the middle of a character.
            return head.decode(encoding, errors="strict" if len(head) < _SNIFF_BYTES else "ignore")
        except UnicodeDecodeError:
            continue
    return None


def _available(formats: tuple[str, ...], path) -> tuple[str, ...]:
    """``formats`` less those this installation cannot decode (registering pillow-heif's)."""
    usable = tuple(f for f in formats if _decoder_for(f))
    if not usable:
        raise UnsupportedFormat(
            f"{'/'.join(formats)} images cannot be decoded here: "
            "install pillow-heif (HEIF) or a Pillow built with libavif (AVIF)",
            path,
        )
    return usable


@functools.lru_cache(maxsize=None)
def _decoder_for(fmt: str) -> bool:
    """Whether ``fmt`` (HEIF or AVIF) can be decoded, registering pillow-heif once when needed.

    HEIF comes from pillow-heif; AVIF from Pillow itself (11.2 and later, with
    libavif), else from pillow-heif where its libheif was built with AVIF.
    """
    from PIL import features

    if fmt == "AVIF" and features.check_module("avif"):
        return True
    try:
        import pillow_heif
    except ImportError:
        return False
    # Only the primary image is needed; skip decoding the extras.
    options = {"thumbnails": False, "depth_images": False, "aux_images": False}
    if fmt == "HEIF":
        pillow_heif.register_heif_opener(**options)
        return True
    if fmt == "AVIF" and pillow_heif.libheif_info().get("AVIF"):
        pillow_heif.register_avif_opener(**options)
        return True
    return False


_libtiff_quieted = False


def _quiet_libtiff() -> None:
    """Stop libtiff printing its warnings and errors on stderr.

    Pillow leaves libtiff's default handlers in place, which write lines such
    as "JPEGLib: Quantization table 0x00 was not defined." straight to file
    descriptor 2, between imgtool's one-line reports; Pillow raises its own
    exception for the failure anyway.  The handlers are global to libtiff, so
    they are cleared once, in the copy of libtiff Pillow loaded (found in the
    process's memory map; where there is none, as off Linux, nothing changes).
    """
    global _libtiff_quieted
    if _libtiff_quieted:
        return
    with _pillow_lock:
        if _libtiff_quieted:
            return
        _libtiff_quieted = True
        try:
            import ctypes

            with open("/proc/self/maps") as maps:
                paths = {f for f in (line.split()[-1] for line in maps) if "libtiff" in f and f[0] == "/"}
            for path in paths:
                lib = ctypes.CDLL(path)  # already loaded: the same copy Pillow uses
                lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
                lib.TIFFSetWarningHandler.restype = ctypes.c_void_p
                lib.TIFFSetErrorHandler(None)
                lib.TIFFSetWarningHandler(None)
        except (OSError, AttributeError) as exc:
            log.debug("libtiff left as it is: %s", exc)


def _allow_pillow_up_to(max_pixels: int) -> None:
    """Keep Pillow's own decompression-bomb check from firing before imgtool's.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that,
    inside ``Image.open``, before imgtool sees the size.  That setting is
    process-wide, so it is only ever raised (to imgtool's limit), never lowered
    or switched off: Pillow then still refuses, at twice imgtool's limit, an
    image that imgtool would refuse anyway, and any DecompressionBombError left
    becomes ImageTooLarge.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        with _pillow_lock:
            if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
                Image.MAX_IMAGE_PIXELS = max_pixels


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
        if isinstance(exc, MemoryError):
            raise ResourceExhausted("out of memory while decoding", self.path) from exc
        if isinstance(exc, OSError) and exc.errno is not None:
            # A real I/O failure (Pillow's own decoding errors carry no errno).
            raise from_os_error(exc, self.path) from exc
        raise CorruptImage(
            f"truncated or corrupt {self.fmt} file ({_one_line(exc)})", self.path
        ) from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    # Pillow names the file object in some messages; the path is said already.
    if "<_io." in text:
        text = text.split(" <_io.")[0]
    if len(text) > 200:
        text = text[:197] + "..."
    return text or type(exc).__name__


# --- orientation, modes and colour ---------------------------------------------


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


def _to_srgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit RGB or RGBA image in sRGB (orientation not applied)."""
    icc = im.info.get("icc_profile") or None
    if im.mode in ("RGB", "RGBA") and icc is None and "transparency" not in im.info:
        return im  # the common case: nothing to convert, nothing copied
    im = _to_8bit(im)  # now one of L, LA, RGB, RGBA, CMYK, LAB
    if im.mode == "LAB":
        im = _cms()[0].applyTransform(im, _lab_to_srgb())
    elif icc is not None:
        im = _apply_profile(im, icc)
    if im.mode in ("L", "CMYK"):  # CMYK left means no usable profile: as browsers show it
        im = im.convert("RGB")
    elif im.mode == "LA":
        im = im.convert("RGBA")
    return im


def _apply_profile(im: Image.Image, icc: bytes) -> Image.Image:
    """``im`` converted from ``icc`` to sRGB; unchanged where the profile is sRGB or unusable."""
    if im.mode == "LA":
        # lcms has no gray-with-alpha transform; the colour part goes alone.
        color = _apply_profile(im.getchannel("L"), icc)
        if color.mode == "L":
            return im
        color.putalpha(im.getchannel("A"))
        return color
    transform = _icc_transform(icc, im.mode)
    return im if transform is None else _cms()[0].applyTransform(im, transform)


def _to_8bit(im: Image.Image) -> Image.Image:
    """``im`` with 8-bit samples in one of L, LA, RGB, RGBA, CMYK, LAB."""
    mode = im.mode
    if mode in _DEEP_GRAY_MODES:
        return _deep_gray_to_8bit(im)
    if mode in ("L", "1", "RGB") and "transparency" in im.info:
        return im.convert("LA" if mode != "RGB" else "RGBA")
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        return im.convert("RGBA" if im.has_transparency_data else "RGB")
    if mode == "La":
        return im.convert("LA")
    if mode == "RGBa":
        return im.convert("RGBA")
    if mode in ("RGBX", "YCbCr", "HSV"):
        return im.convert("RGB")
    if mode == "CMYK" and im.format in ("JPEG", "MPO") and "adobe" not in im.info:
        # Pillow reads every CMYK JPEG with Adobe's inverted polarity (what
        # Photoshop writes, with its APP14 marker); without that marker the
        # samples are plain, as libjpeg and libvips take them.
        return ImageChops.invert(im)
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK", "LAB"):
        return im
    raise UnsupportedFormat(f"images of Pillow mode {mode!r} are not supported")


def _deep_gray_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float gray scaled (not clipped) to 8 bits, as L or LA.

    Integer samples are taken as 16-bit (0-65535; what PNG and TIFF hold and
    what Pillow makes of them), so 65535 is white; float samples as 0.0-1.0.
    A 16-bit colour key (PNG tRNS) becomes an alpha channel.
    """
    import numpy as np

    a = np.asarray(im)
    if im.mode == "F":
        scaled = np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0) * 255.0
        gray = np.rint(scaled).astype(np.uint8)
    else:
        wide = np.clip(a, 0, 65535).astype(np.uint32)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
    out = Image.fromarray(gray)
    key = im.info.get("transparency")
    if isinstance(key, int) and im.mode != "F":
        out.putalpha(Image.fromarray(np.where(a == key, 0, 255).astype(np.uint8)))
    return out


@functools.lru_cache(maxsize=1)
def _cms():
    """(PIL.ImageCms, the sRGB profile, the transforms' flags), made on first use."""
    from PIL import ImageCms

    # NOCACHE: lcms's one-pixel cache is not safe when threads share a transform.
    return ImageCms, ImageCms.createProfile("sRGB"), ImageCms.Flags.NOCACHE

_PROFILE_SPACE_MODES = {"RGB ": ("RGB", "RGBA"), "GRAY": ("L",), "CMYK": ("CMYK",)}


# A few profiles cover nearly every upload (sRGB, Display P3, a press CMYK or
# two); the bound keeps hostile files with profiles of their own from piling up.
@functools.lru_cache(maxsize=16)
def _icc_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A transform from ``icc`` to sRGB for ``mode`` images, cached per profile.

    None when the profile is sRGB already (no work to do) or cannot be used
    with this mode (a broken profile, an RGB profile on a gray image): like
    browsers, the pixels are then taken as sRGB (CMYK as bare CMYK).
    """
    ImageCms, srgb, flags = _cms()
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space
        if mode not in _PROFILE_SPACE_MODES.get(space, ()):
            log.debug("ignoring a %r ICC profile on a %s image", space, mode)
            return None
        out_mode = "RGBA" if mode == "RGBA" else "RGB"
        transform = ImageCms.buildTransform(
            profile, srgb, mode, out_mode, ImageCms.Intent.PERCEPTUAL, flags
        )
        if mode in ("RGB", "RGBA") and _is_identity(transform, mode):
            return None
        return transform
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.debug("ignoring an unusable ICC profile: %s", exc)
        return None


def _is_identity(transform: ImageCms.ImageCmsTransform, mode: str) -> bool:
    """True when ``transform`` moves no colour of a 17x17x17 grid by more than 1 level."""
    import numpy as np

    levels = np.linspace(0, 255, 17).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    if mode == "RGBA":
        grid = np.concatenate([grid, np.full(grid.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    sample = Image.fromarray(np.ascontiguousarray(grid))
    moved = np.asarray(_cms()[0].applyTransform(sample, transform)).astype(np.int16) - grid
    return int(np.abs(moved).max()) <= 1


@functools.lru_cache(maxsize=1)
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    ImageCms, srgb, flags = _cms()
    return ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), srgb, "LAB", "RGB", ImageCms.Intent.PERCEPTUAL, flags
    )


__all__ = [
    "ACCEPTED_FORMATS",
    "WEBP_MAX_SIDE",
    "ImageInfo",
    "decode",
    "decode_image",
    "encode_webp",
    "probe",
    "write_atomic",
]
