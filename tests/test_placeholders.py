"""ThumbHash and BlurHash (imgtool.placeholders), decoded by the reference decoders published on PyPI.

``fast-thumbhash`` (bindings to evanw's own ``thumbhash`` Rust crate) and
``blurhash`` (woltapp's algorithm in Python) are test dependencies only.  Each placeholder must decode to the
image's aspect (ThumbHash carries it; within 10%) and colours: known colours
on generated images, block averages on photos.
"""

from __future__ import annotations

import base64
from pathlib import Path

import blurhash as blurhash_ref
import fast_thumbhash as thumbhash_ref
import numpy as np
import pytest
from PIL import Image

import imagegen
from imgtool.placeholders import SOURCE_MAX, blurhash, placeholder_source, placeholders, thumbhash, thumbhash_bytes

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample.jpg"


def decode_thumbhash(text: str) -> np.ndarray:
    w, h, rgba = thumbhash_ref.thumb_hash_to_rgba(base64.b64decode(text))
    return np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)


def decode_blurhash(text: str, w: int, h: int) -> np.ndarray:
    return np.asarray(blurhash_ref.decode(text, w, h), dtype=np.float64).reshape(h, w, 3)


def blocks(img: np.ndarray, nx: int = 4, ny: int = 3) -> np.ndarray:
    """The mean colour of each of ny x nx blocks, (ny, nx, c) float."""
    h, w = img.shape[:2]
    ys, xs = np.linspace(0, h, ny + 1).astype(int), np.linspace(0, w, nx + 1).astype(int)
    return np.array([[img[ys[j]:ys[j + 1], xs[i]:xs[i + 1]].reshape(-1, img.shape[2]).mean(axis=0)
                      for i in range(nx)] for j in range(ny)])


def solid(w, h, colour):
    img = np.empty((h, w, len(colour)), np.uint8)
    img[:] = colour
    return img


# ---- aspect ------------------------------------------------------------------


# (w, h, alpha): the photo aspects ThumbHash's grid says within 10% (its aspect is
# lx / ly, the longer side 7, or 5 with alpha): 1:1, 5:4, 4:3, 3:2 and 16:9 and
# their portraits; with alpha, not 3:2 (5/3 is 11% off).
WITHIN_10 = [(100, 100, False), (100, 80, False), (100, 75, False), (75, 100, False), (100, 67, False),
             (67, 100, False), (100, 56, False), (56, 100, False), (100, 43, False),
             (100, 100, True), (100, 80, True), (100, 75, True), (75, 100, True), (100, 56, True), (100, 40, True)]


@pytest.mark.parametrize("w, h, alpha", WITHIN_10)
def test_thumbhash_decodes_to_the_aspect(w, h, alpha):
    img = imagegen.photo(w, h, seed=w + h)
    if alpha:
        img = np.dstack([img, np.full((h, w), 128, np.uint8)])
    text = thumbhash(img)
    ratio = thumbhash_ref.thumb_hash_to_approximate_aspect_ratio(base64.b64decode(text))
    assert abs(ratio / (w / h) - 1) <= 0.10, (ratio, w / h)
    decoded = decode_thumbhash(text)  # at most 32 a side, rounded to whole pixels
    assert abs(decoded.shape[1] / decoded.shape[0] / (w / h) - 1) <= 0.12


@pytest.mark.parametrize("w, h", [(100, 50), (100, 33), (100, 25), (100, 20), (100, 15), (100, 1), (63, 100),
                                  (1, 100), (100, 62)])
@pytest.mark.parametrize("alpha", [False, True])
def test_thumbhash_aspect_is_the_nearest_the_format_has(w, h, alpha):
    # Other aspects: whatever the grid, the encoder picks its nearest ratio (log distance).
    img = np.full((h, w, 4 if alpha else 3), 100, np.uint8)
    if alpha:
        img[..., 3] = 7
    ratio = thumbhash_ref.thumb_hash_to_approximate_aspect_ratio(thumbhash_bytes(img))
    longer = 5 if alpha else 7
    options = [longer / n if w >= h else n / longer for n in range(1, longer + 1)]
    best = min(options, key=lambda r: abs(np.log(r * h / w)))
    assert ratio == pytest.approx(best)


# ---- colours -----------------------------------------------------------------------


@pytest.mark.parametrize("colour", [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0),
                                    (128, 128, 128), (200, 120, 40), (30, 90, 160)])
def test_solid_colours_decode_to_that_colour(colour):
    img = solid(80, 60, colour)
    th = decode_thumbhash(thumbhash(img))
    assert (th[..., 3] == 255).all()
    # ThumbHash quantises its average to 6 bits of luminance and of each chroma axis.
    assert np.abs(th[..., :3].reshape(-1, 3).mean(axis=0) - colour).max() <= 12, th[0, 0]
    bh = decode_blurhash(blurhash(img), 80, 60)
    # BlurHash keeps the average in 8 bits a channel; its cosines (of x, not x + 0.5, in the
    # reference encoder and decoder alike) leave a little AC even here, most at the edges.
    assert np.abs(bh.reshape(-1, 3).mean(axis=0) - colour).max() <= 2
    assert np.abs(bh - colour).max() <= 12


def test_two_colour_halves_decode_with_each_colour_on_its_side():
    img = solid(90, 60, (220, 30, 30))
    img[:, 45:] = (30, 40, 220)
    for decoded in (decode_thumbhash(thumbhash(img))[..., :3].astype(np.float64),
                    decode_blurhash(blurhash(img), 90, 60)):
        w = decoded.shape[1]
        left, right = decoded[:, : w // 4].reshape(-1, 3).mean(0), decoded[:, -(w // 4):].reshape(-1, 3).mean(0)
        assert left[0] > left[2] + 80 and right[2] > right[0] + 80, (left, right)


def test_thumbhash_carries_alpha():
    img = solid(100, 50, (20, 160, 40, 255))
    img[:, 50:, 3] = 0  # the right half transparent
    raw = thumbhash_bytes(img)
    assert raw[2] & 0x80  # the format's alpha flag
    decoded = decode_thumbhash(base64.b64encode(raw).decode())
    w = decoded.shape[1]
    assert decoded[:, : w // 4, 3].mean() > 200 and decoded[:, -(w // 4):, 3].mean() < 55
    # The visible half's colour, not the colour under alpha 0 (here black).
    seen = decoded[:, : w // 4, :3].reshape(-1, 3).mean(0)
    assert np.abs(seen - (20, 160, 40)).max() <= 25, seen
    opaque = thumbhash_bytes(solid(100, 50, (20, 160, 40, 255)))
    assert not opaque[2] & 0x80 and opaque == thumbhash_bytes(solid(100, 50, (20, 160, 40)))


def test_blurhash_of_rgba_ignores_colour_under_alpha_zero():
    img = solid(60, 60, (250, 250, 250, 0))  # white, invisible
    img[20:40, 20:40] = (200, 40, 40, 255)
    bh = decode_blurhash(blurhash(img), 60, 60)
    assert np.abs(bh.reshape(-1, 3).mean(0) - (200, 40, 40)).max() <= 12


@pytest.mark.parametrize("which", ["sample.jpg", "generated"])
def test_photos_decode_to_their_colours(which):
    if which == "sample.jpg":
        with Image.open(SAMPLE) as im:
            src = placeholder_source(im.convert("RGB"))
    else:
        src = placeholder_source(Image.fromarray(imagegen.photo(400, 300, seed=7)))
    h, w = src.shape[:2]
    want = blocks(src.astype(np.float64))
    th = decode_thumbhash(thumbhash(src))[..., :3].astype(np.float64)
    assert abs(th.shape[1] / th.shape[0] / (w / h) - 1) <= 0.10
    assert np.abs(blocks(th) - want).mean() <= 12 and np.abs(th.mean((0, 1)) - src.mean((0, 1))).max() <= 8
    bh = decode_blurhash(blurhash(src), w, h)
    assert np.abs(blocks(bh) - want).mean() <= 12 and np.abs(bh.mean((0, 1)) - src.mean((0, 1))).max() <= 8


# ---- the strings and the inputs ------------------------------------------------------


def test_strings_are_what_an_api_inlines():
    src = imagegen.photo(100, 75, seed=1)
    p = placeholders(src)
    assert set(p) == {"thumbhash", "blurhash"}
    assert p == {"thumbhash": thumbhash(src), "blurhash": blurhash(src)}
    assert 20 <= len(base64.b64decode(p["thumbhash"])) <= 25
    assert len(p["blurhash"]) == 6 + 2 * (4 * 3 - 1)  # size, maximum, DC (4), 11 AC (2 each)
    assert p["blurhash"][0] == "L"  # base83 of (4 - 1) + (3 - 1) * 9: 4 x 3 components


def test_placeholder_source_fits_100_and_keeps_the_aspect():
    im = Image.fromarray(imagegen.photo(640, 480, seed=3))
    src = placeholder_source(im)
    assert src.shape == (75, SOURCE_MAX, 3) and src.dtype == np.uint8
    assert placeholder_source(Image.fromarray(imagegen.photo(40, 90))).shape == (90, 40, 3)  # already fits
    tall = placeholder_source(Image.new("LA", (30, 3000)))
    assert tall.shape == (SOURCE_MAX, 1, 4)
    assert placeholder_source(Image.new("RGBA", (2000, 1000), (1, 2, 3, 4))).shape == (50, 100, 4)


@pytest.mark.parametrize("bad", [np.zeros((101, 10, 3), np.uint8), np.zeros((10, 101, 4), np.uint8),
                                 np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5, 2), np.uint8),
                                 np.zeros((5, 5, 3), np.float32), np.zeros((5, 5), np.uint8)])
def test_bad_inputs_are_refused(bad):
    for fn in (placeholders, thumbhash, blurhash):
        with pytest.raises(ValueError):
            fn(bad)
    with pytest.raises(ValueError):
        blurhash(np.zeros((4, 4, 3), np.uint8), (10, 3))


# ---- in the outputs' reports: --json lines, from pixels the pipeline had ------------------


def _process_json(tmp_path, images: dict, *args) -> dict:
    """``imgtool process --json`` over ``images`` (name -> array, saved as PNG): jobId -> its line."""
    import json
    import subprocess
    import sys

    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    for name, img in images.items():
        Image.fromarray(img).save(folder / f"{name}.png")
    r = subprocess.run([sys.executable, "-m", "imgtool", "process", str(folder), "-o", str(tmp_path / "out"),
                        "--force", "--backend", "cpu", "--effort", "0", "--json", *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {line["jobId"]: line for line in map(json.loads, r.stdout.splitlines())}


# The images' own aspects: 4:3, 3:4, 16:9 within ThumbHash's 10%; 2:1 the format cannot
# hold (its grid's nearest is 7:4), so the real width and height come beside the hashes.
ASPECTS = {"landscape": (800, 600), "portrait": (600, 800), "wide": (1280, 720), "two-to-one": (1000, 500)}


@pytest.mark.parametrize("ops", ["thumbnail,blur,low-quality", "blur,low-quality"])
def test_json_lines_carry_placeholders_that_decode_to_the_image(tmp_path, ops):
    images = {name: imagegen.photo(w, h, seed=w) for name, (w, h) in ASPECTS.items()}
    lines = _process_json(tmp_path, images, "--ops", ops)
    for name, (w, h) in ASPECTS.items():
        line = lines[name]
        assert (line["width"], line["height"]) == (w, h)
        hashes = line["placeholders"]
        assert set(hashes) == {"thumbhash", "blurhash"}
        ratio = thumbhash_ref.thumb_hash_to_approximate_aspect_ratio(base64.b64decode(hashes["thumbhash"]))
        if name == "two-to-one":
            assert ratio == pytest.approx(7 / 4)
        else:
            assert abs(ratio / (w / h) - 1) <= 0.10, (name, ratio)
        # Colours: the decoded hashes' block averages against the image's own.
        want = blocks(images[name].astype(np.float64))
        th = decode_thumbhash(hashes["thumbhash"])[..., :3].astype(np.float64)
        bh = decode_blurhash(hashes["blurhash"], 40, round(40 * h / w))
        for decoded in (th, bh):
            assert np.abs(blocks(decoded) - want).mean() <= 12, name
            assert np.abs(decoded.mean((0, 1)) - images[name].mean((0, 1))).max() <= 8, name


def test_json_placeholders_carry_alpha(tmp_path):
    img = np.zeros((300, 400, 4), np.uint8)
    img[:, :200] = (20, 160, 40, 255)  # the left half opaque green, the right half transparent
    line = _process_json(tmp_path, {"half": img}, "--ops", "thumbnail")["half"]
    decoded = decode_thumbhash(line["placeholders"]["thumbhash"])
    w = decoded.shape[1]
    assert decoded[:, : w // 4, 3].mean() > 200 and decoded[:, -(w // 4):, 3].mean() < 55
    assert np.abs(decoded[:, : w // 4, :3].reshape(-1, 3).mean(0) - (20, 160, 40)).max() <= 25


def test_placeholders_come_from_the_thumbnail_without_a_decode_of_their_own(tmp_path, monkeypatch):
    """One decode per image, whatever the widths; the hashes from the smallest thumbnail that is large enough."""
    from imgtool import imageio, placeholders as module
    from imgtool.ops import Settings
    from imgtool.pipeline import Pipeline, Task

    img = imagegen.photo(1200, 900, seed=5)
    Image.fromarray(img).save(tmp_path / "p.png")
    decodes, sources = [], []
    real_decode, real_source = imageio.Opened.decode, module.source_image
    monkeypatch.setattr(imageio.Opened, "decode", lambda self: decodes.append(1) or real_decode(self))
    monkeypatch.setattr(module, "source_image", lambda im: sources.append(im.size) or real_source(im))
    pipe = Pipeline(Settings(ops=("thumbnail", "blur"), thumb_width=(640, 16, 256)), backend="cpu", jobs=1)
    try:
        result = pipe.process(Task(tmp_path / "p.png", tmp_path / "out"))
    finally:
        pipe.close()
    assert result.status == "done" and decodes == [1]
    assert sources == [(256, 192)]  # not the 16-wide one (too small to hold the hashes' detail), not 640
    assert result.placeholders == placeholders(placeholder_source(Image.fromarray(img).resize(
        (256, 192), Image.Resampling.LANCZOS, reducing_gap=3.0)))
    assert imageio.probe(tmp_path / "out" / "p_thumbnail-16.webp", 1 << 30).width == 16


# ---- the C sums (_cpufast) against the numpy ones --------------------------------
#
# Both paths compute the same sums in the same order in double precision, but
# numpy's matrix products go through BLAS, which adds in an order (and with
# fused multiply-adds) of its own: the sums can differ in their last bits.  A
# string can then differ only where a value lies on a quantisation boundary to
# within those bits (a flat colour whose exact average is k + 0.5 steps, as
# (200, 30, 90) below): by at most one step of that value.  Real images (the
# corpus' thumbnails, noise, generated photos) give identical strings.

import os  # noqa: E402

from helpers import on_ci  # noqa: E402
from imgtool import placeholders as module  # noqa: E402

CORPUS = Path(os.environ["IMGTOOL_CORPUS"]) if os.environ.get("IMGTOOL_CORPUS") else (
    Path(__file__).resolve().parents[2] / "shared" / "corpus")
PHOTOS = CORPUS / "photos" if (CORPUS / "photos").is_dir() else CORPUS


def _need_c():
    if module._cpufast is None and on_ci():
        pytest.fail("imgtool.backends._cpufast was not built")
    if module._cpufast is None:
        pytest.skip("built without a C compiler: the numpy path is the only one")


def _both(src):
    """((thumbhash, blurhash) from the C sums, the same from the numpy sums), and the two _Sums."""
    source = module._Source(src)
    out = []
    for fast in (True, False):
        sums = module._Sums(source, fast=fast)
        out.append(((base64.b64encode(module._thumbhash(sums)).decode("ascii"), module._blurhash(sums)), sums))
    return out


def _thumbhash_fields(text: str) -> tuple[tuple, list[int]]:
    """(the layout: alpha, landscape, grid side, length; the quantised values) of a ThumbHash, per the format."""
    b = base64.b64decode(text)
    h24, h16 = b[0] | b[1] << 8 | b[2] << 16, b[3] | b[4] << 8
    values = [h24 & 63, h24 >> 6 & 63, h24 >> 12 & 63, h24 >> 18 & 31, h16 >> 3 & 63, h16 >> 9 & 63]
    alpha = h24 >> 23
    rest = b[5:]
    if alpha:
        values += [rest[0] & 15, rest[0] >> 4]
        rest = rest[1:]
    for byte in rest:
        values += [byte & 15, byte >> 4]
    return (alpha, h16 >> 15, h16 & 7, len(b)), values


def _blurhash_fields(text: str) -> tuple[tuple, list[int]]:
    """(the layout: size flag, length; the quantised values: maximum, DC r g b, each AC's three) of a BlurHash."""
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"

    def b83(s):
        v = 0
        for ch in s:
            v = v * 83 + digits.index(ch)
        return v

    dc = b83(text[2:6])
    values = [b83(text[1]), dc >> 16, dc >> 8 & 255, dc & 255]
    for i in range(6, len(text), 2):
        v = b83(text[i:i + 2])
        values += [v // 361, v // 19 % 19, v % 19]
    return (text[0], len(text)), values


def _within_one_step(c: tuple[str, str], n: tuple[str, str]):
    for fields, text_c, text_n in ((_thumbhash_fields, c[0], n[0]), (_blurhash_fields, c[1], n[1])):
        (layout_c, vc), (layout_n, vn) = fields(text_c), fields(text_n)
        assert layout_c == layout_n, (c, n)
        assert max(abs(x - y) for x, y in zip(vc, vn)) <= 1, (c, n)


def _sums_close(sc, sn):
    assert sc.has_alpha == sn.has_alpha and (sc.lx, sc.ly) == (sn.lx, sn.ly)
    for name in ("l", "p", "q", "a", "factors"):
        a, b = getattr(sc, name), getattr(sn, name)
        if a is None or b is None:
            assert a is b is None, name
        else:
            assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) <= 1e-12, name


def test_the_c_extension_has_the_placeholders_sums():
    _need_c()


def _thumb(path: Path) -> Image.Image:
    from PIL import ImageOps

    with Image.open(path) as src:
        im = ImageOps.exif_transpose(src).convert("RGB")
    w, h = im.size
    return im.resize((256, max(1, round(h * 256 / w))), Image.Resampling.LANCZOS, reducing_gap=3.0)


@pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"the corpus is not here ({PHOTOS})")
def test_c_and_numpy_give_the_same_strings_on_the_corpus_thumbnails():
    _need_c()
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert photos
    for path in photos:
        src = module.source_image(_thumb(path))
        (c, sc), (n, sn) = _both(src)
        _sums_close(sc, sn)
        assert c == n, path.name
        assert module.placeholders(src) == {"thumbhash": c[0], "blurhash": c[1]}  # the normal path is the C one
        assert module.placeholders(np.asarray(src)) == module.placeholders(src)  # an array or the image


def _random(w, h, c, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _generated():
    """name -> uint8 array: noise, photos, flat colours, alpha, 1 x N, N x 1, 100 x 100, odd sizes."""
    out = {}
    sizes = [(100, 100), (1, 1), (1, 37), (37, 1), (1, 100), (100, 1), (2, 3), (37, 91), (99, 13), (64, 48),
             (100, 75), (75, 100), (51, 100)]
    for w, h in sizes:
        for c in (3, 4):
            out[f"random {w}x{h}x{c}"] = _random(w, h, c, seed=w * 1000 + h * 10 + c)
            out[f"flat {w}x{h}x{c}"] = solid(w, h, (31, 140, 222, 255)[:c])
        out[f"flat boundary {w}x{h}"] = solid(w, h, (200, 30, 90))  # ThumbHash's Q average: 52.5 steps exactly
        a = _random(w, h, 4, seed=w + h)
        a[..., 3] = np.where(a[..., 3] > 128, 255, a[..., 3] // 2)  # partly transparent
        out[f"alpha {w}x{h}"] = a
        out[f"clear {w}x{h}"] = solid(w, h, (10, 200, 30, 0))  # nothing seen: alpha's sum 0
        out[f"flat half {w}x{h}"] = solid(w, h, (10, 200, 30, 128))
    for w, h in [(100, 75), (61, 100), (100, 17)]:
        out[f"photo {w}x{h}"] = imagegen.photo(w, h, seed=w + h)
    return out


GENERATED = _generated()


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_c_and_numpy_agree_on_generated_images(name):
    _need_c()
    img = GENERATED[name]
    (c, sc), (n, sn) = _both(img)
    _sums_close(sc, sn)
    if name.startswith(("random", "photo", "alpha")):
        assert c == n  # real content: no value on a boundary
    else:
        _within_one_step(c, n)  # flat colours can sit exactly on a boundary: one step at most
    assert module.placeholders(img) == {"thumbhash": c[0], "blurhash": c[1]}


def test_flat_channels_store_no_rounding_noise():
    """A flat image's AC coefficients are 0 (not its sums' rounding noise scaled up): the scales and nibbles 0, on either path."""
    for fast in (True, False):
        sums = module._Sums(module._Source(solid(37, 91, (31, 140, 222))), fast=fast)
        _, values = _thumbhash_fields(base64.b64encode(module._thumbhash(sums)).decode("ascii"))
        assert values[3] == values[4] == values[5] == 0  # L, P, Q scales
        assert set(values[6:]) <= {0}  # no scale: the coefficients are stored as 0


def test_a_process_run_on_a_jpeg_does_not_import_numpy(tmp_path):
    """numpy costs more start-up than a small image takes: with the C sums, a run never imports it."""
    import subprocess
    import sys

    _need_c()
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(SAMPLE.read_bytes())
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "imgtool", "process", str(folder), "-o",
                        str(tmp_path / "out"), "--force", "--backend", "cpu", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "placeholders" in r.stdout  # the hashes were made
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    assert "imgtool.placeholders" in imported
    assert not [m for m in imported if m == "numpy" or m.startswith("numpy.")]


def test_the_c_sums_refuse_what_they_cannot_read():
    _need_c()
    sums = module._cpufast.placeholder_sums
    grids = ((7, 5), (5, 4), (4, 3))
    assert sums(bytes(12), 2, 2, 3, *grids)[0] is False
    for args in [(bytes(11), 2, 2, 3), (bytes(16), 2, 2, 3), (bytes(101 * 3), 101, 1, 3), (bytes(0), 0, 1, 3),
                 (bytes(8), 2, 2, 2)]:
        with pytest.raises(ValueError):
            sums(*args, *grids)
    with pytest.raises(ValueError):
        sums(bytes(12), 2, 2, 3, (7, 5), (5, 4), (10, 3))
    with pytest.raises(TypeError):
        sums("not bytes", 2, 2, 3, *grids)
    with pytest.raises(ValueError):
        module.placeholders(Image.new("L", (4, 4)))  # the encoders read RGB or RGBA; source_image converts
