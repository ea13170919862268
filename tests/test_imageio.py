"""imageio: every real photo decoded right (orientation, colour, alpha, modes, limits) and encoded."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imagegen as g
from helpers import assert_image_close
from imgtool import imageio
from imgtool.errors import (
    CorruptImage,
    ImageTooLarge,
    ImgtoolError,
    InputNotFound,
    UnsupportedFormat,
)
from imgtool.imageio import colour, pillow

# Pillow warns about the damage it recovers from; imageio silences that for
# the CLI, but pytest resets warning filters per test.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BIG = 10**9  # a pixel limit nothing here reaches
PHOTO = g.photo()  # 96x64, not symmetric


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def decode_bytes(folder: Path, data: bytes, name: str = "img") -> np.ndarray:
    return imageio.decode(write(folder, name, data), BIG)


def assert_one_line_error(exc: ImgtoolError, path: Path) -> None:
    text = str(exc)
    assert "\n" not in text and str(path) in text and exc.message, text


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


def all_orientations(a: np.ndarray) -> dict[int, np.ndarray]:
    return {o: g.stored_for_orientation(a, o) for o in range(1, 9)}


# --- orientation --------------------------------------------------------------

LOSSLESS_ORIENTATION_FORMATS = {"PNG": {}, "TIFF": {}, "WEBP": {"lossless": True}}


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", [*LOSSLESS_ORIENTATION_FORMATS, "JPEG"])
def test_exif_orientation_is_applied(tmp_path, fmt, orientation):
    stored = g.stored_for_orientation(PHOTO, orientation)
    params = LOSSLESS_ORIENTATION_FORMATS.get(fmt, {"quality": 95, "subsampling": 0})
    data = g.save(stored, fmt, exif=g.exif_bytes(orientation), **params)
    got = decode_bytes(tmp_path, data)
    assert got.shape == PHOTO.shape and got.flags.c_contiguous and got.dtype == np.uint8
    if fmt == "JPEG":
        errors = {o: mean_abs(got, cand) for o, cand in all_orientations(PHOTO).items()
                  if cand.shape == got.shape}
        assert errors[1] < 3.0, errors
        assert all(e > 5 * errors[1] for o, e in errors.items() if o != 1), errors
    else:
        np.testing.assert_array_equal(got, PHOTO)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_each_orientation_thumbnail_matches_the_upright_one(tmp_path, orientation):
    from imgtool.backends.cpu import CpuBackend

    backend = CpuBackend()
    upright = backend.thumbnail(decode_bytes(tmp_path, g.save(PHOTO, "PNG"), "up.png"), 48, 32)
    stored = g.stored_for_orientation(PHOTO, orientation)
    data = g.save(stored, "PNG", exif=g.exif_bytes(orientation))
    rotated = backend.thumbnail(decode_bytes(tmp_path, data, "rot.png"), 48, 32)
    np.testing.assert_array_equal(rotated, upright)


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heif_and_avif_rotation_is_applied(tmp_path, fmt, orientation):
    # pillow-heif turns the EXIF orientation into HEIF's irot/imir on save and
    # applies them on open; Pillow's AVIF plugin does the same through EXIF.
    stored = g.stored_for_orientation(PHOTO, orientation)
    got = decode_bytes(tmp_path, g.save(stored, fmt, exif=g.exif_bytes(orientation), quality=90))
    assert got.shape == PHOTO.shape
    errors = {o: mean_abs(got, c) for o, c in all_orientations(PHOTO).items() if c.shape == got.shape}
    assert min(errors, key=errors.get) == 1 and errors[1] < 4, errors


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_probe_gives_the_upright_size(tmp_path, orientation):
    stored = g.stored_for_orientation(PHOTO, orientation)
    path = write(tmp_path, "a.jpg", g.save(stored, "JPEG", exif=g.exif_bytes(orientation)))
    assert imageio.probe(path, BIG) == imageio.ImageInfo("JPEG", 96, 64, False)


@pytest.mark.parametrize("value", [0, 9, 255])
def test_out_of_range_orientation_is_ignored(tmp_path, value):
    got = decode_bytes(tmp_path, g.save(PHOTO, "PNG", exif=g.exif_bytes(value)))
    np.testing.assert_array_equal(got, PHOTO)


def test_corrupt_exif_does_not_cost_the_image(tmp_path):
    got = decode_bytes(tmp_path, g.save(PHOTO, "PNG", exif=b"Exif\0\0II*\0\x08\0\0\0\xff\xff"))
    np.testing.assert_array_equal(got, PHOTO)


# --- colour -------------------------------------------------------------------

WIDE_SPACES = {
    "adobe-rgb": (g.adobe_rgb_profile, g.ADOBE_RGB_PRIMARIES, g.adobe_encode),
    "display-p3": (g.display_p3_profile, g.P3_PRIMARIES, g.linear_to_srgb),
}
ICC_FORMATS = {"PNG": {}, "TIFF": {}, "WEBP": {"lossless": True},
               "JPEG": {"quality": 95, "subsampling": 0}, "HEIF": {"quality": 95}}


@pytest.mark.parametrize("fmt", ICC_FORMATS)
@pytest.mark.parametrize("space", WIDE_SPACES)
def test_wide_gamut_profiles_are_converted_to_srgb(tmp_path, space, fmt):
    profile, primaries, encode = WIDE_SPACES[space]
    pixels = g.srgb_to_space(PHOTO, primaries, encode)  # the same colours, in the wide space
    params = ICC_FORMATS[fmt]
    got = decode_bytes(tmp_path, g.save(pixels, fmt, icc_profile=profile(), **params), "wide")
    de = g.delta_e(got, PHOTO)
    # A lossy format costs some delta-E by itself: measured on the sRGB original.
    codec = g.delta_e(decode_bytes(tmp_path, g.save(PHOTO, fmt, **params), "srgb"), PHOTO)
    assert de.mean() < codec.mean() + 0.75 and de.mean() < 3.5, (de.mean(), codec.mean())
    assert np.percentile(de, 99) < np.percentile(codec, 99) + 2.5, (np.percentile(de, 99), np.percentile(codec, 99))
    # Taking the numbers as sRGB would be visibly wrong: the test can tell.
    assert g.delta_e(pixels, PHOTO).mean() > 3


def test_srgb_profile_needs_no_transform(tmp_path):
    srgb = g.srgb_profile()
    assert colour.icc_transform(srgb, "RGB") is None
    got = decode_bytes(tmp_path, g.save(PHOTO, "PNG", icc_profile=srgb))
    np.testing.assert_array_equal(got, PHOTO)


def test_profile_keeps_alpha(tmp_path):
    rgba = np.dstack([g.srgb_to_space(PHOTO, g.ADOBE_RGB_PRIMARIES, g.adobe_encode),
                      np.tile(np.arange(96, dtype=np.uint8) * 2, (64, 1))])
    got = decode_bytes(tmp_path, g.save(rgba, "PNG", icc_profile=g.adobe_rgb_profile()))
    assert got.shape == (64, 96, 4)
    np.testing.assert_array_equal(got[..., 3], rgba[..., 3])
    assert g.delta_e(got, PHOTO).mean() < 1.0


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_gray_profile_is_converted(tmp_path, mode):
    gray = np.asarray(Image.fromarray(PHOTO).convert("L"))
    im = Image.fromarray(gray)
    if mode == "LA":
        im = Image.merge("LA", (im, Image.new("L", im.size, 200)))
    got = decode_bytes(tmp_path, g.save(im, "PNG", icc_profile=g.gray_profile(1.8)))
    truth = np.rint(g.linear_to_srgb((gray / 255.0) ** 1.8) * 255).astype(np.uint8)
    assert got.shape == (64, 96, 3 if mode == "L" else 4)
    assert_image_close(got[..., :3], _gray_rgb(truth), 1)
    if mode == "LA":
        assert (got[..., 3] == 200).all()


def _cmyk_jpeg_without_adobe_marker(cmyk: np.ndarray) -> bytes:
    # Pillow always writes Adobe's inverted polarity with an APP14 marker:
    # writing the inverse and dropping the marker leaves plain samples.
    data = g.save(Image.fromarray(255 - cmyk, "CMYK"), "JPEG", quality=95)
    at = data.index(b"\xff\xee")
    length = int.from_bytes(data[at + 2 : at + 4], "big")
    return data[:at] + data[at + 2 + length :]


@pytest.mark.parametrize("container", ["jpeg-adobe-inverted", "jpeg-plain", "tiff"])
def test_untagged_cmyk_is_read_as_browsers_do(tmp_path, container):
    cmyk = g.srgb_to_cmyk_plain(PHOTO)
    if container == "jpeg-adobe-inverted":
        data = g.save(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95)
        assert b"\xff\xee\x00\x0eAdobe" in data[:200]
    elif container == "jpeg-plain":
        data = _cmyk_jpeg_without_adobe_marker(cmyk)
        assert b"Adobe" not in data[:200]
    else:
        data = g.save(Image.fromarray(cmyk, "CMYK"), "TIFF")
    got = decode_bytes(tmp_path, data)
    assert got.shape == (64, 96, 3)
    assert g.delta_e(got, PHOTO).mean() < 1.5  # not negative, not washed out


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_with_profile_uses_the_profile(tmp_path, fmt):
    cmyk = g.srgb_to_cmyk_plain(PHOTO)
    params = {"quality": 95} if fmt == "JPEG" else {}
    data = g.save(Image.fromarray(cmyk, "CMYK"), fmt, icc_profile=g.cmyk_profile(), **params)
    got = decode_bytes(tmp_path, data)
    truth = g.cmyk_model_to_srgb(cmyk)
    de = g.delta_e(got, truth)
    assert de.mean() < (1.5 if fmt == "JPEG" else 1.0) and np.percentile(de, 99) < 4, de.mean()
    assert g.delta_e(g.cmyk_plain_to_srgb(cmyk), truth).mean() > 10  # the fallback would not do


@pytest.mark.parametrize(
    "case", ["garbage", "gray-profile-on-rgb", "rgb-profile-on-gray", "cmyk-profile-on-rgb"]
)
def test_unusable_profiles_are_ignored(tmp_path, case):
    gray = np.asarray(Image.fromarray(PHOTO).convert("L"))
    pixels, profile = {
        "garbage": (PHOTO, b"\0" * 200),
        "gray-profile-on-rgb": (PHOTO, g.gray_profile()),
        "rgb-profile-on-gray": (gray, g.adobe_rgb_profile()),
        "cmyk-profile-on-rgb": (PHOTO, g.cmyk_profile(grid=3)),
    }[case]
    got = decode_bytes(tmp_path, g.save(pixels, "PNG", icc_profile=profile))
    expect = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
    np.testing.assert_array_equal(got, expect)


def test_lab_tiff(tmp_path):
    from PIL import ImageCms

    lab = ImageCms.applyTransform(
        Image.fromarray(PHOTO),
        ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"),
    )
    got = decode_bytes(tmp_path, g.save(lab, "TIFF"))
    assert g.delta_e(got, PHOTO).mean() < 1.5


def test_colour_transforms_are_safe_across_threads(tmp_path):
    big = g.photo(400, 300, seed=3)
    path = write(tmp_path, "wide.png", g.save(
        g.srgb_to_space(big, g.ADOBE_RGB_PRIMARIES, g.adobe_encode), "PNG", icc_profile=g.adobe_rgb_profile()))
    expect = imageio.decode(path, BIG)
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(imageio.decode(path, BIG))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    for r in results:
        np.testing.assert_array_equal(r, expect)


# --- modes and bit depths ---------------------------------------------------------

GRAY = np.asarray(Image.fromarray(PHOTO).convert("L"))


def _gray_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def test_rgb_is_unchanged(tmp_path):
    np.testing.assert_array_equal(decode_bytes(tmp_path, g.save(PHOTO, "PNG")), PHOTO)


def test_l(tmp_path):
    np.testing.assert_array_equal(decode_bytes(tmp_path, g.save(GRAY, "PNG")), _gray_rgb(GRAY))


def test_la(tmp_path):
    la = Image.merge("LA", (Image.fromarray(GRAY), Image.fromarray(255 - GRAY)))
    got = decode_bytes(tmp_path, g.save(la, "PNG"))
    np.testing.assert_array_equal(got, np.dstack([_gray_rgb(GRAY), 255 - GRAY]))


def test_one_bit(tmp_path):
    bits = (GRAY > 128).astype(np.uint8) * 255
    got = decode_bytes(tmp_path, g.save(Image.fromarray(bits).convert("1", dither=Image.Dither.NONE), "PNG"))
    np.testing.assert_array_equal(got, _gray_rgb(bits))


def _palette_image(transparency=None) -> tuple[Image.Image, np.ndarray]:
    p = Image.fromarray(PHOTO).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette = np.array(p.getpalette()[: 64 * 3], np.uint8).reshape(-1, 3)
    return p, palette[np.asarray(p)]


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF"])
def test_palette_without_transparency(tmp_path, fmt):
    p, expect = _palette_image()
    np.testing.assert_array_equal(decode_bytes(tmp_path, g.save(p, fmt)), expect)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_a_transparent_index(tmp_path, fmt):
    p, rgb = _palette_image()
    index = int(np.asarray(p)[0, 0])
    got = decode_bytes(tmp_path, g.save(p, fmt, transparency=index))
    assert got.shape == (64, 96, 4)
    transparent = np.asarray(p) == index
    np.testing.assert_array_equal(got[..., 3], np.where(transparent, 0, 255))
    np.testing.assert_array_equal(got[~transparent][:, :3], rgb[~transparent])


def test_palette_with_per_entry_alpha(tmp_path):
    p, rgb = _palette_image()
    alphas = bytes(range(0, 256, 4))  # entry i gets alpha 4i
    got = decode_bytes(tmp_path, g.save(p, "PNG", transparency=alphas))
    np.testing.assert_array_equal(got[..., 3], np.asarray(p).astype(np.uint8) * 4)
    opaque = got[..., 3] > 0
    np.testing.assert_array_equal(got[opaque][:, :3], rgb[opaque])


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_colour_key_transparency(tmp_path, mode):
    src = GRAY if mode == "L" else PHOTO
    key = int(src[0, 0]) if mode == "L" else tuple(int(v) for v in src[0, 0])
    got = decode_bytes(tmp_path, g.save(src, "PNG", transparency=key))
    keyed = (src == src[0, 0]) if mode == "L" else (src == src[0, 0]).all(axis=-1)
    np.testing.assert_array_equal(got[..., 3], np.where(keyed, 0, 255))


def _expected_from_16bit(v: np.ndarray) -> np.ndarray:
    return np.rint(v / 257.0).astype(np.uint8)


@pytest.mark.parametrize("mode,fmt", [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I", "TIFF")])
def test_16_bit_gray_is_scaled_not_clipped(tmp_path, mode, fmt):
    ramp = g.gray16()
    im = Image.frombytes(mode, (96, 64), ramp.astype({"I;16": "<u2", "I;16B": ">u2", "I": "=i4"}[mode]).tobytes())
    got = decode_bytes(tmp_path, g.save(im, fmt))
    np.testing.assert_array_equal(got, _gray_rgb(_expected_from_16bit(ramp)))
    assert got.max() == 255 and 120 < np.median(got) < 200


def test_16_bit_gray_colour_key(tmp_path):
    ramp = g.gray16()
    key = int(ramp[5, 5])
    got = decode_bytes(tmp_path, g.save(Image.frombytes("I;16", (96, 64), ramp.tobytes()), "PNG", transparency=key))
    assert got.shape == (64, 96, 4)
    np.testing.assert_array_equal(got[..., 3], np.where(ramp == key, 0, 255))
    np.testing.assert_array_equal(got[..., 0], _expected_from_16bit(ramp))


def test_float_gray_is_taken_as_0_to_1(tmp_path):
    ramp = g.gray16().astype(np.float32) / 65535
    got = decode_bytes(tmp_path, g.save(Image.frombytes("F", (96, 64), ramp.tobytes()), "TIFF"))
    np.testing.assert_array_equal(got[..., 0], np.rint(ramp * 255).astype(np.uint8))


def _rgb16(channels: int) -> np.ndarray:
    wide = PHOTO.astype(np.uint16) * 257 + np.arange(96, dtype=np.uint16)[None, :, None]
    if channels == 4:
        wide = np.dstack([wide, np.tile(np.linspace(0, 65535, 96).astype(np.uint16), (64, 1))])
    return wide


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("container", ["PNG", "TIFF"])
def test_16_bit_per_channel_colour(tmp_path, container, channels):
    wide = _rgb16(channels)
    data = g.png_bytes(wide, 16) if container == "PNG" else g.tiff16_bytes(wide)
    got = decode_bytes(tmp_path, data)
    assert got.shape == (64, 96, channels)
    # Pillow keeps the high byte; within one level of v / 257.
    assert_image_close(got, _expected_from_16bit(wide), 1)


@pytest.mark.parametrize("mode", ["RGBa", "La"])
def test_premultiplied_input_modes_come_back_straight(tmp_path, mode):
    # Only HEIF files keep these modes; elsewhere Pillow converts on save.
    im = g.to_mode(PHOTO, mode)
    got = decode_bytes(tmp_path, g.save(im, "HEIF", quality=95))
    assert got.shape == (64, 96, 4)
    assert_image_close(got[..., 3], np.asarray(im.split()[-1]), 2, "alpha")
    opaque = got[..., 3] == 255
    base = PHOTO if mode == "RGBa" else _gray_rgb(GRAY)
    assert mean_abs(got[opaque][:, :3], base[opaque]) < 4


def _writable(fmt: str, mode: str) -> bytes | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return g.save(g.to_mode(g.photo(40, 30), mode), fmt)
    except Exception:  # noqa: BLE001 - Pillow cannot write this mode in this format
        return None


ALL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
             "LAB", "HSV", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"]


@pytest.mark.parametrize("fmt", imageio.ACCEPTED_FORMATS)
def test_every_mode_pillow_can_write(tmp_path, fmt):
    written = {m: d for m in ALL_MODES if (d := _writable(fmt, m)) is not None}
    assert len(written) >= 4, written.keys()
    for mode, data in written.items():
        path = write(tmp_path, f"{mode.replace(';', '_')}.img", data)
        with Image.open(path) as im:
            has_alpha = im.has_transparency_data
        got = imageio.decode(path, BIG)
        assert got.dtype == np.uint8 and got.flags.c_contiguous, mode
        assert got.shape == (30, 40, 4 if has_alpha else 3), (mode, got.shape)


# --- alpha ------------------------------------------------------------------------

HIDDEN = {"black": (0, 0, 0), "white": (255, 255, 255), "green": (0, 255, 0)}


@pytest.mark.parametrize("fmt,params", [("PNG", {}), ("TIFF", {}), ("WEBP", {"lossless": True, "exact": True})])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_transparent_pixels_keep_their_colour_and_alpha(tmp_path, fmt, params, hidden):
    shape = g.rgba_shape(hidden=HIDDEN[hidden])
    got = decode_bytes(tmp_path, g.save(shape, fmt, **params))
    np.testing.assert_array_equal(got, shape)


@pytest.mark.parametrize("op", ["thumbnail", "blur", "blur-sigma", "low-quality"])
def test_no_halo_whatever_colour_transparent_pixels_hold(tmp_path, op):
    """Decode -> cpu backend -> lossless WebP -> read back: edges the same on black and white."""
    from imgtool.backends.cpu import CpuBackend

    backend = CpuBackend()
    outputs = {}
    for hidden in ("black", "white"):
        src = g.rgba_shape(97, 81, color=(220, 40, 30), hidden=HIDDEN[hidden])
        img = decode_bytes(tmp_path, g.save(src, "PNG"), f"{hidden}.png")
        out = {"thumbnail": lambda a: backend.thumbnail(a, 40, 33),
               "blur": lambda a: backend.blur(a, None),
               "blur-sigma": lambda a: backend.blur(a, 3.0),
               "low-quality": backend.halfsize}[op](img)
        data = imageio.encode_webp(np.ascontiguousarray(out), 80, 4, lossless=True)
        outputs[hidden] = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).astype(int)
    black, white = outputs["black"], outputs["white"]
    np.testing.assert_array_equal(black[..., 3], white[..., 3])
    visible = black[..., 3] > 0
    edge = visible & (black[..., 3] < 255)
    assert edge.sum() > 10
    assert_image_close(black[visible][:, :3], white[visible][:, :3], 1, "edges on black and on white")
    # And the edge is neither darkened by the black nor lightened by the white
    # (a halo at half alpha would be half-way there).  Lanczos may ring a
    # little brighter in both; low alpha leaves few bits of colour.
    seen = black[..., 3] >= 64
    assert black[seen][:, 0].min() >= 205, "darkened towards the hidden black"
    assert white[seen][:, 1:3].max() <= 55, "lightened towards the hidden white"


def test_lossy_webp_keeps_alpha():
    shape = g.rgba_shape()
    back = np.asarray(Image.open(io.BytesIO(imageio.encode_webp(shape, 80, 4, lossless=False))))
    assert back.shape == shape.shape
    assert_image_close(back[..., 3], shape[..., 3], 2, "alpha")


# --- animation, HEIF, AVIF -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF", "AVIF", "MPO"])
def test_animations_give_their_first_frame(tmp_path, fmt):
    """Animated GIF, WebP, APNG and AVIF; multi-page TIFF; a phone's multi-picture JPEG."""
    frames = g.animation()
    data = g.save(frames[0], fmt, save_all=True, append_images=frames[1:],
                  **({"lossless": True} if fmt == "WEBP" else {}))
    with Image.open(io.BytesIO(data)) as im:
        assert getattr(im, "n_frames", 1) == 3, "the file is not animated"
    got = decode_bytes(tmp_path, data)
    assert_image_close(got[..., :3], np.asarray(frames[0]), 6, "the first frame")


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
@pytest.mark.parametrize("alpha", [False, True])
def test_heif_and_avif(tmp_path, fmt, alpha):
    src = np.dstack([PHOTO, np.full((64, 96), 255, np.uint8)]) if alpha else PHOTO
    if alpha:
        src[:20, :30, 3] = 0
    got = decode_bytes(tmp_path, g.save(src, fmt, quality=95))
    assert got.shape == src.shape
    assert mean_abs(got[..., :3], PHOTO) < 3
    if alpha:
        assert got[:20, :30, 3].max() <= 2 and got[30:, 40:, 3].min() >= 253


def test_avif_without_a_decoder_is_unsupported(tmp_path, monkeypatch):
    monkeypatch.setattr(pillow, "decoder_for", lambda fmt: False)
    path = write(tmp_path, "a.avif", g.save(PHOTO, "AVIF"))
    with pytest.raises(UnsupportedFormat, match="cannot be decoded here") as info:
        imageio.decode(path, BIG)
    assert_one_line_error(info.value, path)


def test_ten_bit_heif_is_scaled(tmp_path):
    import pillow_heif

    wide = np.full((16, 16, 3), 40000, np.uint16)
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(16, 16), data=wide.tobytes())
    buf = io.BytesIO()
    heif.save(buf, format="HEIF", quality=100)
    got = decode_bytes(tmp_path, buf.getvalue())
    assert_image_close(got, np.full_like(got, 156), 2)  # 40000 / 257, not clipped


# --- unsupported, empty, truncated and corrupt files ----------------------------------


def _other_format(fmt: str) -> bytes:
    return g.save(Image.fromarray(PHOTO[:16, :16]), fmt)


UNSUPPORTED = {
    "svg": lambda: g.SVG,
    "svg-bare": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"/>',
    "pdf": lambda: g.PDF,
    "text": lambda: g.TEXT,
    "html": lambda: b"<!DOCTYPE html><html><body>hi</body></html>",
    "ico": lambda: _other_format("ICO"),
    "eps": lambda: _other_format("EPS"),
    "jpeg2000": lambda: _other_format("JPEG2000"),
    "psd-like": lambda: b"8BPS" + bytes(100),
    "binary": lambda: bytes(range(256)) * 4,
}


@pytest.mark.parametrize("case", UNSUPPORTED)
def test_unsupported_files_are_a_permanent_error(tmp_path, case):
    path = write(tmp_path, f"{case}.jpg", UNSUPPORTED[case]())
    with pytest.raises(UnsupportedFormat) as info:
        imageio.decode(path, BIG)
    assert not info.value.retryable
    assert_one_line_error(info.value, path)
    if case.startswith("svg"):
        assert "SVG" in info.value.message
    if case == "pdf":
        assert "PDF" in info.value.message


def test_a_video_header_with_nothing_behind_it_is_a_corrupt_video(tmp_path):
    # Videos are inputs (their frame at 1 s): an MP4's header alone is a broken video, not a foreign file.
    path = write(tmp_path, "clip.jpg", b"\0\0\0\x18ftypisom\0\0\0\0isommp41" + bytes(64))
    with pytest.raises(CorruptImage, match="video") as info:
        imageio.decode(path, BIG)
    assert not info.value.retryable
    assert_one_line_error(info.value, path)


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.jpg", b"")
    with pytest.raises(CorruptImage, match="empty"):
        imageio.decode(path, BIG)


def test_missing_file_is_retryable(tmp_path):
    with pytest.raises(InputNotFound) as info:
        imageio.decode(tmp_path / "not-yet.jpg", BIG)
    assert info.value.retryable


def test_directory(tmp_path):
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(UnsupportedFormat, match="directory"):
        imageio.decode(tmp_path / "d.jpg", BIG)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    # An open that blocked would wait for a writer forever: returning at all is the test.
    with pytest.raises(UnsupportedFormat, match="regular file"):
        imageio.decode(fifo, BIG)


def _truncatable() -> dict[str, bytes]:
    p = g.photo(160, 120)
    return {
        "jpeg": g.save(p, "JPEG"), "jpeg-progressive": g.save(p, "JPEG", progressive=True),
        "png": g.save(p, "PNG"), "png-palette": g.save(Image.fromarray(p).convert("P"), "PNG"),
        "gif": g.save(p, "GIF"), "webp": g.save(p, "WEBP"), "webp-lossless": g.save(p, "WEBP", lossless=True),
        "bmp": g.save(p, "BMP"), "tiff": g.save(p, "TIFF"), "tiff-lzw": g.save(p, "TIFF", compression="tiff_lzw"),
        "heif": g.save(p, "HEIF"), "avif": g.save(p, "AVIF"),
    }


TRUNCATABLE = _truncatable()


@pytest.mark.parametrize("cut", ["1-byte", "10-bytes", "30%", "60%", "95%"])
@pytest.mark.parametrize("kind", TRUNCATABLE)
def test_truncated_files_are_corrupt(tmp_path, kind, cut):
    data = TRUNCATABLE[kind]
    n = {"1-byte": 1, "10-bytes": 10}.get(cut) or int(len(data) * int(cut[:-1]) / 100)
    path = write(tmp_path, f"{kind}.img", data[:n])
    with pytest.raises(CorruptImage) as info:
        imageio.decode(path, BIG)
    assert_one_line_error(info.value, path)
    assert not info.value.retryable


def _damaged_tiffs() -> dict[str, bytes]:
    jpeg_tiff = g.save(PHOTO, "TIFF", compression="jpeg")
    samples = struct.pack("<HHIHH", 277, 3, 1, 3, 0)  # SamplesPerPixel 3
    return {
        # Cut inside the JPEG tables: libtiff prints "JPEGLib: Quantization table ...".
        "libtiff-error": jpeg_tiff[: len(jpeg_tiff) * 9 // 10],
        # Pillow logs "More samples per pixel than can be decoded" at ERROR level.
        "pillow-log": g.tiff16_bytes(_rgb16(3)).replace(samples, struct.pack("<HHIHH", 277, 3, 1, 40000, 0)),
    }


@pytest.mark.parametrize("case", ["libtiff-error", "pillow-log"])
def test_damaged_files_print_nothing_themselves(tmp_path, case):
    """The one-line error is all there is: libraries' own printing on stderr is silenced."""
    path = write(tmp_path, "bad.tif", _damaged_tiffs()[case])
    script = ("import sys\nfrom imgtool import imageio\nfrom imgtool.errors import CorruptImage\n"
              "try:\n    imageio.decode(sys.argv[1], 10**8)\nexcept CorruptImage:\n    pass\n"
              "else:\n    sys.exit('decoded')\n")
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_png_with_damaged_data_is_corrupt(tmp_path):
    data = bytearray(g.save(PHOTO, "PNG"))
    data[len(data) // 2] ^= 0xFF  # breaks the IDAT checksum
    with pytest.raises(CorruptImage):
        decode_bytes(tmp_path, bytes(data))


@pytest.mark.parametrize("seed", range(8))
def test_damaged_bytes_never_escape_as_other_errors(tmp_path, seed):
    rng = np.random.default_rng(seed)
    for name, data in TRUNCATABLE.items():
        data = bytearray(data)
        for at in rng.integers(0, len(data), 4):
            data[at] = rng.integers(0, 256)
        path = write(tmp_path, name, bytes(data))
        try:
            got = imageio.decode(path, BIG)
        except ImgtoolError as exc:
            assert_one_line_error(exc, path)
        else:
            assert got.dtype == np.uint8 and got.ndim == 3


# --- pixel limit ------------------------------------------------------------------------


def _claim(fmt: str, w: int, h: int) -> bytes:
    """A small file whose header claims w x h pixels."""
    if fmt == "PNG":
        return g.png_bytes(np.zeros((2, 2, 3), np.uint8), size=(w, h))
    small = bytearray(g.save(Image.new("RGB", (8, 8), (90, 20, 30)), fmt))
    if fmt == "JPEG":
        at = small.index(b"\xff\xc0") + 5
        small[at : at + 4] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    elif fmt == "GIF":
        small[6:10] = w.to_bytes(2, "little") + h.to_bytes(2, "little")  # logical screen
        at = 13 + (3 << ((small[10] & 7) + 1) if small[10] & 0x80 else 0)  # past the colour table
        while small[at] == 0x21:  # extension blocks: label, then sub-blocks up to a 0 length
            at += 2
            while small[at]:
                at += small[at] + 1
            at += 1
        assert small[at] == 0x2C  # the image descriptor
        small[at + 5 : at + 9] = w.to_bytes(2, "little") + h.to_bytes(2, "little")
    elif fmt == "BMP":
        small[18:26] = w.to_bytes(4, "little") + h.to_bytes(4, "little")
    elif fmt == "TIFF":
        return g.tiff16_bytes(np.zeros((1, 1, 3), np.uint16), size=(w, h))
    elif fmt == "WEBP":  # lossless header: 14-bit width-1 and height-1
        data = g.save(Image.new("RGB", (8, 8)), "WEBP", lossless=True)
        bits = (min(w, 16384) - 1) | ((min(h, 16384) - 1) << 14)
        at = data.index(b"VP8L") + 9
        return data[:at] + bits.to_bytes(4, "little")[:3] + bytes([data[at + 3] & 0xF0 | bits >> 24]) + data[at + 4:]
    return bytes(small)


BOMB_FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]


def test_header_bombs_are_rejected_fast_in_little_memory(tmp_path):
    """Headers claiming 50000x50000 (2.5 Gpx; WebP's maximum 16384x16384): no pixel is decoded."""
    paths = []
    for fmt in BOMB_FORMATS:
        paths.append(str(write(tmp_path, f"bomb-{fmt.lower()}", _claim(fmt, 50000, 50000))))
    script = (
        "import json, resource, sys, time\n"
        "from imgtool import imageio\n"
        "from imgtool.errors import ImgtoolError\n"
        "imageio.decode(sys.argv[1], 10**8)  # warm up: first-call imports\n"
        "out = []\n"
        "for p in sys.argv[2:]:\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    t = time.perf_counter()\n"
        "    try:\n"
        "        imageio.decode(p, 120_000_000); err = None\n"
        "    except ImgtoolError as e:\n"
        "        err = [e.code, str(e)]\n"
        "    out.append([p, time.perf_counter() - t,\n"
        "                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, err])\n"
        "print(json.dumps(out))\n"
    )
    ok = write(tmp_path, "ok.png", g.save(PHOTO, "PNG"))
    run = subprocess.run([sys.executable, "-c", script, str(ok), *paths],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for path, seconds, rss_kib, err in json.loads(run.stdout):
        assert err is not None and err[0] == "too_large", (path, err)
        assert "over the limit of 120.0 megapixels" in err[1], err
        # No pixel decoded: memory says so (how fast is no test's to say on a shared machine).
        assert rss_kib < 100 * 1024, (path, seconds, rss_kib)


@pytest.mark.parametrize("fmt", BOMB_FORMATS)
def test_probe_reads_the_claimed_size(tmp_path, fmt):
    path = write(tmp_path, "claim", _claim(fmt, 3000, 2000))
    info = imageio.probe(path, BIG)
    assert (info.width, info.height) == (3000, 2000) and info.format == fmt


def test_limit_is_inclusive(tmp_path):
    path = write(tmp_path, "a.png", g.save(PHOTO, "PNG"))
    assert imageio.decode(path, 96 * 64).shape == (64, 96, 3)
    with pytest.raises(ImageTooLarge) as info:
        imageio.decode(path, 96 * 64 - 1)
    assert "96x64" in str(info.value) and not info.value.retryable


def test_pillow_limit_never_fires_first(tmp_path):
    # 210 Mpx: over Pillow's default refusal (2 x 89.5 Mpx) but under a raised imgtool limit.
    path = write(tmp_path, "huge.png", _claim("PNG", 15000, 14000))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        info = imageio.probe(path, 250_000_000)
        with pytest.raises(ImageTooLarge, match=r"15000x14000 \(210.0 megapixels\) is over the limit of 120.0 megapixels"):
            imageio.probe(path, 120_000_000)
    assert (info.width, info.height) == (15000, 14000)
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


# --- metadata and the outputs ----------------------------------------------------------


@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("lossless", [False, True])
def test_outputs_carry_no_metadata(tmp_path, alpha, lossless):
    src = np.dstack([PHOTO, np.full((64, 96), 200, np.uint8)]) if alpha else PHOTO
    fmt = "PNG" if alpha else "JPEG"
    data = g.save(src, fmt, exif=g.exif_bytes(6, gps=True), xmp=g.XMP_WITH_GPS.encode(),
                  icc_profile=g.adobe_rgb_profile())
    path = write(tmp_path, "gps", data)
    with Image.open(path) as im:
        assert im.getexif().get_ifd(0x8825), "the input has no GPS data"
    image = imageio.decode_image(path, BIG)
    assert image.info == {}
    webp = imageio.encode_webp(imageio.decode(path, BIG), 80, 4, lossless)
    chunks = g.webp_chunks(webp)
    assert not {b"EXIF", b"XMP ", b"ICCP"} & set(chunks), chunks
    for needle in (b"GPS", b"Exif", b"xmpmeta", b"imgtool-test-camera"):
        assert needle not in webp
    with Image.open(io.BytesIO(webp)) as back:
        assert not {"exif", "xmp", "icc_profile"} & set(back.info)
        assert back.mode == ("RGBA" if alpha else "RGB")


def test_decode_image_is_detached_from_the_file(tmp_path):
    path = write(tmp_path, "a.png", g.save(PHOTO, "PNG"))
    image = imageio.decode_image(path, BIG)
    path.unlink()
    assert image.mode == "RGB" and image.size == (96, 64)
    np.testing.assert_array_equal(np.asarray(image), PHOTO)


def test_lossless_webp_holds_exactly_the_pixels_even_invisible_ones():
    shape = g.rgba_shape(hidden=(0, 255, 0))
    back = np.asarray(Image.open(io.BytesIO(imageio.encode_webp(shape, 80, 4, lossless=True))))
    np.testing.assert_array_equal(back, shape)


def test_encode_refuses_what_webp_cannot_hold():
    with pytest.raises(ImageTooLarge, match="16383"):
        imageio.encode_webp(np.zeros((1, 16384, 3), np.uint8), 80, 0, False)
    with pytest.raises(ValueError):
        imageio.encode_webp(np.zeros((4, 4), np.uint8), 80, 0, False)


def test_decoding_imports_only_the_plugins_the_file_needs(tmp_path):
    # Pillow's first open would import five plugins whatever the file; imgtool
    # asks only for the sniffed format's, and every other open still works.
    a = g.photo(40, 30)
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(a).save(tmp_path / "b.png")
    Image.fromarray(a).save(tmp_path / "c.gif")
    code = f"""
import sys
from PIL import Image
from imgtool import imageio
root = {str(tmp_path)!r}
imageio.decode_image(root + "/a.jpg", 10**8)
print(sorted(m for m in sys.modules if m.endswith("ImagePlugin")))
print(imageio.decode_image(root + "/b.png", 10**8).size)
with Image.open(root + "/c.gif") as im:  # a plain open, no formats: Pillow's fallback
    print(im.format, im.size)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    plugins, png, gif = out.splitlines()
    assert "PIL.JpegImagePlugin" in plugins
    for other in ("Bmp", "Gif", "Ppm", "Png"):  # what Pillow's preinit would have imported
        assert f"PIL.{other}ImagePlugin" not in plugins
    assert png == "(40, 30)"
    assert gif == "GIF (40, 30)"


# --- inputs a new user met: truncated HEIC, MPO, APNG, DIB, Netpbm, TIFF variants, 12-bit -------


def _heic_source() -> np.ndarray:
    return g.camera_photo(640, 480, seed=7)


@pytest.mark.parametrize("tile_size", [None, 128], ids=["one-image", "grid"])
def test_truncated_heic_fails_wherever_it_is_cut(tmp_path, tile_size):
    """A real HEIC (pillow-heif's encoder; a grid of tiles as phones write, or one image) cut at nine points."""
    src = _heic_source()
    data = g.heic_bytes(src, tile_size)
    whole = decode_bytes(tmp_path, data, "whole.heic")
    assert mean_abs(whole, src) < 6  # the untouched file decodes, and to the picture
    cuts = [int(len(data) * f) for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)] + [len(data) - 1]
    for cut in cuts:
        path = write(tmp_path, f"cut{cut}.heic", data[:cut])
        with pytest.raises(CorruptImage) as info:
            imageio.decode(path, BIG)
        assert_one_line_error(info.value, path)
        assert not info.value.retryable


def test_a_cut_grid_heic_is_what_libheif_would_paint_in(tmp_path):
    """The failure is real: decoded regardless (pillow-heif alone), the cut file has tiles painted flat."""
    import pillow_heif

    src = _heic_source()
    data = g.heic_bytes(src, 128)
    cut = data[: len(data) // 2]
    painted = np.asarray(pillow_heif.open_heif(io.BytesIO(cut)).to_pillow().convert("RGB"))
    assert mean_abs(painted, src) > 20  # what imgtool used to write out
    with pytest.raises(CorruptImage, match="truncated"):
        decode_bytes(tmp_path, cut, "cut.heic")


def _netpbm(fmt_mode: str, plain: bool) -> tuple[bytes, np.ndarray]:
    im = g.to_mode(PHOTO, fmt_mode)
    buf = io.BytesIO()
    im.save(buf, "PPM")
    data = buf.getvalue()
    if plain:  # the plain (text) variant of the same image: P1/P2/P3
        magic = data[:2]
        w, h = im.size
        a = np.asarray(im).astype(np.int64)
        if magic == b"P4":
            body = " ".join(str(int(v)) for v in (1 - a.astype(bool)).ravel())
            data = f"P1\n{w} {h}\n{body}\n".encode()
        else:
            kind = {b"P5": "P2", b"P6": "P3"}[magic]
            data = f"{kind}\n{w} {h}\n255\n".encode() + " ".join(map(str, a.ravel())).encode() + b"\n"
    expected = np.asarray(im.convert("RGB"))
    return data, expected


@pytest.mark.parametrize("plain", [False, True], ids=["binary", "plain"])
@pytest.mark.parametrize("mode,suffix", [("RGB", "ppm"), ("L", "pgm"), ("1", "pbm")])
def test_netpbm_files_are_images_not_text(tmp_path, mode, suffix, plain):
    data, expected = _netpbm(mode, plain)
    got = decode_bytes(tmp_path, data, f"a.{suffix}")
    np.testing.assert_array_equal(got, expected)


def test_a_broken_binary_netpbm_is_corrupt_not_text(tmp_path):
    data, _ = _netpbm("RGB", False)
    path = write(tmp_path, "cut.ppm", data[:40])
    with pytest.raises(CorruptImage) as info:
        imageio.decode(path, BIG)
    assert "text" not in str(info.value)


def test_dib_mpo_and_apng_give_their_first_frame(tmp_path):
    first, second = PHOTO, PHOTO[::-1].copy()
    dib = g.save(first, "DIB")
    assert dib[:4] == (40).to_bytes(4, "little")  # a bitmap header, no "BM" file header
    np.testing.assert_array_equal(decode_bytes(tmp_path, dib, "a.dib"), first)
    apng = io.BytesIO()
    Image.fromarray(first).save(apng, "PNG", save_all=True, append_images=[Image.fromarray(second)])
    assert b"acTL" in apng.getvalue()
    np.testing.assert_array_equal(decode_bytes(tmp_path, apng.getvalue(), "a.apng"), first)
    mpo = io.BytesIO()
    Image.fromarray(first).save(mpo, "MPO", save_all=True, append_images=[Image.fromarray(second)], quality=95)
    with Image.open(io.BytesIO(mpo.getvalue())) as im:
        assert im.format == "MPO" and im.n_frames == 2
    assert mean_abs(decode_bytes(tmp_path, mpo.getvalue(), "a.mpo"), first) < 3


def test_a_webp_compressed_tiff_is_unsupported_not_corrupt(tmp_path):
    data = g.webp_tiff_bytes(PHOTO)
    path = write(tmp_path, "webp.tif", data)
    if pillow.tiff_codec_configured(50001):  # a libtiff built with WebP: then it decodes
        np.testing.assert_array_equal(imageio.decode(path, BIG), PHOTO)
        return
    with pytest.raises(UnsupportedFormat) as info:
        imageio.decode(path, BIG)
    assert "unsupported" in info.value.message and "webp" in info.value.message.lower()
    assert "corrupt" not in info.value.message
    # A compression scheme Pillow has no name for at all is unsupported too.
    at = data.find(struct.pack("<HHIHH", 259, 3, 1, 50001, 0))
    unknown = data[:at] + struct.pack("<HHIHH", 259, 3, 1, 60001, 0) + data[at + 12:]
    with pytest.raises(UnsupportedFormat, match="60001"):
        decode_bytes(tmp_path, unknown, "unknown.tif")


def _twelve_bit(channels: int) -> np.ndarray:
    """A 12-bit scan as a scanner stores it in 16-bit samples: 0-4095, every level used."""
    rng = np.random.default_rng(12)
    return rng.integers(0, 4096, size=(24, 40, channels), dtype=np.uint16)


def _from_12bit(v: np.ndarray) -> np.ndarray:
    return np.rint(v.astype(np.float64) * 255 / 4095).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("container", ["TIFF", "TIFF-deflate", "PNG", "PNG-filtered"])
def test_twelve_bit_samples_are_scaled_by_what_the_file_declares(tmp_path, container, channels):
    v = _twelve_bit(channels)
    if container.startswith("TIFF"):
        data = g.tiff16_bytes(v, max_sample=4095, deflate=container.endswith("deflate"))
    else:
        data = g.png_bytes(v, 16, sbit=(12,) * channels, filtered=container.endswith("filtered"))
    got = decode_bytes(tmp_path, data)
    expected = _from_12bit(v)
    if channels == 1:
        expected = np.repeat(expected, 3, axis=2)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert got[..., :3].mean() > 100  # not the near-black of 12-bit samples read as 16-bit


def test_a_png_scaled_to_16_bits_keeps_its_scale_whatever_sbit_says(tmp_path):
    """sBIT as the PNG specification means it: samples already scaled up, the chunk only records the depth."""
    v = _twelve_bit(3)
    scaled = (v << 4) | (v >> 8)  # the left shift with bit replication the specification recommends
    got = decode_bytes(tmp_path, g.png_bytes(scaled, 16, sbit=(12, 12, 12)))
    assert_image_close(got, _expected_from_16bit(scaled), 1)
