"""Video uploads: the frame at 1 s (the first of a shorter video), upright, as a PIL RGB image (PyAV).

PyAV (the ``video`` extra) brings its own FFmpeg libraries.  Uploads are
hostile, so:

- the container is recognised by its magic bytes (ISO BMFF ``ftyp`` with a
  video brand, Matroska/WebM's EBML header, RIFF AVI) and opened with that
  demuxer only: FFmpeg never probes other formats (a playlist or a concat
  script named ``.mp4`` would make it open other files or URLs) and never
  opens a path itself (it reads from a Python file object);
- a container that declares more bytes than the file holds (an upload cut
  short) is refused, as is one FFmpeg cannot read or that has no video stream:
  a permanent error naming the file;
- the frame's size from the stream header is checked against ``max_pixels``
  before any frame is decoded, and FFmpeg's decoder is given the same limit
  for every frame it allocates (a header that lies);
- decoding has a time budget (``timeout``, 30 s): the deadline is checked
  between every packet read and every frame decoded, and is FFmpeg's own
  interrupt deadline for what it reads, so a video that would take longer
  stops with a permanent error, and no single step is unbounded (each is
  one packet, one frame within the pixel limit).

Rotation: a phone stores a portrait video as landscape frames plus a display
matrix (MP4/MOV ``tkhd``, Matroska projection) saying how to turn them; the
matrix is read from the decoded frame's side data and applied (quarter
turns and mirrors, as FFmpeg's own autorotation does), or, in files without
one, the old ``rotate`` tag (the clockwise angle).
"""

from __future__ import annotations

import io
import math
import os
import struct
import time
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import CorruptImage, ImageTooLarge, JobTimeout, UnsupportedFormat, from_os_error

VIDEO_SUFFIXES = frozenset(".mp4 .mov .m4v .webm .mkv .avi".split())
DEFAULT_TIMEOUT = 30.0
FRAME_AT = 1.0
DEFAULT_MAX_PIXELS = 120_000_000
SNIFF_BYTES = 64
# Frame times are compared with this slack: containers round them (Matroska to
# the millisecond): half a millisecond keeps 1.000 s the frame at 1 s and
# 1.001 s (29.97 fps) the next one.
TIME_EPSILON = 5e-4

# ISO BMFF brands of video files (MP4, QuickTime, M4V, 3GPP, DASH); HEIF/AVIF
# images use the same box structure with brands of their own, listed apart so
# that an image sequence (AVIS, HEIF sequence) stays an image.
_VIDEO_BRANDS = frozenset({
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9", b"mp41", b"mp42",
    b"mp71", b"avc1", b"M4V ", b"M4VH", b"M4VP", b"qt  ", b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3gp8",
    b"3gp9", b"3ge6", b"3ge7", b"3gg6", b"3g2a", b"3g2b", b"3g2c", b"dash", b"msdh", b"msix", b"MSNV",
    b"f4v ", b"XAVC", b"mmp4", b"kddi", b"CAEP",
})
_IMAGE_BRANDS = frozenset(b"avif avis heic heix heim heis hevc hevx hevm hevs mif1 msf1 mif2 miaf".split())
_DEMUXERS = {"mp4": "mov", "mov": "mov", "webm": "matroska", "matroska": "matroska", "avi": "avi"}


class VideoTimeout(JobTimeout):
    """Decoding did not reach the frame within the time budget (--video-timeout)."""

    code = "timeout"


def is_video_name(name: str) -> bool:
    """True for a file name with a video suffix (the sniffed bytes decide in the end)."""
    return os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


def sniff_video(head: bytes) -> str | None:
    """The container a file's first bytes show: "mp4", "mov", "webm", "matroska", "avi", or None."""
    head = bytes(head[:SNIFF_BYTES])
    if len(head) >= 12 and head[4:8] == b"ftyp":
        size = int.from_bytes(head[0:4], "big")
        end = min(len(head), size if size >= 16 else 16)
        major = head[8:12]
        compatible = [head[i:i + 4] for i in range(16, end - 3, 4)]
        if major in _IMAGE_BRANDS or any(b in (b"mif1", b"msf1", b"avif", b"avis") for b in compatible):
            return None
        if major in _VIDEO_BRANDS or any(b in _VIDEO_BRANDS for b in compatible):
            return "mov" if major == b"qt  " else "mp4"
        return None
    if head[:4] == b"\x1a\x45\xdf\xa3":
        # EBML header; its DocType element (0x4282) names the flavour.
        at = head.find(b"\x42\x82")
        if at >= 0 and at + 3 <= len(head):
            length = head[at + 2] & 0x7F if head[at + 2] & 0x80 else 0
            doctype = head[at + 3:at + 3 + length]
            if doctype == b"webm":
                return "webm"
            if doctype == b"matroska":
                return "matroska"
        return None
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    return None


@dataclass(frozen=True)
class VideoInfo:
    container: str  # as sniff_video names it
    codec: str
    width: int  # as stored (before rotation), from the stream header
    height: int


def probe_video(source, name: str | None = None) -> VideoInfo:
    """The container, codec and stored frame size from the headers, decoding nothing."""
    with _Opened(source, name) as opened:
        container, stream = opened.open(deadline=time.monotonic() + DEFAULT_TIMEOUT)
        ctx = stream.codec_context
        return VideoInfo(opened.kind, ctx.name, ctx.width, ctx.height)


def video_frame(
    source,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float = DEFAULT_TIMEOUT,
    at: float = FRAME_AT,
    name: str | None = None,
    threads: int = 1,
):
    """The frame on screen ``at`` seconds in (the first frame of a shorter video), upright, as PIL RGB.

    ``source`` is a path, bytes, or a seekable binary file.  "On screen at
    1 s" is the last frame that starts no later than 1 s after the first
    one (at 29.97 fps, frame 29, shown from 0.968 s to 1.001 s); a video that
    ends before 1 s gives its first frame.  Errors, each permanent and naming
    the file: UnsupportedFormat (not one of the video containers, or no
    video stream), CorruptImage (cut short or unreadable), ImageTooLarge
    (over ``max_pixels``), VideoTimeout (over ``timeout`` seconds).
    """
    if not timeout > 0:
        raise ValueError("timeout must be > 0")
    deadline = time.monotonic() + timeout
    with _Opened(source, name) as opened:
        container, stream = opened.open(deadline, max_pixels)
        ctx = stream.codec_context
        if ctx.width and ctx.height and ctx.width * ctx.height > max_pixels:
            raise ImageTooLarge(
                f"video frame is {ctx.width}x{ctx.height} = {ctx.width * ctx.height} pixels, "
                f"over the limit of {max_pixels}", opened.name)
        ctx.options = {"max_pixels": str(max_pixels)}
        ctx.thread_count = max(1, threads)
        frame = opened.pick_frame(container, stream, at, deadline, timeout)
        if frame.width * frame.height > max_pixels:
            raise ImageTooLarge(f"video frame is {frame.width}x{frame.height}, over the limit of {max_pixels}",
                                opened.name)
        image = frame.to_image()  # RGB24, converted by the frame's own colour space
        return _upright(image, frame, stream)


class _Opened:
    """The file object, the sniffed container, and the mapping of every failure to a named error."""

    def __init__(self, source, name: str | None):
        self.name = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<video>")
        self._source = source
        self._file: BinaryIO | None = None
        self._own_file = False
        self._container = None
        self.kind = ""

    def __enter__(self) -> "_Opened":
        src = self._source
        if isinstance(src, (bytes, bytearray, memoryview)):
            self._file = io.BytesIO(src)
        elif isinstance(src, (str, os.PathLike)):
            try:
                self._file = open(src, "rb")
            except OSError as exc:
                raise from_os_error(exc, self.name) from None
            self._own_file = True
        else:
            self._file = src
        return self

    def __exit__(self, *exc) -> None:
        if self._container is not None:
            self._container.close()
        if self._own_file and self._file is not None:
            self._file.close()

    def open(self, deadline: float, max_pixels: int = DEFAULT_MAX_PIXELS):
        """Sniff, check the container's declared length, open with that demuxer; (container, video stream)."""
        import av

        f = self._file
        try:
            start = f.tell()
            head = f.read(SNIFF_BYTES)
            length = f.seek(0, os.SEEK_END) - start
            f.seek(start)
        except OSError as exc:
            raise from_os_error(exc, self.name) from None
        if not head:
            raise CorruptImage("empty file", self.name)
        kind = sniff_video(head)
        if kind is None:
            raise UnsupportedFormat("not a video this build reads (MP4, MOV, M4V, WebM, MKV, AVI)", self.name)
        self.kind = kind
        _check_complete(f, start, length, kind, self.name, deadline)
        f.seek(start)
        remaining = max(0.001, deadline - time.monotonic())
        try:
            # max_pixels also binds the decoders FFmpeg opens to probe the streams.
            self._container = av.open(f, mode="r", format=_DEMUXERS[kind], timeout=(remaining, remaining),
                                      options={"max_pixels": str(max_pixels)}, metadata_errors="replace")
        except av.error.ExitError:
            raise VideoTimeout("reading the video took longer than the time limit", self.name) from None
        except (av.error.FFmpegError, EOFError, OSError) as exc:
            raise CorruptImage(f"corrupt or truncated video ({_reason(exc)})", self.name) from None
        streams = [s for s in self._container.streams.video if not _is_cover_art(s)]
        if not streams:
            what = "audio only" if self._container.streams.audio else "no stream"
            raise UnsupportedFormat(f"no video stream ({what})", self.name)
        return self._container, streams[0]

    def pick_frame(self, container, stream, at: float, deadline: float, timeout: float):
        import av

        first = previous = None
        origin = None
        index = 0
        rate = stream.average_rate or stream.guessed_rate
        try:
            for packet in container.demux(stream):
                _check_deadline(deadline, timeout, self.name)
                for frame in packet.decode():
                    _check_deadline(deadline, timeout, self.name)
                    t = frame.time
                    if t is None:  # no timestamps: count frames at the stream's rate
                        t = index / float(rate) if rate else 0.0
                    index += 1
                    if origin is None:
                        origin, first = t, frame
                    rel = t - origin
                    if rel >= at - TIME_EPSILON:
                        if rel <= at + TIME_EPSILON or previous is None:
                            return frame
                        return previous
                    previous = frame
        except av.error.ExitError:
            raise VideoTimeout(f"decoding took longer than {timeout:g} s", self.name) from None
        except (av.error.FFmpegError, EOFError, OSError) as exc:
            raise CorruptImage(f"corrupt video ({_reason(exc)})", self.name) from None
        if first is None:
            raise CorruptImage("corrupt or truncated video (no frame could be decoded)", self.name)
        # Shorter than ``at``, unless the last frame is still on screen then.
        duration = previous.duration * float(previous.time_base) if previous.duration and previous.time_base else 0
        last_start = (previous.time - origin) if previous.time is not None else None
        if last_start is not None and duration and last_start + duration > at + TIME_EPSILON:
            return previous
        return first


def _check_deadline(deadline: float, timeout: float, name: str) -> None:
    if time.monotonic() > deadline:
        what = f"longer than {timeout:g} s" if timeout else "longer than the time limit"
        raise VideoTimeout(f"decoding took {what}", name)


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason in a few words, without its errno and log tail."""
    text = getattr(exc, "strerror", None) or str(exc)
    text = text.split("; last error log")[0]
    return " ".join(text.split())[:160] or type(exc).__name__


def _is_cover_art(stream) -> bool:
    try:
        import av

        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


# --------------------------------------------------------------------------- truncation


def _check_complete(f: BinaryIO, start: int, length: int, kind: str, name: str, deadline: float) -> None:
    """CorruptImage when the container's own sizes say the file was cut short."""
    if kind in ("mp4", "mov"):
        _check_boxes(f, start, length, name, deadline)
    elif kind == "avi":
        f.seek(start + 4)
        declared = int.from_bytes(f.read(4), "little") + 8
        if declared > length:
            raise CorruptImage(f"truncated video (RIFF declares {declared} bytes, the file has {length})", name)
    else:
        _check_ebml(f, start, length, name)


def _check_boxes(f: BinaryIO, start: int, length: int, name: str, deadline: float) -> None:
    # Top-level ISO BMFF boxes must tile the file: a cut inside mdat or moov
    # leaves the last box longer than what is left.  A fragmented MP4 has two
    # boxes per fragment; a file of millions of empty boxes meets the deadline.
    pos = 0
    count = 0
    while pos + 8 <= length:
        count += 1
        if count % 1024 == 0:
            _check_deadline(deadline, 0, name)
        f.seek(start + pos)
        header = f.read(16)
        size = int.from_bytes(header[0:4], "big")
        if size == 1:
            if len(header) < 16:
                break
            size = int.from_bytes(header[8:16], "big")
        elif size == 0:
            return  # "to the end of the file"
        if size < 8:
            raise CorruptImage(f"corrupt video (a {size}-byte box at offset {pos})", name)
        if pos + size > length:
            raise CorruptImage(
                f"truncated video (a {header[4:8].decode('latin-1')!r} box needs {pos + size} bytes, "
                f"the file has {length})", name)
        pos += size


def _read_vint(f: BinaryIO) -> tuple[int, int, bool]:
    """One EBML variable-length integer: (value, its length, whether it is all ones = unknown)."""
    first = f.read(1)
    if not first:
        raise EOFError
    b = first[0]
    width = 8 - int(math.log2(b)) if b else 9
    if width > 8:
        raise ValueError("bad EBML length")
    rest = f.read(width - 1)
    if len(rest) != width - 1:
        raise EOFError
    value = b & ((1 << (8 - width)) - 1)
    for byte in rest:
        value = (value << 8) | byte
    return value, width, value == (1 << (7 * width)) - 1


def _check_ebml(f: BinaryIO, start: int, length: int, name: str) -> None:
    # EBML header element, then the Segment element with its declared size
    # (a file written in one go declares it; a live stream says "unknown").
    try:
        f.seek(start + 4)
        header_size, width, _ = _read_vint(f)
        seg_at = 4 + width + header_size
        f.seek(start + seg_at)
        if f.read(4) != b"\x18\x53\x80\x67":
            raise CorruptImage("corrupt video (no Matroska segment after the header)", name)
        size, width, unknown = _read_vint(f)
    except (EOFError, ValueError):
        raise CorruptImage("truncated or corrupt video (Matroska header)", name) from None
    end = seg_at + 4 + width + size
    if not unknown and end > length:
        raise CorruptImage(f"truncated video (the segment needs {end} bytes, the file has {length})", name)


# --------------------------------------------------------------------------- rotation


def display_transform(matrix: tuple[int, ...]) -> tuple[bool, bool, bool]:
    """``(transpose, mirror, flip)`` that show a frame as FFmpeg's display ``matrix`` says, in that order.

    ``matrix`` is 9 fixed-point numbers, row-major a b u / c d v / x y w; it
    maps a point (p, q) of the stored frame (p rightwards, q downwards) to
    (a p + c q, b p + d q) on screen, plus a shift.  Cameras record quarter
    turns, with or without a mirror, so a, b, c and d are 0 or +-1 (scaled):
    with a = d = 0 the axes swap (a transpose), and a negative coefficient
    then reverses that screen axis (mirror left-right, flip top-bottom).
    Any other angle is taken to the nearest quarter turn.
    """
    a, b, _u, c, d = (float(v) for v in matrix[:5])
    if abs(a) + abs(d) >= abs(b) + abs(c):
        if a == 0 and d == 0:
            return False, False, False  # singular: nothing sensible to apply
        return False, a < 0, d < 0
    return True, c < 0, b < 0


def _upright(image, frame, stream):
    from PIL import Image

    transpose, mirror, flip = False, False, False
    side = _display_matrix(frame)
    if side is not None:
        transpose, mirror, flip = display_transform(side)
    else:
        tags = {str(k).lower(): v for k, v in (stream.metadata or {}).items()}
        rotate = tags.get("rotate")  # Matroska keeps it as ROTATE
        try:
            # The old tag is the clockwise angle that shows the frame.
            turns = round(float(rotate) / 90) % 4 if rotate is not None else 0
        except ValueError:
            turns = 0
        transpose, mirror, flip = ((False, False, False), (True, True, False), (False, True, True),
                                   (True, False, True))[turns]
    if transpose:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    if mirror:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image.convert("RGB") if image.mode != "RGB" else image


def _display_matrix(frame) -> tuple[int, ...] | None:
    try:
        side = frame.side_data.get("DISPLAYMATRIX")
    except (AttributeError, KeyError, ValueError):
        return None
    if side is None:
        return None
    raw = bytes(side)
    if len(raw) < 36:
        return None
    return struct.unpack("=9i", raw[:36])
