"""AVIF encoding (imgtool.avif): valid files of the image's size, alpha kept, sRGB signalled, no metadata."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

import imagegen
from helpers import psnr
from imgtool.avif import DEFAULT_ANCHORS, DEFAULT_SPEED, QUALITY_ANCHORS, available, avif_quality, encode_avif
from imgtool.pixels import Pixels


def boxes(data: bytes, want: bytes) -> list[bytes]:
    """The payloads of every ISOBMFF box of type ``want``, searched through the containers AVIF nests."""
    found = []

    def walk(buf: bytes, start: int, end: int):
        i = start
        while i + 8 <= end:
            size, kind = struct.unpack(">I4s", buf[i:i + 8])
            head = 8
            if size == 1:
                size, head = struct.unpack(">Q", buf[i + 8:i + 16])[0], 16
            elif size == 0:
                size = end - i
            if size < head or i + size > end:
                return
            if kind == want:
                found.append(buf[i + head:i + size])
            if kind in (b"meta",):
                walk(buf, i + head + 4, i + size)  # a full box: version and flags first
            elif kind in (b"iprp", b"ipco", b"moov", b"trak"):
                walk(buf, i + head, i + size)
            i += size

    walk(data, 0, len(data))
    return found


def test_this_pillow_has_avif():
    # The AVIF plugin is in Pillow's wheels from 11.3 on: the install must give it.
    assert available()


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_encodes_a_valid_avif_of_the_same_size(mode):
    rgb = imagegen.photo(160, 96, seed=5)
    a = rgb if mode == "RGB" else np.dstack([rgb, np.tile(np.linspace(0, 255, 160).astype(np.uint8), (96, 1))])
    data = encode_avif(Image.fromarray(a, mode), avif_quality(80))
    assert data[4:12] in (b"ftypavif", b"ftypavis")
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "AVIF" and im.size == (160, 96) and im.mode == mode
        back = np.asarray(im)
    assert psnr(back[..., :3], rgb) >= 30
    if mode == "RGBA":
        assert np.abs(back[..., 3].astype(int) - a[..., 3]).max() <= 8  # the alpha plane is kept


def test_no_metadata_and_srgb_signalled():
    src = Image.fromarray(imagegen.photo(64, 48))
    exif = Image.Exif()
    exif[0x010F] = "a camera maker"  # Make
    src.info["exif"] = exif.tobytes()
    src.info["icc_profile"] = b"not a real profile"
    src.info["xmp"] = b"<x:xmpmeta/>"
    data = encode_avif(src, 60)
    with Image.open(io.BytesIO(data)) as im:
        assert not {"exif", "xmp", "icc_profile"} & set(im.info)
    assert b"a camera maker" not in data and b"xmpmeta" not in data and b"Exif" not in data
    (colr,) = boxes(data, b"colr")
    assert colr[:4] == b"nclx"
    primaries, transfer, _matrix = struct.unpack(">HHH", colr[4:10])
    assert (primaries, transfer) == (1, 13)  # BT.709 primaries, the sRGB transfer function
    assert colr[10] & 0x80  # full range


def test_pixels_encode_like_their_image():
    a = imagegen.photo(40, 30)
    px = Pixels.from_array(a)
    with Image.open(io.BytesIO(encode_avif(px, 70))) as one, Image.open(
            io.BytesIO(encode_avif(Image.fromarray(a), 70))) as two:
        assert np.array_equal(np.asarray(one), np.asarray(two))


def test_both_ends_of_the_speed_range_encode():
    im = Image.fromarray(imagegen.photo(96, 64, seed=1))
    for speed in (0, DEFAULT_SPEED, 10):
        with Image.open(io.BytesIO(encode_avif(im, 50, speed))) as back:
            assert back.size == (96, 64)


@pytest.mark.parametrize("bad", [dict(quality=101), dict(quality=-1), dict(quality=True), dict(quality=5.0),
                                 dict(speed=11), dict(speed=-1), dict(threads=0)])
def test_bad_arguments_are_refused(bad):
    args = dict(quality=50, speed=DEFAULT_SPEED, threads=1) | bad
    with pytest.raises(ValueError):
        encode_avif(Image.new("RGB", (8, 8)), args["quality"], args["speed"], threads=args["threads"])
    with pytest.raises(ValueError):
        encode_avif(Image.new("L", (8, 8)), 50)


@pytest.mark.parametrize("operation", [None, "thumbnail", "blur", "low-quality", "an-operation-of-later"])
def test_quality_mapping_is_monotone_and_spans_0_to_100(operation):
    mapped = [avif_quality(q, operation) for q in range(101)]
    assert mapped[0] == 0 and mapped[100] == 100
    assert all(b >= a for a, b in zip(mapped, mapped[1:]))
    for webp_q, avif_q in QUALITY_ANCHORS.get(operation, DEFAULT_ANCHORS):
        assert avif_quality(webp_q, operation) == avif_q
    for bad in (-1, 101, 50.5, True):
        with pytest.raises(ValueError):
            avif_quality(bad, operation)


def test_an_unknown_operation_gets_the_highest_quality_of_the_measured_ones():
    for q in range(101):
        assert avif_quality(q, "new") >= max(avif_quality(q, op) for op in QUALITY_ANCHORS)
    for q, _ in DEFAULT_ANCHORS:
        assert avif_quality(q, "new") == max(avif_quality(q, op) for op in QUALITY_ANCHORS)


# ---- --format avif end to end: the spec's names and sizes, valid files --------------------


def _process(tmp_path, *args):
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "imgtool", "process", str(tmp_path / "in"), "-o",
                        str(tmp_path / "out"), "--backend", "cpu", "--json", *args],
                       capture_output=True, text=True, timeout=300)
    return r, [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.parametrize("speed", ["10", None])
def test_format_avif_writes_valid_avif_outputs_of_the_spec_sizes(tmp_path, speed):
    from imgtool.ops import Settings, output_size

    (tmp_path / "in").mkdir()
    sizes = {"photo": (700, 500), "tall": (90, 301), "dot": (1, 1)}
    for name, (w, h) in sizes.items():
        Image.fromarray(imagegen.photo(w, h, seed=w)).save(tmp_path / "in" / f"{name}.png")
    Image.fromarray(imagegen.rgba_shape(120, 80)).save(tmp_path / "in" / "shape.png")
    sizes["shape"] = (120, 80)
    args = ["--format", "avif", "--thumb-width", "256,640"] + (["--avif-speed", speed] if speed else [])
    r, lines = _process(tmp_path, *args)
    assert r.returncode == 0, r.stderr
    settings = Settings()
    for line in lines:
        name, (w, h) = line["jobId"], sizes[line["jobId"]]
        expected = {"thumbnail": output_size("thumbnail", w, h, settings),
                    "blur": (w, h), "low-quality": output_size("low-quality", w, h, settings)}
        if w >= 640:
            expected["thumbnail-640"] = (640, round(h * 640 / w))
        else:
            assert "thumbnail-640" in line["skippedOutputs"]
        assert sorted(line["outputs"]) == sorted(expected)
        for key, size in expected.items():
            path = line["outputs"][key]
            assert path.endswith(f"{name}_{key}.avif")
            with open(path, "rb") as f:
                data = f.read()
            assert data[4:12] == b"ftypavif"
            with Image.open(io.BytesIO(data)) as im:
                assert im.format == "AVIF" and im.size == size, (name, key)
                assert im.mode == ("RGBA" if name == "shape" else "RGB")
                assert not {"exif", "xmp", "icc_profile"} & set(im.info)
                im.load()
    assert not list((tmp_path / "out").glob("*.webp"))
    # AVIF outputs, thumbnail-<W> ones too, are never taken as inputs again.
    from imgtool.pipeline import count_inputs

    assert count_inputs([tmp_path / "out"]) == 0


def test_avif_quality_follows_the_options_and_the_mapping(tmp_path):
    from imgtool.imageio import AVIF_CONTENT_TYPE, encode

    im = Image.fromarray(imagegen.photo(200, 150, seed=2))
    low, content_type = encode(im, "avif", 30, "low-quality", effort=4, lossless=False, speed=8)
    high, _ = encode(im, "avif", 90, "low-quality", effort=4, lossless=False, speed=8)
    assert content_type == AVIF_CONTENT_TYPE == "image/avif"
    assert low == encode_avif(im, avif_quality(30, "low-quality"), 8) and len(low) < len(high)
    with pytest.raises(ValueError):
        encode(im, "avif", 80, "blur", effort=4, lossless=True, speed=8)
