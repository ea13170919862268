"""16-bit samples that declare fewer significant bits (a TIFF's MaxSampleValue, a PNG's sBIT), scaled by what they declare.

A 12-bit scanner or camera often stores its samples as they are, 0-4095, in
16-bit samples, and says so: TIFF in MaxSampleValue, PNG in sBIT.  Scaled as
full 16-bit samples they come out nearly black.  Here they are scaled by
the largest value they declare instead.

A PNG whose samples were scaled up to 16 bits as the PNG specification asks
(sBIT then only records the original depth) is left alone: its samples go
above the declared maximum, or are all multiples of the left shift.

Pillow keeps only the high byte of 16-bit colour samples, so for colour the
image is decoded a second time with the low byte's raw mode, and the two are
put together; gray 16-bit images Pillow keeps whole.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from PIL import Image

_GRAY16 = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
# Pillow's raw modes of 16-bit colour samples (high byte kept) -> the same samples' low byte.
_NATIVE_LOW = "B" if sys.byteorder == "little" else "L"
_LOW_BYTE = {
    f"{m};16{order}": f"{m};16{low}"
    for m in ("RGB", "RGBA", "LA")
    for order, low in (("B", "L"), ("L", "B"), ("N", _NATIVE_LOW))
}
# The most PNG chunks read looking for sBIT before the image data.
_PNG_CHUNKS = 64


def declared_maximum(im: Image.Image, file: BinaryIO) -> tuple[int, ...] | None:
    """The largest sample value each channel declares, where 16-bit samples declare less than 65535; else None."""
    if im.format == "TIFF":
        bits = im.tag_v2.get(258)
        top = im.tag_v2.get(281)
        if not bits or any(b != 16 for b in _tuple(bits)) or top is None:
            return None
        top = _tuple(top)
        if len(top) == 1:
            top = top * len(_tuple(bits))
        if all(0 < t < 65535 for t in top):
            return tuple(int(t) for t in top)
        return None
    if im.format == "PNG":
        sbit = _png_sbit(file)
        if sbit is None or not all(1 <= b < 16 for b in sbit):
            return None
        return tuple((1 << b) - 1 for b in sbit)
    return None


def raw_modes(im: Image.Image) -> set:
    """The raw modes of ``im``'s tiles, read before it is loaded (loading forgets them)."""
    return {(t.args[0] if isinstance(t.args, tuple) else t.args) for t in im.tile}


def decode_scaled(im: Image.Image, top: tuple[int, ...], rawmodes: set, file: BinaryIO) -> Image.Image | None:
    """``im`` (loaded) as 8-bit L, LA, RGB or RGBA scaled by ``top``; None where it does not apply.

    ``rawmodes`` are what ``raw_modes`` said before the load; ``file`` opens the
    image again for the low bytes of colour samples.
    """
    import numpy as np

    if im.mode in _GRAY16:
        samples = np.asarray(im).astype(np.uint32)[..., None]
    elif im.mode in ("RGB", "RGBA", "LA") and _low_bytes_mode(rawmodes) is not None:
        low = _decode_low_bytes(im, _low_bytes_mode(rawmodes), file)
        if low is None:
            return None
        samples = (np.asarray(im).astype(np.uint32) << 8) | low
        if samples.ndim == 2:
            samples = samples[..., None]
    else:
        return None
    channels = samples.shape[-1]
    top = (top + top[-1:] * channels)[:channels]
    limit = np.array(top, dtype=np.uint32)
    if im.format == "PNG" and (
            (samples > limit).any() or not (samples % (65536 // (limit + 1))).any()):
        return None  # scaled to 16 bits already, as the PNG specification has it
    scaled = (np.minimum(samples, limit) * 255 + limit // 2) // limit
    out8 = scaled.astype(np.uint8)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    out = Image.fromarray(out8[..., 0] if channels == 1 else out8, mode)
    key = im.info.get("transparency")
    if channels == 1 and isinstance(key, int):
        out.putalpha(Image.fromarray(np.where(samples[..., 0] == key, 0, 255).astype(np.uint8)))
    out.info = {k: v for k, v in im.info.items() if k == "icc_profile"}
    return out


def _low_bytes_mode(modes: set) -> str | None:
    lows = {_LOW_BYTE.get(m) if isinstance(m, str) else None for m in modes}
    return lows.pop() if len(lows) == 1 and None not in lows else None


def _decode_low_bytes(im: Image.Image, low_mode: str, file: BinaryIO):
    """The low byte of every 16-bit colour sample: the image decoded again with the other byte's raw mode."""
    import numpy as np

    file.seek(0)
    again = Image.open(file, formats=[im.format])
    try:
        def swapped(tile):
            if isinstance(tile.args, tuple):
                return tile._replace(args=(low_mode,) + tuple(tile.args[1:]))
            return tile._replace(args=low_mode)

        again.tile = [swapped(t) for t in again.tile]
        again.load()
        if again.size != im.size or again.mode != im.mode:
            return None
        return np.asarray(again).astype(np.uint32)
    except (ValueError, OSError):  # no unpacker for that raw mode in this Pillow: keep the high bytes
        return None
    finally:
        again.close()


def _png_sbit(file: BinaryIO) -> tuple[int, ...] | None:
    """The significant bits of a 16-bit PNG's channels (its sBIT chunk, before IDAT), or None."""
    file.seek(8)
    header = file.read(8 + 13)
    if len(header) < 21 or header[4:8] != b"IHDR" or header[16] != 16:
        return None
    file.seek(8 + 8 + 13 + 4)
    for _ in range(_PNG_CHUNKS):
        head = file.read(8)
        if len(head) < 8:
            return None
        length, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"sBIT":
            data = file.read(min(length, 4))
            return tuple(data) if data else None
        file.seek(length + 4, 1)
    return None


def _tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
