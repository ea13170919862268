"""End to end: `imgtool process` over a folder of a few hundred diverse and broken files.

Every mode Pillow can write in every accepted format, camera-like photos
(orientations, GPS, ICC profiles, CMYK, 16-bit, alpha, animations), hostile
and broken files, and truncated copies.  The run must finish with exit 1, no
traceback and no hang; every output a valid metadata-free WebP; every failure
one line; no temporary file left behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imagegen as g
from imgtool import imageio
from imgtool.errors import ImgtoolError
from imgtool.ops import OPERATIONS, output_name

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on damaged files

OK, FAIL, EITHER = "ok", "fail", "either"  # what each input must do
THUMB_WIDTH = 40
RUN_TIMEOUT = 300

MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
         "LAB", "HSV", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"]
FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp",
           "TIFF": "tif", "HEIF": "heic", "AVIF": "avif"}


def _every_mode(folder: Path) -> dict[Path, str]:
    out = {}
    src = g.photo(48, 36, seed=1)
    for fmt, ext in FORMATS.items():
        for mode in MODES:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    data = g.save(g.to_mode(src, mode), fmt)
            except Exception:  # noqa: BLE001 - Pillow cannot write this mode here
                continue
            path = folder / f"{fmt.lower()}-{mode.replace(';', '_').lower()}-{_slug(mode)}.{ext}"
            path.write_bytes(data)
            out[path] = OK
    return out


def _slug(mode: str) -> str:
    # Modes differing only in case (La/LA, RGBa/RGBA) must not share a job id.
    return "".join("u" if c.isupper() else "l" for c in mode if c.isalpha())


def _photos(folder: Path) -> dict[Path, str]:
    p = g.photo()
    files: dict[str, bytes] = {}
    for o in range(1, 9):
        files[f"phone-orientation-{o}.jpg"] = g.save(
            g.stored_for_orientation(p, o), "JPEG", exif=g.exif_bytes(o, gps=True), quality=90)
    files["gps-and-xmp.jpg"] = g.save(p, "JPEG", exif=g.exif_bytes(gps=True), xmp=g.XMP_WITH_GPS.encode())
    files["gps-png.png"] = g.save(p, "PNG", exif=g.exif_bytes(6, gps=True))
    files["gps-webp.webp"] = g.save(p, "WEBP", exif=g.exif_bytes(gps=True), xmp=g.XMP_WITH_GPS.encode())
    files["gps-heic.heic"] = g.save(p, "HEIF", exif=g.exif_bytes(gps=True))
    files["gps-avif.avif"] = g.save(p, "AVIF", exif=g.exif_bytes(3, gps=True))
    for name, profile, prim, enc in [("adobe", g.adobe_rgb_profile(), g.ADOBE_RGB_PRIMARIES, g.adobe_encode),
                                     ("p3", g.display_p3_profile(), g.P3_PRIMARIES, g.linear_to_srgb)]:
        wide = g.srgb_to_space(p, prim, enc)
        files[f"{name}.jpg"] = g.save(wide, "JPEG", icc_profile=profile)
        files[f"{name}-png.png"] = g.save(wide, "PNG", icc_profile=profile)
        files[f"{name}-tiff.tif"] = g.save(wide, "TIFF", icc_profile=profile)
    files["p3-iphone-like.heic"] = g.save(g.srgb_to_space(p, g.P3_PRIMARIES, g.linear_to_srgb), "HEIF",
                                          icc_profile=g.display_p3_profile(), exif=g.exif_bytes(6, gps=True))
    cmyk = Image.fromarray(g.srgb_to_cmyk_plain(p), "CMYK")
    files["cmyk.jpg"] = g.save(cmyk, "JPEG")
    files["cmyk-profile.jpg"] = g.save(cmyk, "JPEG", icc_profile=g.cmyk_profile())
    files["cmyk-profile-tiff.tif"] = g.save(cmyk, "TIFF", icc_profile=g.cmyk_profile())
    files["gray-profile.png"] = g.save(Image.fromarray(p).convert("L"), "PNG", icc_profile=g.gray_profile())
    files["bad-profile.jpg"] = g.save(p, "JPEG", icc_profile=b"\0" * 300)
    for hidden, rgb in (("black", (0, 0, 0)), ("white", (255, 255, 255)), ("green", (0, 255, 0))):
        shape = g.rgba_shape(hidden=rgb)
        files[f"shape-on-{hidden}.png"] = g.save(shape, "PNG")
        files[f"shape-on-{hidden}-webp.webp"] = g.save(shape, "WEBP", lossless=True, exact=True)
    frames = g.animation()
    for fmt, ext in (("GIF", "gif"), ("WEBP", "webp"), ("PNG", "png"), ("TIFF", "tif"), ("AVIF", "avif"),
                     ("MPO", "jpg")):
        files[f"animated-{fmt.lower()}.{ext}"] = g.save(frames[0], fmt, save_all=True, append_images=frames[1:])
    files["deep-rgb16.png"] = g.png_bytes(p.astype(np.uint16) * 257, 16)
    files["deep-rgba16.png"] = g.png_bytes(np.dstack([p.astype(np.uint16) * 257,
                                                      np.full((64, 96), 30000, np.uint16)]), 16)
    files["deep-rgb16-tiff.tif"] = g.tiff16_bytes(p.astype(np.uint16) * 257)
    files["deep-gray16.png"] = g.png_bytes(g.gray16(), 16)
    files["progressive.jpg"] = g.save(p, "JPEG", progressive=True)
    for comp in ("tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg"):
        files[f"compressed-{comp}.tif"] = g.save(p, "TIFF", compression=comp)
    files["zone-plate.png"] = g.save(g.zone_plate(256), "PNG")
    files["larger-photo.jpg"] = g.save(g.photo(640, 480, seed=7), "JPEG", quality=85)
    files["one-pixel.png"] = g.save(np.full((1, 1, 3), 99, np.uint8), "PNG")
    files["one-row.png"] = g.save(g.photo(97, 1), "PNG")
    files["one-column.gif"] = g.save(g.photo(1, 77), "GIF")
    files["gif-transparent.gif"] = g.save(Image.fromarray(p).convert("P"), "GIF", transparency=0)
    files["palette-alpha.png"] = g.save(Image.fromarray(p).convert("P"), "PNG", transparency=bytes(range(256)))
    files["upper-case-ext.JPG"] = g.save(p, "JPEG")
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[folder / name] = OK
    return out


def _broken(folder: Path) -> dict[Path, str]:
    p = g.photo()
    damaged_png = bytearray(g.save(p, "PNG"))
    damaged_png[len(damaged_png) // 2] ^= 0xFF
    files = {
        "zero-bytes.jpg": b"",
        "text-named.jpg": g.TEXT,
        "drawing.svg": g.SVG,
        "document-named.png": g.PDF,
        "page-named.gif": b"<!DOCTYPE html><html><body>not a gif</body></html>",
        "bomb-50000x50000.png": g.png_bytes(np.zeros((2, 2, 3), np.uint8), size=(50000, 50000)),
        "random-bytes.webp": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "jpeg-magic-then-garbage.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8,
        "damaged-checksum.png": bytes(damaged_png),
        "icon-named.bmp": g.save(Image.fromarray(p[:16, :16]), "ICO"),
        "video-named.avif": b"\0\0\0\x18ftypisom\0\0\0\0isommp41" + bytes(200),
        "tiny.tif": b"II*\0",
    }
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[folder / name] = FAIL
    os.mkfifo(folder / "named-pipe.jpg")
    out[folder / "named-pipe.jpg"] = FAIL
    (folder / "dangling-link.png").symlink_to(folder / "nowhere.png")
    out[folder / "dangling-link.png"] = FAIL
    return out


def _truncated(folder: Path, sources: list[Path]) -> dict[Path, str]:
    """Copies cut at a third, two thirds and one byte short; mid-data cuts must fail."""
    out = {}
    for src in sources:
        data = src.read_bytes()
        animated = "animated" in src.name
        for label, n in (("third", len(data) // 3), ("two-thirds", 2 * len(data) // 3), ("last-byte", len(data) - 1)):
            path = folder / f"{src.stem}-cut-{label}{src.suffix}"
            path.write_bytes(data[:n])
            out[path] = FAIL if label != "last-byte" and not animated else EITHER
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[Path, str]]:
    root = tmp_path_factory.mktemp("uploads")
    expect: dict[Path, str] = {}
    for sub, build in (("modes", _every_mode), ("photos", _photos), ("broken", _broken)):
        (root / sub).mkdir()
        expect.update(build(root / sub))
    (root / "truncated").mkdir()
    # A few of each kind of input, cut: every format, several modes.
    picks = sorted(p for p, e in expect.items() if e == OK and p.is_file() and p.stat().st_size > 200)
    expect.update(_truncated(root / "truncated", picks[::2]))
    return root, expect


def test_the_corpus_is_a_few_hundred_diverse_files(corpus):
    root, expect = corpus
    assert len(expect) >= 250
    assert {p.suffix.lower() for p in expect} >= {".jpg", ".png", ".gif", ".webp", ".bmp", ".tif", ".heic", ".avif", ".svg"}
    assert sum(e == FAIL for e in expect.values()) >= 40


def test_imageio_alone_decodes_or_names_the_reason(corpus):
    """The same corpus straight through decode/encode, without the CLI."""
    root, expect = corpus
    for path, want in expect.items():
        try:
            img = imageio.decode(path, 120_000_000)
        except ImgtoolError as exc:
            assert want != OK, f"{path}: {exc}"
            assert "\n" not in str(exc) and str(path) in str(exc)
            continue
        assert want != FAIL, f"{path} decoded"
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] in (3, 4)
        webp = imageio.encode_webp(img, 30, 0, False)
        assert not {b"EXIF", b"XMP ", b"ICCP"} & set(g.webp_chunks(webp))


def _output_size(op: str, w: int, h: int) -> tuple[int, int]:
    if op == "thumbnail":
        return (w, h) if w <= THUMB_WIDTH else (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w)))
    if op == "blur":
        return w, h
    return max(1, w // 2), max(1, h // 2)


def test_process_over_the_corpus(corpus, tmp_path):
    root, expect = corpus
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "imgtool", "process", str(root), "-o", str(out), "--json",
         "--thumb-width", str(THUMB_WIDTH), "--effort", "0"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.returncode == 1, run.stderr[-3000:]

    results = {Path(r["input"]): r for r in map(json.loads, run.stdout.splitlines())}
    assert set(results) == set(expect), set(expect) ^ set(results)
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("Error: ")]
    other_lines = [line for line in run.stderr.splitlines() if not line.startswith("Error: ")]
    # Besides the failures: the closing summary and the backend said once.
    assert len(other_lines) <= 2 and all(
        re.match(r"\d+ done, \d+ skipped, \d+ failed", line) or line.startswith("backend: ")
        for line in other_lines), other_lines

    failed = {p for p, r in results.items() if r["status"] == "failed"}
    assert len(error_lines) == len(failed)
    for path in failed:
        mine = [line for line in error_lines if line.startswith(f"Error: {path}: ")]
        assert len(mine) == 1, (path, mine)
        assert results[path]["error"]["type"] != "error"  # a named error, not a catch-all

    for path, want in expect.items():
        status = results[path]["status"]
        rel = path.parent.relative_to(root)
        job_outputs = [out / rel / output_name(path.stem, op) for op in OPERATIONS]
        if want == OK:
            assert status == "done", (path, results[path])
        if want == FAIL:
            assert status == "failed", (path, results[path])
        if status == "failed":
            assert not any(o.exists() for o in job_outputs), path
            continue
        decoded = imageio.decode(path, 120_000_000)
        h, w, channels = decoded.shape
        # libwebp leaves out an alpha channel that is opaque everywhere.
        transparent = channels == 4 and decoded[..., 3].min() < 255
        for op, o in zip(OPERATIONS, job_outputs):
            data = o.read_bytes()
            assert not {b"EXIF", b"XMP ", b"ICCP"} & set(g.webp_chunks(data)), o
            with Image.open(o) as im:
                im.load()
                assert im.format == "WEBP"
                assert im.size == _output_size(op, w, h), (o, im.size, (w, h))
                modes = {"RGBA"} if transparent else {"RGB"} if channels == 3 else {"RGB", "RGBA"}
                assert im.mode in modes, (o, im.mode)

    written = [p for p in out.rglob("*") if p.is_file()]
    assert all(re.fullmatch(r".+_(thumbnail|blur|low-quality)\.webp", p.name) for p in written), written
    assert len(written) == 3 * sum(r["status"] == "done" for r in results.values())
    stray = [p for p in [*root.rglob("*"), *out.rglob("*")]
             if p.name.startswith(".imgtool-") or p.name.endswith(".tmp")]
    assert stray == []


def _first_frame_files(folder: Path) -> dict[str, np.ndarray]:
    """One file of each format a new user met being skipped or refused, each written by Pillow; name -> first frame."""
    first = g.photo(52, 36, seed=5)
    second = (255 - first).copy()
    frames = [Image.fromarray(first), Image.fromarray(second)]
    folder.mkdir(parents=True, exist_ok=True)
    frames[0].save(folder / "phone.mpo", "MPO", save_all=True, append_images=frames[1:], quality=95)
    frames[0].save(folder / "anim.apng", "PNG", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "clip.avifs", "AVIF", save_all=True, append_images=frames[1:], quality=95)
    frames[0].save(folder / "old.dib", "DIB")
    frames[0].save(folder / "scan.ppm")
    frames[0].convert("L").save(folder / "gray.pgm")
    frames[0].convert("1").save(folder / "ink.pbm")
    ref = folder.parent / "ref"
    ref.mkdir()
    for name in ("first", "gray", "ink"):  # the first frames alone, as PNG: what each must give
        {"first": frames[0], "gray": frames[0].convert("L"), "ink": frames[0].convert("1")}[name].save(
            ref / f"{name}.png")
    return {"phone": first, "anim": first, "clip": first, "old": first, "scan": first, "gray": None, "ink": None}


def test_mpo_apng_avifs_dib_and_netpbm_are_taken_in_folders_and_by_name(tmp_path):
    files = _first_frame_files(tmp_path / "in")
    assert (tmp_path / "in" / "clip.avifs").read_bytes()[8:12] == b"avis"
    r = subprocess.run([sys.executable, "-m", "imgtool", "process", str(tmp_path / "in"), "--backend", "cpu",
                        "--ops", "low-quality", "--lossless", "--json"],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    done = {json.loads(line)["jobId"] for line in r.stdout.splitlines() if json.loads(line)["status"] == "done"}
    assert done == set(files), r.stderr
    r = subprocess.run([sys.executable, "-m", "imgtool", "process", str(tmp_path / "ref"), "--backend", "cpu",
                        "--ops", "low-quality", "--lossless"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr

    def pixels(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).astype(int)

    for job in files:
        ref = {"gray": "gray", "ink": "ink"}.get(job, "first")
        got = pixels(tmp_path / "in" / "processed" / f"{job}_low-quality.webp")
        want = pixels(tmp_path / "ref" / "processed" / f"{ref}_low-quality.webp")
        assert got.shape == want.shape, job
        if job in ("phone", "clip"):  # JPEG and AVIF: lossy, but far nearer the first frame than the second
            assert float(np.abs(got - want).mean()) < 6 < float(np.abs(got - (255 - want)).mean()), job
        else:
            np.testing.assert_array_equal(got, want, err_msg=job)
    by_name = [str(tmp_path / "in" / n) for n in ("phone.mpo", "anim.apng", "old.dib", "ink.pbm")]
    r = subprocess.run([sys.executable, "-m", "imgtool", "process", *by_name, "--backend", "cpu", "--force",
                        "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and "4 done" in r.stderr, r.stderr
