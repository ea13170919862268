"""Hostile files made on the spot: a scan-bomb JPEG, and files whose headers claim far more pixels than
their data holds, one per accepted format.  Used by the tests and by bench/hostile.py."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _noise(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def _segments(data: bytes):
    """(start, end, marker) of each JPEG segment, a scan's entropy data counted with its SOS."""
    pos, n = 2, len(data)
    while pos < n:
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        if marker == 0xD9:
            yield pos, pos + 2, marker
            return
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        end = pos + 2 + length
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        yield pos, end, marker
        pos = end


def scan_bomb_jpeg(scans: int = 3000, side: int = 1024) -> bytes:
    """A progressive JPEG whose smallest refinement scan is repeated ``scans`` times: a few hundred KB
    that a decoder without a scan limit spends seconds to minutes on."""
    y, x = np.mgrid[0:side, 0:side]
    smooth = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], axis=-1).astype(np.uint8)
    data = _save(smooth, "JPEG", quality=90, progressive=True)
    segs = list(_segments(data))
    sos = [s for s in segs if s[2] == 0xDA]
    # The smallest scan after the first (a refinement scan of a few bits) is the one repeated.
    start, end, _ = min(sos[1:], key=lambda s: s[1] - s[0])
    eoi = segs[-1][0]
    return data[:eoi] + data[start:end] * scans + data[eoi:]


def jpeg_scan_count(data: bytes) -> int:
    return sum(1 for s in _segments(data) if s[2] == 0xDA)


def forged_jpeg(side: int = 10954) -> bytes:
    """A 1-2 KB JPEG whose frame header claims side x side (under the pixel limit), then EOI."""
    data = bytearray(_save(_noise(16, 16), "JPEG", quality=80))
    for start, _end, marker in _segments(bytes(data)):
        if marker == 0xC0:
            struct.pack_into(">HH", data, start + 5, side, side)
    return bytes(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def forged_png(side: int = 10000) -> bytes:
    """A PNG claiming side x side RGB whose image data holds one row."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    row = b"\x00" + bytes(range(256)) * (side * 3 // 256) + b"\x00" * (side * 3 % 256)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(row, 9))
            + _png_chunk(b"IEND", b""))


def forged_gif(side: int = 10000) -> bytes:
    """A GIF whose screen and first frame claim side x side, with a few bytes of LZW data."""
    data = bytearray(_save(_noise(4, 4)[:, :, 0], "GIF"))
    struct.pack_into("<HH", data, 6, side, side)
    flags = data[10]
    pos = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    while data[pos] == 0x21:
        pos += 2
        while data[pos]:
            pos += 1 + data[pos]
        pos += 1
    assert data[pos] == 0x2C
    struct.pack_into("<HH", data, pos + 5, side, side)
    return bytes(data)


def forged_bmp(side: int = 10000) -> bytes:
    """A 24-bit BMP header claiming side x side, with a hundred bytes of pixels."""
    pixels = b"\x80" * 100
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 14 + 40)
    return head + info + pixels


def cut(data: bytes, fraction: float) -> bytes:
    return data[: max(64, int(len(data) * fraction))]


def truncated_webp(side: int = 3000) -> bytes:
    return cut(_save(_noise(side, side), "WEBP", quality=80, method=0), 0.05)


def truncated_tiff(side: int = 2000) -> bytes:
    return cut(_save(_noise(side, side), "TIFF"), 0.05)


def truncated_avif(side: int = 1000) -> bytes:
    return cut(_save(_noise(side, side), "AVIF", quality=60, speed=10), 0.3)


def truncated_heif(side: int = 1000) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return cut(_save(_noise(side, side), "HEIF", quality=60), 0.3)


#: name -> (maker, file suffix) of a file per accepted format that claims far more than it holds.
TRUNCATED = {
    "jpeg": (forged_jpeg, "jpg"),
    "png": (forged_png, "png"),
    "gif": (forged_gif, "gif"),
    "bmp": (forged_bmp, "bmp"),
    "webp": (truncated_webp, "webp"),
    "tiff": (truncated_tiff, "tif"),
    "avif": (truncated_avif, "avif"),
    "heif": (truncated_heif, "heic"),
}
