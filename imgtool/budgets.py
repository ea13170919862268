"""Decode budgets: what a file may cost, checked from its bytes before a decoder is given them.

Two checks, both on the raw bytes and cheap next to a decode:

- ``MAX_JPEG_SCANS``: a JPEG with more scans (SOS markers) than a real
  encoder writes is refused.  A progressive decoder redoes work for every
  scan, so thousands of tiny refinement scans make a 300 KB file cost
  minutes; libjpeg-turbo's own tools (``djpeg -maxscans``) and its fuzzers
  bound the count for the same reason.  Encoders write 1 (baseline) to about
  10 (libjpeg's progressive script; mozjpeg's optimised scans stay under 20).
- ``min_bytes``: the fewest bytes the data of a file may take for the pixels
  its header claims.  A file shorter than that is truncated (or forged),
  even where the decoder would paint the missing part grey and say nothing.
  Each floor is a hard bound from how the format codes pixels (deflate at
  most 1032:1, LZW at most 12 bits for 4096 pixels, a Huffman-coded JPEG at
  least one bit a block), divided by ``SLACK``; formats whose coding has no
  such bound (lossless WebP codes a flat image in a few bytes) are checked
  for data their own chunk and box sizes say is missing.

Also the memory an image will take (``memory_estimate``), for admission, and the budgets' defaults.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from typing import BinaryIO

from .errors import CorruptImage, PermanentError

#: The most scans a JPEG may hold.  Ten times what libjpeg's progressive script writes.
MAX_JPEG_SCANS = 100
#: Each floor is divided by this: only data far too short for its header is refused.
SLACK = 2
#: Copies of the decoded image that are alive at once (the decode, its sRGB/upright copy).
DECODE_COPIES = 2
#: Copies of each output alive at once (the result, the backend's scratch, the encoder's buffers).
OUTPUT_COPIES = 3

# deflate: zlib's documented ceiling (a 258-byte match in about two bits).
_DEFLATE_RATIO = 1032
# LZW (GIF, TIFF): a 12-bit code stands for at most 4096 pixels.
_LZW_PIXELS_PER_BYTE = 4096 * 8 // 12
# PackBits: two bytes repeat one byte up to 128 times.
_PACKBITS_RATIO = 64
# BMP RLE: an escape of four bytes may skip 255 x 255 pixels.
_BMP_RLE_PIXELS_PER_BYTE = 255 * 255 // 4


class OverBudget(PermanentError):
    """The file would cost more to decode than any real image of its kind does."""

    code = "over_budget"


def check(file: BinaryIO, fmt: str, image, name) -> None:
    """Refuse ``file`` (opened by Pillow as ``image``, format ``fmt``) when it is over a budget.

    Raises OverBudget (too many JPEG scans) or CorruptImage (truncated).  The
    file's position is put back where it was.
    """
    pos = file.tell()
    try:
        with _bytes_of(file) as data:
            _check(data, fmt, image, name)
    finally:
        file.seek(pos)


def _check(data, fmt: str, image, name) -> None:
    size = len(data)
    if fmt in ("JPEG", "MPO"):
        need, what = jpeg_floor(data, name)
    elif fmt == "PNG":
        need, what = png_floor(data)
    elif fmt == "GIF":
        need, what = gif_floor(data)
    elif fmt == "BMP":
        need, what = bmp_floor(data)
    elif fmt == "TIFF":
        need, what = tiff_floor(image, size)
    elif fmt == "WEBP":
        need, what = webp_floor(data)
    elif fmt in ("HEIF", "AVIF"):
        need, what = isobmff_floor(data)
    else:
        return
    if need is not None and size < need:
        w, h = image.size
        raise CorruptImage(f"truncated: its header claims {w}x{h} pixels, which take at least "
                           f"{need} bytes {what}, but the file has {size}", name)


class _bytes_of:
    """The file's bytes without a copy where it has a descriptor (mmap), else read once."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.map = None

    def __enter__(self):
        try:
            fd = self.file.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is not None:
            try:
                self.map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                return self.map
            except (OSError, ValueError):
                pass
        getvalue = getattr(self.file, "getvalue", None)
        if getvalue is not None:
            return getvalue()
        self.file.seek(0)
        return self.file.read()

    def __exit__(self, *exc_info) -> None:
        if self.map is not None:
            self.map.close()


# ---- JPEG --------------------------------------------------------------------------------

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_ARITHMETIC = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}


def jpeg_scans(data) -> int:
    """The number of scans (SOS markers) of the first image in ``data`` (stops at its EOI)."""
    return _walk_jpeg(data, None)[0]


def jpeg_floor(data, name=None):
    """(fewest bytes, why) for a JPEG; OverBudget past MAX_JPEG_SCANS (counted before any decode)."""
    frame = _walk_jpeg(data, name, stop_at_scan=True)[1]
    # Only a progressive decoder redoes work per scan (a sequential one is done once every
    # component has had its scan), so only progressive files are counted.  Every scan starts
    # with the bytes FF DA, which entropy-coded data never holds: counting them (C speed)
    # bounds the scans from above; only a file over the limit by that count is walked marker
    # by marker, to tell scans from FF DA inside metadata.
    if frame is not None and frame[0] in _PROGRESSIVE:
        blob = data if isinstance(data, bytes) else data[:]
        if blob.count(b"\xff\xda") > MAX_JPEG_SCANS:
            _walk_jpeg(data, name)
    if frame is None or frame[0] in _ARITHMETIC:
        return None, ""  # arithmetic coding has no per-block floor
    _marker, width, height, comps = frame
    hmax = max(c[0] for c in comps) or 1
    vmax = max(c[1] for c in comps) or 1
    blocks = sum(math.ceil(math.ceil(width * hs / hmax) / 8) * math.ceil(math.ceil(height * vs / vmax) / 8)
                 for hs, vs in comps)
    # Huffman coding spends at least one bit on each block's DC coefficient.
    return blocks // 8 // SLACK, f"(one bit for each of its {blocks} blocks)"


def _walk_jpeg(data, name, stop_at_scan: bool = False):
    n = len(data)
    pos = 2  # after SOI
    scans = 0
    frame = None
    while pos < n:
        if data[pos] != 0xFF:
            # Garbage between segments: libjpeg skips it with a warning; find the next marker.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI: the end of the first image (an MPO's others follow)
            break
        if marker in _NO_LENGTH or marker == 0x00:
            continue
        if pos + 2 > n:
            break
        length = (data[pos] << 8) | data[pos + 1]
        if marker in _SOF and frame is None and pos + 8 <= n:
            height, width = struct.unpack(">HH", bytes(data[pos + 3:pos + 7]))
            count = data[pos + 7]
            comps = []
            for i in range(count):
                at = pos + 8 + 3 * i + 1
                if at >= n:
                    break
                comps.append((data[at] >> 4, data[at] & 15))
            if comps:
                frame = (marker, width, height, comps)
        pos += length
        if marker == 0xDA:
            if stop_at_scan:
                break
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise OverBudget(f"a JPEG of more than {MAX_JPEG_SCANS} scans (progressive encoders "
                                 f"write about 10): refused before decoding", name)
            pos = _after_entropy(data, pos)
    return scans, frame


def _after_entropy(data, pos: int) -> int:
    """The position of the marker that ends the entropy-coded data starting at ``pos``.

    In entropy-coded data a 0xFF is followed by a stuffed 0x00, a restart
    marker (0xD0-0xD7) or another 0xFF (fill); any other byte after it is
    the next marker.  One regular-expression search (C speed, a few ms for a
    12 MP photo's data against a Python loop's tens).
    """
    found = _MARKER.search(data, pos)
    return len(data) if found is None else found.start()


_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


# ---- PNG, GIF, BMP --------------------------------------------------------------------------

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_floor(data):
    n = len(data)
    if n < 33:
        return None, ""
    width, height, depth, colour = struct.unpack(">IIBB", bytes(data[16:26]))
    row = math.ceil(width * _PNG_CHANNELS.get(colour, 1) * depth / 8) + 1
    raw = row * height
    # What counts is the IDAT data: walk the chunks to add up their lengths.
    pos, idat, seen = 8, 0, False
    while pos + 8 <= n:
        length = struct.unpack(">I", bytes(data[pos:pos + 4]))[0]
        kind = bytes(data[pos + 4:pos + 8])
        if kind == b"IDAT":
            idat += min(length, n - pos - 8)
            seen = True
        elif seen or kind == b"IEND":
            break
        pos += 12 + length
    need = raw // _DEFLATE_RATIO // SLACK
    if idat < need:
        # Report in file bytes: what the file lacks is image data.
        return n + (need - idat), f"of image data (deflate compresses {_DEFLATE_RATIO}:1 at most)"
    return None, ""


def gif_floor(data):
    n = len(data)
    if n < 13:
        return None, ""
    flags = data[10]
    pos = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    while pos < n:
        block = data[pos]
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # the first frame
            if pos + 10 > n:
                return None, ""
            w, h = struct.unpack("<HH", bytes(data[pos + 5:pos + 9]))
            fl = data[pos + 9]
            start = pos + 10 + (3 * (2 << (fl & 7)) if fl & 0x80 else 0) + 1  # + LZW minimum code size
            end = _skip_sub_blocks(data, start)
            coded = end - start
            need = w * h // _LZW_PIXELS_PER_BYTE // SLACK
            if coded < need:
                return n + (need - coded), f"of LZW data for its first frame ({w}x{h})"
            return None, ""
        else:
            return None, ""
    return None, ""


def _skip_sub_blocks(data, pos: int) -> int:
    n = len(data)
    while pos < n:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return min(pos, n)


def bmp_floor(data):
    n = len(data)
    if n < 30:
        return None, ""
    offset = struct.unpack("<I", bytes(data[10:14]))[0]
    header = struct.unpack("<I", bytes(data[14:18]))[0]
    if header == 12:
        w, h, _planes, bpp = struct.unpack("<HHHH", bytes(data[18:26]))
        compression = 0
    elif n >= 34:
        w, h, _planes, bpp, compression = struct.unpack("<iiHHI", bytes(data[18:34]))
    else:
        return None, ""
    w, h = abs(w), abs(h)
    if compression in (0, 3, 6):
        stride = (w * bpp + 31) // 32 * 4
        return offset + stride * h // SLACK, "(its rows, uncompressed)"
    if compression in (1, 2):
        return w * h // _BMP_RLE_PIXELS_PER_BYTE // SLACK, "(of run-length data)"
    return None, ""


# ---- TIFF, WebP, HEIF/AVIF -----------------------------------------------------------------

def tiff_floor(image, size: int):
    """From the first IFD Pillow has read: strips or tiles must lie in the file, and hold enough data."""
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return None, ""
    offsets = tags.get(324) or tags.get(273)
    counts = tags.get(325) or tags.get(279)
    if not offsets or not counts:
        return None, ""
    if not isinstance(offsets, tuple):
        offsets = (offsets,)
    if not isinstance(counts, tuple):
        counts = (counts,)
    end = max(o + c for o, c in zip(offsets, counts))
    if end > size:
        return end, "(where its strip or tile table says its data ends)"
    w, h = image.size
    bits = tags.get(258) or (1,)
    bits = sum(bits) if isinstance(bits, tuple) else bits
    raw = w * h * bits // 8
    ratio = {1: 1, 5: _LZW_PIXELS_PER_BYTE, 8: _DEFLATE_RATIO, 32946: _DEFLATE_RATIO,
             32773: _PACKBITS_RATIO}.get(tags.get(259, 1))
    if ratio is None:
        return None, ""
    need = raw // ratio // SLACK
    coded = sum(counts)
    if coded < need:
        return size + need - coded, "of strip or tile data"
    return None, ""


def webp_floor(data):
    """A RIFF file holds the bytes its header counts, and its first chunk fits in them."""
    n = len(data)
    if n < 20:
        return 20, "(a RIFF header and a chunk)"
    riff = struct.unpack("<I", bytes(data[4:8]))[0] + 8
    chunk = struct.unpack("<I", bytes(data[16:20]))[0] + 20
    return max(riff, chunk), "(as its RIFF chunk sizes count them)"


def isobmff_floor(data):
    """Every top-level box of a HEIF/AVIF file lies in the file (the media data box last)."""
    n = len(data)
    pos = 0
    while pos + 8 <= n:
        size = struct.unpack(">I", bytes(data[pos:pos + 4]))[0]
        if size == 1 and pos + 16 <= n:
            size = struct.unpack(">Q", bytes(data[pos + 8:pos + 16]))[0]
        elif size == 0:
            return None, ""
        if size < 8:
            return None, ""  # the decoder says what is wrong
        if pos + size > n:
            return pos + size, f"(as its {bytes(data[pos + 4:pos + 8]).decode('latin-1')!r} box counts them)"
        pos += size
    return None, ""


# ---- memory -------------------------------------------------------------------------------

def memory_estimate(decoded_bytes: int, pixels: int, output_sizes) -> int:
    """The memory one image takes while it is processed: what admission (--max-memory) counts.

    The decode and its sRGB/upright copy (``DECODE_COPIES`` times the decoded
    bytes), and for each output of ``output_sizes`` ((w, h) pairs) its RGBA
    pixels ``OUTPUT_COPIES`` times (the result, the backend's scratch and the
    encoder's buffers).  Measured on a 100 MP image with the three
    operations: 1.73 GB peak RSS against 1.78 GB estimated.
    """
    per_pixel = decoded_bytes / max(pixels, 1)
    outputs = sum(w * h for w, h in output_sizes)
    return int(DECODE_COPIES * decoded_bytes + OUTPUT_COPIES * per_pixel * outputs)

#: The share of the machine's available memory (or its cgroup's limit) the default --max-memory takes.
DEFAULT_MEMORY_SHARE = 0.5
#: The default --job-timeout, in seconds.
DEFAULT_JOB_TIMEOUT = 120.0

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"``: bytes (binary units).  ValueError otherwise."""
    s = str(text).strip().lower().removesuffix("ib").removesuffix("b")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:] else ""
    number = s[: len(s) - len(unit)].strip()
    value = float(number)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return int(value * _UNITS[unit])


def available_memory() -> int | None:
    """What this process may use: the smaller of MemAvailable and its cgroup's room left; None if unknown."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            if limit == "max" or int(limit) >= 1 << 60:
                continue
            with open(usage_file) as f:
                used = int(f.read().strip())
            found.append(max(int(limit) - used, 0))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def default_max_memory() -> int | None:
    """The default --max-memory: DEFAULT_MEMORY_SHARE of available_memory() (None: no bound known)."""
    room = available_memory()
    return None if room is None else max(int(room * DEFAULT_MEMORY_SHARE), 256 << 20)
