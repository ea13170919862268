"""Video clips for the tests, made with PyAV: every frame's grey level says its index, two corner marks
say which way is up.

Frame ``i`` is a flat grey of ``level(i, n)``, far enough from its
neighbours' (>= 7 levels) that a lossy codec cannot make one frame look like
another.  The upright picture has a red mark in its top-left corner and a
green one in its top-right, so a rotation or a mirror that went wrong shows.
A rotated clip stores each frame turned the other way and says in its
display matrix how to turn it back (what a phone does).
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np

MARK = 8
WIDTH, HEIGHT = 64, 48
RED, GREEN = (255, 0, 0), (0, 255, 0)

# (muxer, codec, encoder options, suffix): the containers and codecs uploads come in.
FORMATS = {
    "h264-mp4": ("mp4", "libx264", {"crf": "12", "preset": "ultrafast"}, ".mp4"),
    "h264-mov": ("mov", "libx264", {"crf": "12", "preset": "ultrafast"}, ".mov"),
    "h264-m4v": ("ipod", "libx264", {"crf": "12", "preset": "ultrafast"}, ".m4v"),
    "hevc-mp4": ("mp4", "libx265", {"crf": "12", "preset": "ultrafast", "x265-params": "log-level=error"},
                 ".mp4"),
    "mpeg4-avi": ("avi", "mpeg4", {"qscale": "2"}, ".avi"),
    "vp9-webm": ("webm", "libvpx-vp9", {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"},
                 ".webm"),
    "vp8-webm": ("webm", "libvpx", {"crf": "4", "b": "2M", "deadline": "realtime", "cpu-used": "8"}, ".webm"),
    "h264-mkv": ("matroska", "libx264", {"crf": "12", "preset": "ultrafast"}, ".mkv"),
}


def level(i: int, n: int) -> int:
    """Frame ``i``'s grey level in a clip of ``n`` frames (0 for the first, 250 for the last)."""
    return round(i * 250 / max(1, n - 1))


def upright_picture(i: int, n: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    a = np.full((height, width, 3), level(i, n), np.uint8)
    a[:MARK, :MARK] = RED
    a[:MARK, -MARK:] = GREEN
    return a


def stored_for(picture: np.ndarray, rotation: int, hflip: bool) -> np.ndarray:
    """What a camera stores so that ``set_display_rotation(rotation, hflip)`` shows ``picture``.

    That display matrix turns the stored frame ``rotation`` degrees
    counter-clockwise (PyAV's and FFmpeg's convention), then mirrors it left to
    right when ``hflip`` (the transpose filters FFmpeg's own autorotation picks
    for it); so the stored frame is the picture mirrored, then turned clockwise.
    """
    stored = picture[:, ::-1] if hflip else picture
    return np.ascontiguousarray(np.rot90(stored, k=-(rotation // 90)))


def make_clip(target, kind: str = "h264-mp4", *, n: int = 36, rate: Fraction = Fraction(25),
              rotation: int | None = None, hflip: bool = False,
              size: tuple[int, int] = (WIDTH, HEIGHT), container_options: dict | None = None,
              noise: bool = False, rotate_tag: int | None = None) -> bytes | Path:
    """Write a clip of ``n`` frames to ``target`` (a path, or None for bytes); its bytes or path."""
    muxer, codec, options, _suffix = FORMATS[kind]
    buf = io.BytesIO() if target is None else None
    out = av_open(buf if buf is not None else str(target), muxer, container_options)
    stream = out.add_stream(codec, rate=rate)
    width, height = size
    if (rotation or rotate_tag or 0) % 180:
        width, height = height, width
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.options = dict(options)
    if rotation is not None or hflip:
        stream.set_display_rotation(rotation or 0, hflip=hflip)
    if rotate_tag is not None:
        # The old tag, from before display matrices: the clockwise turn that shows the frame.
        stream.metadata["rotate"] = str(rotate_tag)
    tb = 1 / rate
    rng = np.random.default_rng(7)
    import av

    for i in range(n):
        picture = upright_picture(i, n, *size)
        if noise:
            picture = rng.integers(0, 256, picture.shape, dtype=np.uint8)
        stored = stored_for(picture, rotation or 0, hflip)
        if rotate_tag:
            stored = np.ascontiguousarray(np.rot90(picture, k=rotate_tag // 90))
        frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
        frame.pts = i
        frame.time_base = tb
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return buf.getvalue() if buf is not None else Path(target)


def make_audio(target, muxer: str = "mp4", codec: str = "aac", seconds: float = 1.0) -> Path:
    """A clip with one audio stream and no video."""
    import av

    out = av.open(str(target), "w", format=muxer)
    stream = out.add_stream(codec, rate=48000)
    samples = int(48000 * seconds)
    tone = (np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000) * 0.3).astype(np.float32)
    step = 1024
    for start in range(0, samples, step):
        chunk = tone[start:start + step]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 48000
        frame.pts = start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return Path(target)


def av_open(target, muxer: str, container_options: dict | None):
    import av

    return av.open(target, "w", format=muxer, options=container_options or {})


def frame_index(image, n: int) -> int:
    """Which frame ``image`` is: the clip frame whose grey is nearest the picture's middle."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w = a.shape[:2]
    grey = a[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean()
    return min(range(n), key=lambda i: abs(level(i, n) - grey))


def corner_colours(image) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The mean colour of each corner mark region: top-left, top-right, bottom-left, bottom-right."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    m = MARK // 2  # inside the mark, away from chroma bleeding at its edge
    s = slice(1, m + 1)
    corners = [a[s, s], a[s, -m - 1:-1], a[-m - 1:-1, s], a[-m - 1:-1, -m - 1:-1]]
    return tuple(tuple(int(v) for v in c.reshape(-1, 3).mean(axis=0)) for c in corners)
