"""What a file is, from its first bytes: the accepted formats, and a named refusal for the rest."""

from __future__ import annotations

from ..errors import ImgtoolError, UnsupportedFormat
from . import pillow

#: Pillow format names of the inputs imgtool accepts (MPO, the multi-picture
#: JPEG of many phones, is opened by Pillow's JPEG plugin; APNG by its PNG
#: plugin; DIB is a BMP without its file header; PPM is every Netpbm image:
#: PBM, PGM and PPM, plain or binary).
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "HEIF", "AVIF", "PPM")

#: How many leading bytes are read to tell the format.
SNIFF_BYTES = 1024
#: No image file in an accepted format is shorter (the smallest GIF takes 26 bytes).
SHORTEST_IMAGE = 20

# Leading bytes of each accepted format (ISO media files, HEIF and AVIF, are told
# apart by their ftyp brands in sniff).
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


def sniff(head: bytes) -> tuple[str, ...]:
    """The accepted formats ``head`` may be, by its leading bytes; () when none.

    A file shorter than its format's magic number still counts as that format,
    so that a file truncated that early is reported as truncated, not foreign.
    """
    for magic, fmt in _MAGIC:
        if head.startswith(magic) or (len(head) < len(magic) and magic.startswith(head)):
            return (fmt,)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ("WEBP",)
    if _is_netpbm(head):
        return ("PPM",)
    if _is_dib(head):
        return ("DIB",)
    if head[4:8] == b"ftyp":
        brands = _ftyp_brands(head)
        if brands & _AVIF_BRANDS:
            return ("AVIF",)
        if brands & _HEIF_BRANDS:
            return ("HEIF",)
        if brands & _ISO_IMAGE_BRANDS:
            return ("AVIF", "HEIF")
    return ()


def _is_netpbm(head: bytes) -> bool:
    """P1-P6 (PBM, PGM, PPM; plain or binary) or Pf/PF (PFM) then whitespace or a comment: what Pillow's PPM plugin reads."""
    return len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"123456fF" and head[2:3] in b" \t\r\n#"


# The sizes of the bitmap headers a DIB (a BMP less its 14-byte file header) may begin with.
_DIB_HEADERS = {12, 40, 52, 56, 64, 108, 124}


def _is_dib(head: bytes) -> bool:
    """A bitmap header of a known size, one plane and a bit depth BMP has: 4 bytes alone would be a weak sign."""
    if len(head) < 16:
        return False
    size = int.from_bytes(head[:4], "little")
    if size not in _DIB_HEADERS:
        return False
    if size == 12:
        planes, bits = int.from_bytes(head[8:10], "little"), int.from_bytes(head[10:12], "little")
    else:
        planes, bits = int.from_bytes(head[12:14], "little"), int.from_bytes(head[14:16], "little")
    return planes == 1 and bits in (1, 2, 4, 8, 16, 24, 32, 64)


def _ftyp_brands(head: bytes) -> set[bytes]:
    size = int.from_bytes(head[:4], "big")
    end = min(max(size, 16), len(head))
    brands = {head[8:12]}
    brands.update(head[i : i + 4] for i in range(16, end - 3, 4))
    return brands


def not_accepted(head: bytes, path) -> ImgtoolError:
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
            return head.decode(encoding, errors="strict" if len(head) < SNIFF_BYTES else "ignore")
        except UnicodeDecodeError:
            continue
    return None


def available(formats: tuple[str, ...], path) -> tuple[str, ...]:
    """``formats`` less those this installation cannot decode (registering pillow-heif's)."""
    usable = tuple(f for f in formats if pillow.decoder_for(f))
    if not usable:
        raise UnsupportedFormat(
            f"{'/'.join(formats)} images cannot be decoded here: "
            "install pillow-heif (HEIF) or a Pillow built with libavif (AVIF)",
            path,
        )
    return usable
