"""Every process-wide Pillow setting imgtool makes, in one place.

Pillow keeps a few settings for the whole process (its warnings, its logger,
its decompression-bomb limit, the plugins it has loaded, its memory block
size, libtiff's message handlers, pillow-heif's openers).  imgtool changes
each of them here and nowhere else: the ones that cost nothing at import
time, the others on first need, from the callers named in each docstring.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings

from PIL import Image

log = logging.getLogger("imgtool")

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

_lock = threading.Lock()

# Pillow's block size, so that a decoded image is one block (see use_single_block).
ARROW_BLOCK_SIZE = 1 << 30


def use_single_block() -> None:
    """Have Pillow keep each image in one memory block (the cpu backend's C paths ask for it).

    Pillow keeps a big image in 16 MB blocks unless told otherwise; in one
    block, its Arrow export hands the C paths the decoded pixels where they
    lie, without a copy.  One allocation per image instead of several;
    nothing else changes.
    """
    if Image.core.get_block_size() < ARROW_BLOCK_SIZE:
        Image.core.set_block_size(ARROW_BLOCK_SIZE)


def allow_up_to(max_pixels: int) -> None:
    """Keep Pillow's own decompression-bomb check from firing before imgtool's (decode, per open).

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that,
    inside ``Image.open``, before imgtool sees the size.  That setting is
    process-wide, so it is only ever raised (to imgtool's limit), never lowered
    or switched off: Pillow then still refuses, at twice imgtool's limit, an
    image that imgtool would refuse anyway, and any DecompressionBombError left
    becomes ImageTooLarge.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        with _lock:
            if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
                Image.MAX_IMAGE_PIXELS = max_pixels


# Pillow's own plugins for the sniffed formats (HEIF and AVIF from pillow-heif
# register themselves; Pillow's AVIF plugin is found by its fallback).
_PLUGINS = {
    "JPEG": "JpegImagePlugin",
    "PNG": "PngImagePlugin",
    "GIF": "GifImagePlugin",
    "TIFF": "TiffImagePlugin",
    "BMP": "BmpImagePlugin",
    "DIB": "BmpImagePlugin",
    "WEBP": "WebPImagePlugin",
    "PPM": "PpmImagePlugin",
}


def load_plugins(formats: tuple[str, ...]) -> None:
    """Import the Pillow plugins ``formats`` need, and only those (decode, per open).

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


@functools.lru_cache(maxsize=None)
def decoder_for(fmt: str) -> bool:
    """Whether ``fmt`` (HEIF or AVIF) can be decoded, registering pillow-heif once when needed (sniff).

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


def quiet_libtiff() -> None:
    """Stop libtiff printing its warnings and errors on stderr (decode, before a TIFF is opened).

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
    with _lock:
        if _libtiff_quieted:
            return
        _libtiff_quieted = True
        try:
            import ctypes

            for lib in _libtiffs():
                lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
                lib.TIFFSetWarningHandler.restype = ctypes.c_void_p
                lib.TIFFSetErrorHandler(None)
                lib.TIFFSetWarningHandler(None)
        except (OSError, AttributeError) as exc:
            log.debug("libtiff left as it is: %s", exc)


@functools.lru_cache(maxsize=1)
def _libtiffs() -> tuple:
    """The copies of libtiff Pillow loaded (from the process's memory map; none off Linux)."""
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            paths = {f for f in (line.split()[-1] for line in maps) if "libtiff" in f and f[0] == "/"}
        return tuple(ctypes.CDLL(path) for path in sorted(paths))
    except OSError as exc:
        log.debug("libtiff not found: %s", exc)
        return ()


@functools.lru_cache(maxsize=64)
def tiff_codec_configured(compression: int) -> bool | None:
    """Whether Pillow's libtiff was built with the codec of TIFF ``compression`` (decode); None: cannot tell."""
    import ctypes

    libs = _libtiffs()
    if not libs:
        return None
    try:
        fn = libs[0].TIFFIsCODECConfigured
    except AttributeError:
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_uint16]
    return bool(fn(compression & 0xFFFF))
