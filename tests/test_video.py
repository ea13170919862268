"""Video frames on clips made with PyAV: the frame at 1 s in several codecs and containers, upright
whatever the display matrix says; short, truncated, audio-only, disguised and oversized clips; the
time budget; sniffing by magic bytes."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import numpy as np
import pytest

from imgtool.errors import CorruptImage, ImageTooLarge, ImgtoolError, InputNotFound, UnsupportedFormat
from imgtool.imageio.video import (
    VIDEO_SUFFIXES,
    VideoTimeout,
    display_transform,
    is_video_name,
    probe_video,
    sniff_video,
    video_frame,
)
from videoclips import FORMATS, GREEN, HEIGHT, RED, WIDTH, corner_colours, frame_index, make_audio, make_clip


def near(colour, reference, tolerance=60) -> bool:
    return all(abs(c - r) <= tolerance for c, r in zip(colour, reference))


def assert_upright(image, width=WIDTH, height=HEIGHT):
    assert image.mode == "RGB" and image.size == (width, height)
    top_left, top_right, bottom_left, bottom_right = corner_colours(image)
    assert near(top_left, RED), corner_colours(image)
    assert near(top_right, GREEN), corner_colours(image)
    assert not near(bottom_left, RED) and not near(bottom_right, GREEN)


def expected_index(rate: Fraction, at: float = 1.0) -> int:
    """The frame on screen at ``at`` seconds of a constant-rate clip: frame i shows from i/rate."""
    return math.floor(Fraction(at) * rate)


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_the_frame_at_one_second(kind, tmp_path):
    n = 36
    path = make_clip(tmp_path / f"clip{FORMATS[kind][3]}", kind, n=n)
    image = video_frame(path)
    assert frame_index(image, n) == expected_index(Fraction(25)) == 25
    assert_upright(image)


def test_the_frame_at_one_second_at_29_97_fps_is_the_one_still_on_screen(tmp_path):
    rate = Fraction(30000, 1001)  # frame 29 starts at 0.968 s, frame 30 at 1.001 s
    n = 40
    for kind in ("h264-mp4", "h264-mkv"):
        path = make_clip(tmp_path / f"ntsc{FORMATS[kind][3]}", kind, n=n, rate=rate)
        assert frame_index(video_frame(path), n) == expected_index(rate) == 29


def test_a_video_shorter_than_one_second_gives_its_first_frame(tmp_path):
    n = 12  # 0.48 s
    for kind in ("h264-mp4", "vp9-webm", "mpeg4-avi"):
        path = make_clip(tmp_path / f"short{FORMATS[kind][3]}", kind, n=n)
        image = video_frame(path)
        assert frame_index(image, n) == 0
        assert_upright(image)


@pytest.mark.parametrize("kind", ["h264-mp4", "h264-mkv", "mpeg4-avi"])
def test_a_last_frame_still_on_screen_at_one_second_is_the_frame_at_one_second(kind, tmp_path):
    # Two frames at 1.5 fps: the second is shown from 0.67 s to 1.33 s, so the clip is not shorter
    # than 1 s and its frame at 1 s is the second (the one after it never comes).
    rate = Fraction(3, 2)
    path = make_clip(tmp_path / f"slow{FORMATS[kind][3]}", kind, n=2, rate=rate)
    assert frame_index(video_frame(path), 2) == expected_index(rate) == 1


def test_frame_at_another_time(tmp_path):
    path = make_clip(tmp_path / "clip.mp4", n=36)
    assert frame_index(video_frame(path, at=0.5), 36) == expected_index(Fraction(25), 0.5) == 12


@pytest.mark.parametrize("kind", ["h264-mp4", "h264-mkv"])
@pytest.mark.parametrize("rotation,hflip", [(90, False), (180, False), (270, False), (0, True), (90, True)])
def test_the_display_matrix_is_applied(kind, rotation, hflip, tmp_path):
    n = 30
    path = make_clip(tmp_path / f"rot{FORMATS[kind][3]}", kind, n=n, rotation=rotation, hflip=hflip)
    probe = probe_video(path)
    assert (probe.width, probe.height) == ((HEIGHT, WIDTH) if rotation % 180 else (WIDTH, HEIGHT))
    image = video_frame(path)
    assert_upright(image)  # 64 wide, 48 high, red top left, green top right
    assert frame_index(image, n) == 25


def test_the_old_rotate_tag_is_applied(tmp_path):
    path = make_clip(tmp_path / "tag.mkv", "h264-mkv", n=30, rotate_tag=90)
    assert_upright(video_frame(path))


def test_display_transform_of_ffmpegs_matrices():
    """The matrices FFmpeg writes (av_display_rotation_set, then av_display_matrix_flip), and the
    transpose / mirror / flip that show them, each checked on a 2x3 array against the turn it names."""
    one = 1 << 16

    def m(a, b, c, d):
        return (a * one, b * one, 0, c * one, d * one, 0, 0, 0, 1 << 30)

    def show(array, how):
        transpose, mirror, flip = how
        if transpose:
            array = array.T
        if mirror:
            array = array[:, ::-1]
        if flip:
            array = array[::-1, :]
        return array

    p = np.arange(6).reshape(2, 3)
    cases = {
        m(1, 0, 0, 1): p,
        m(0, -1, 1, 0): np.rot90(p, 1),  # rotation 90: a quarter turn counter-clockwise
        m(-1, 0, 0, -1): np.rot90(p, 2),
        m(0, 1, -1, 0): np.rot90(p, -1),  # rotation 270 (-90): clockwise
        m(-1, 0, 0, 1): p[:, ::-1],  # hflip
        m(1, 0, 0, -1): p[::-1, :],  # vflip
        m(0, -1, -1, 0): np.rot90(p, 1)[:, ::-1],  # rotation 90, then hflip
    }
    for matrix, expected in cases.items():
        assert np.array_equal(show(p, display_transform(matrix)), expected), matrix
    assert display_transform(m(0, 0, 0, 0)) == (False, False, False)


@pytest.mark.parametrize("as_", ["path", "bytes", "file"])
def test_sources(as_, tmp_path):
    path = make_clip(tmp_path / "clip.webm", "vp8-webm", n=36)
    source = {"path": path, "bytes": path.read_bytes(), "file": io.BytesIO(path.read_bytes())}[as_]
    assert frame_index(video_frame(source), 36) == 25


# --------------------------------------------------------------------------- refusals


def error_line(err, name) -> str:
    line = str(err)
    assert line.startswith(f"{name}: ") and "\n" not in line and not err.retryable
    return line


@pytest.mark.parametrize("kind,cut", [
    ("h264-mp4", 0.7), ("h264-mp4", 0.2), ("h264-mov", 0.5), ("mpeg4-avi", 0.9), ("mpeg4-avi", 0.3),
    ("vp9-webm", 0.9), ("h264-mkv", 0.5),
])
def test_a_truncated_video_is_corrupt(kind, cut, tmp_path):
    data = make_clip(tmp_path / f"full{FORMATS[kind][3]}", kind, n=36).read_bytes()
    cut_path = tmp_path / f"cut{FORMATS[kind][3]}"
    cut_path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CorruptImage) as info:
        video_frame(cut_path)
    assert "truncated" in error_line(info.value, cut_path)


def test_a_truncated_faststart_mp4_is_corrupt(tmp_path):
    # The index (moov) comes first, so the cut falls in the frames' data.
    path = make_clip(tmp_path / "fast.mp4", "h264-mp4", n=36, container_options={"movflags": "faststart"})
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    path.write_bytes(data[:-200])
    with pytest.raises(CorruptImage, match="truncated"):
        video_frame(path)


@pytest.mark.parametrize("muxer,codec,suffix", [("mp4", "aac", ".mp4"), ("matroska", "libopus", ".mkv")])
def test_audio_only_is_no_video_stream(muxer, codec, suffix, tmp_path):
    path = make_audio(tmp_path / f"song{suffix}", muxer, codec)
    with pytest.raises(UnsupportedFormat) as info:
        video_frame(path)
    assert "no video stream (audio only)" in error_line(info.value, path)


@pytest.mark.parametrize("content,what", [
    (b"", "empty"),
    (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "not a video"),
    (b"ffconcat version 1.0\nfile '/etc/passwd'\n", "not a video"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100), "not a video"),
    (b"RIFF\x20\x00\x00\x00WEBPVP8 " + bytes(100), "not a video"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(100), "not a video"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100), "not a video"),
])
def test_what_is_not_a_video_is_refused_before_ffmpeg_sees_it(content, what, tmp_path):
    path = tmp_path / "upload.mp4"
    path.write_bytes(content)
    with pytest.raises((UnsupportedFormat, CorruptImage)) as info:
        video_frame(path)
    assert what in error_line(info.value, path)


def test_garbage_behind_a_video_header_is_corrupt(tmp_path):
    good = make_clip(tmp_path / "g.mp4", "h264-mp4", n=10).read_bytes()
    path = tmp_path / "bad.mp4"
    rng = np.random.default_rng(3)
    path.write_bytes(good[:32] + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptImage) as info:
        video_frame(path)
    error_line(info.value, path)


def test_a_missing_file_is_input_not_found(tmp_path):
    with pytest.raises(InputNotFound):
        video_frame(tmp_path / "not-yet.mp4")


def test_the_pixel_limit_is_checked_from_the_header(tmp_path):
    path = make_clip(tmp_path / "clip.mp4", n=30)
    with pytest.raises(ImageTooLarge) as info:
        video_frame(path, max_pixels=WIDTH * HEIGHT - 1)
    assert f"{WIDTH}x{HEIGHT}" in error_line(info.value, path)
    assert video_frame(path, max_pixels=WIDTH * HEIGHT).size == (WIDTH, HEIGHT)


def test_decoding_stops_at_the_time_budget(tmp_path):
    # 1.2 s at 250 fps of noise: 250 frames to decode before the one at 1 s.
    rate = Fraction(250)
    path = make_clip(tmp_path / "long.mkv", "h264-mkv", n=300, rate=rate, noise=True, size=(160, 120))
    with pytest.raises(VideoTimeout) as info:
        video_frame(path, timeout=0.005)
    assert "longer than" in error_line(info.value, path) and info.value.code == "timeout"
    image = video_frame(path, timeout=60)
    assert image.size == (160, 120)


def test_a_file_of_a_million_empty_boxes_stops_at_the_time_budget():
    data = b"\x00\x00\x00\x14ftypisom\x00\x00\x02\x00isom" + b"\x00\x00\x00\x08free" * 1_000_000
    with pytest.raises(VideoTimeout):
        video_frame(data, timeout=0.05, name="boxes.mp4")


@pytest.mark.parametrize("kind", ["h264-mp4", "vp9-webm", "mpeg4-avi"])
def test_damaged_clips_give_a_frame_or_a_named_error(kind, tmp_path):
    """Bytes overwritten anywhere: never a crash, a hang or a raw FFmpeg error."""
    good = make_clip(tmp_path / f"g{FORMATS[kind][3]}", kind, n=30).read_bytes()
    rng = np.random.default_rng(11)
    outcomes = set()
    for trial in range(25):
        data = bytearray(good)
        for at in rng.integers(0, len(data), 1 + trial % 4):
            data[at] = int(rng.integers(0, 256))
        try:
            image = video_frame(bytes(data), timeout=10, name="damaged")
        except ImgtoolError as exc:
            assert str(exc).startswith("damaged: ") and "\n" not in str(exc)
            outcomes.add(exc.code)
        else:
            assert image.mode == "RGB" and image.width * image.height > 0
            outcomes.add("frame")
    assert outcomes <= {"frame", "corrupt_image", "unsupported_format", "too_large", "timeout"}


# --------------------------------------------------------------------------- names and sniffing


def test_video_names():
    assert VIDEO_SUFFIXES == {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
    assert is_video_name("clip.MP4") and is_video_name("a.b.webm")
    assert not is_video_name("photo.jpg") and not is_video_name("mp4")


@pytest.mark.parametrize("kind,expected", [
    ("h264-mp4", "mp4"), ("h264-mov", "mov"), ("h264-m4v", "mp4"), ("mpeg4-avi", "avi"),
    ("vp9-webm", "webm"), ("h264-mkv", "matroska"),
])
def test_sniff_recognises_what_pyav_writes(kind, expected, tmp_path):
    path = make_clip(tmp_path / f"s{FORMATS[kind][3]}", kind, n=2)
    assert sniff_video(path.read_bytes()[:64]) == expected


@pytest.mark.parametrize("head,expected", [
    (b"\x00\x00\x00\x14ftyp3gp5\x00\x00\x00\x00isom", "mp4"),
    (b"\x00\x00\x00\x1cftypmp42\x00\x00\x00\x00mp42isomavc1", "mp4"),
    (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "mov"),
    (b"\x00\x00\x00\x1cftypavis\x00\x00\x00\x00avismsf1iso8", None),  # an AVIF image sequence
    (b"\x00\x00\x00\x1cftypmsf1\x00\x00\x00\x00msf1iso8hevc", None),  # a HEIF sequence
    (b"\x00\x00\x00\x14ftypM4A \x00\x00\x00\x00M4A ", None),  # audio
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "webm"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84abcd", None),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "avi"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
    (b"ftyp", None),
    (b"", None),
])
def test_sniff_headers(head, expected):
    assert sniff_video(head) == expected
