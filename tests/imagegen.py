"""Test images made on the spot: photo-like pictures, zone plates, EXIF, ICC profiles, odd files.

Nothing is downloaded.  Colour conversions here are plain numpy formulas,
independent of lcms, so that tests compare imgtool's ImageCms results with
a separate truth.  Every function is small and deterministic (seeded).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

# --- pictures -------------------------------------------------------------


def photo(width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 (h, w, 3) sRGB image: smooth colour gradients, soft shapes, fine texture.

    No symmetry (a bright blob sits in the top-left quadrant), so a wrong
    rotation or flip is obvious.  Values stay within 8..247, away from clipping.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    r = 0.55 + 0.35 * np.sin(2.1 * u + 0.7) * np.cos(1.3 * v)
    g = 0.45 + 0.30 * np.cos(2.9 * v - 0.4) + 0.1 * u
    b = 0.35 + 0.40 * v * (1 - u) + 0.15 * np.sin(6 * u * v)
    img = np.stack([r, g, b], axis=-1)
    blob = np.exp(-(((u - 0.22) / 0.12) ** 2 + ((v - 0.28) / 0.16) ** 2))
    img += blob[..., None] * np.array([0.4, 0.3, -0.2])
    ring = np.abs(np.hypot(u - 0.7, v - 0.65) - 0.18) < 0.03
    img[ring] = img[ring] * 0.4 + np.array([0.1, 0.15, 0.5]) * 0.6
    img += rng.normal(0.0, 0.012, img.shape)  # sensor-like texture
    return np.clip(np.rint(8 + img * 239), 8, 247).astype(np.uint8)


def camera_photo(width: int = 1024, height: int = 768, seed: int = 0) -> np.ndarray:
    """A uint8 (h, w, 3) image with a camera photo's statistics, for tests that need them where the corpus is not.

    Detail at every scale (an amplitude spectrum falling as 1/f, as natural
    scenes have), rolled off above 0.12 cycles a pixel as a lens and a
    demosaic do, colour in luminance and two chroma fields, a dozen
    objects with antialiased hard edges, and a little sensor noise.  Like the
    corpus' camera photos, the old 3x3 [1 2 1] blur changes it by about 1
    level a pixel on average.
    """
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    lens = np.exp(-((f / 0.12) ** 2))
    fields = []
    for _ in range(3):
        spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f * lens
        spectrum[0, 0] = 0
        field = np.fft.irfft2(spectrum, s=(height, width))
        fields.append(field / field.std())
    lum, c1, c2 = fields
    img = 128 + 40 * np.stack([lum + 0.3 * c1, lum + 0.3 * c2, lum - 0.3 * c1], axis=-1)
    y, x = np.mgrid[0:height, 0:width]
    for _ in range(12):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.02, 0.15) * min(width, height)
        inside = np.clip(r + 0.5 - np.hypot(x - cx, y - cy), 0, 1)[..., None]
        img = img * (1 - 0.5 * inside) + rng.uniform(0, 255, 3) * 0.5 * inside
    img += rng.normal(0.0, 1.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def zone_plate(size: int = 256, channels: int = 3) -> np.ndarray:
    """A circular zone plate (cos(k r^2)), uint8 (size, size, channels): aliasing shows as moire."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) - (size - 1) / 2
    k = np.pi / size  # the frequency reaches Nyquist at the edge
    g = np.rint(127.5 + 127.5 * np.cos(k * (x * x + y * y))).astype(np.uint8)
    return np.repeat(g[..., None], channels, axis=-1) if channels > 1 else g


def rgba_shape(width: int = 64, height: int = 64, color=(220, 40, 30), hidden=(0, 0, 0)) -> np.ndarray:
    """A straight-alpha uint8 (h, w, 4) disc of ``color`` with an antialiased edge.

    Fully transparent pixels hold ``hidden`` as their (invisible) colour, the
    thing that makes halos when resampling is not premultiplied.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = np.hypot(x - (width - 1) / 2, y - (height - 1) / 2)
    radius = min(width, height) * 0.3
    alpha = np.clip(radius + 0.5 - r, 0.0, 1.0)
    out = np.empty((height, width, 4), np.uint8)
    out[..., :3] = np.where(alpha[..., None] > 0, np.array(color, np.uint8), np.array(hidden, np.uint8))
    out[..., 3] = np.rint(alpha * 255).astype(np.uint8)
    return out


def gray16(width: int = 96, height: int = 64) -> np.ndarray:
    """A uint16 (h, w) ramp over the whole 0..65535 range, left to right, with a vertical tint."""
    u = np.linspace(0.0, 1.0, width)[None, :]
    v = np.linspace(0.0, 0.2, height)[:, None]
    return np.rint(np.clip(u * (1.0 - v) + v * 0.5, 0, 1) * 65535).astype(np.uint16)


def to_mode(rgb: np.ndarray, mode: str) -> Image.Image:
    """``rgb`` (uint8 h, w, 3) as a Pillow image of ``mode``, with full-range deep samples.

    Pillow's own ``convert`` would squeeze I;16/I into 0..255; here a 16-bit
    sample v stands for v/65535 and a float one for v/1.0, as files hold them.
    """
    if mode in _DEEP_DTYPES:
        gray = np.asarray(Image.fromarray(rgb).convert("L"), np.float64) / 255.0
        deep = gray if mode == "F" else np.rint(gray * 65535)
        data = deep.astype(_DEEP_DTYPES[mode])
        return Image.frombytes(mode, (rgb.shape[1], rgb.shape[0]), data.tobytes())
    im = Image.fromarray(rgb)
    if mode in ("LA", "PA", "RGBA", "RGBa", "La"):
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        alpha[: rgb.shape[0] // 3, : rgb.shape[1] // 3] = 0  # a transparent corner
        alpha[rgb.shape[0] // 3 :, : rgb.shape[1] // 3] = 128  # and a half-transparent band
        if mode == "PA":
            pa = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).convert("PA")
            pa.putalpha(Image.fromarray(alpha))
            return pa
        rgba = Image.fromarray(np.dstack([rgb, alpha]))
        # Pillow's RGBA -> La drops the alpha; through LA it keeps it.
        return rgba.convert("LA").convert("La") if mode == "La" else rgba.convert(mode)
    if mode == "P":
        return im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    return im.convert(mode)


_DEEP_DTYPES = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4", "F": "=f4"}


def animation(width: int = 48, height: int = 32, frames: int = 3) -> list[Image.Image]:
    """Animation frames, each a flat colour of its own: red, green, blue, yellow, red, ..."""
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    out = []
    for i in range(frames):
        a = np.empty((height, width, 3), np.uint8)
        a[:] = colors[i % len(colors)]
        out.append(Image.fromarray(a))
    return out


# --- EXIF and XMP -----------------------------------------------------------

# How to store an upright picture so that EXIF orientation n shows it upright
# again (the inverse of what a viewer applies).  Written from the EXIF
# definitions, independently of Pillow's table.
_STORE_FOR_ORIENTATION = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # viewer mirrors left-right
    3: lambda a: a[::-1, ::-1],  # viewer rotates 180
    4: lambda a: a[::-1, :],  # viewer mirrors top-bottom
    5: lambda a: a.swapaxes(0, 1),  # viewer transposes (main diagonal)
    6: lambda a: np.rot90(a, 1),  # viewer rotates 90 clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # viewer transverses (anti-diagonal)
    8: lambda a: np.rot90(a, -1),  # viewer rotates 90 anticlockwise
}


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for ``upright`` when it tags them with ``orientation``."""
    return np.ascontiguousarray(_STORE_FOR_ORIENTATION[orientation](upright))


def exif_bytes(orientation: int | None = None, gps: bool = False) -> bytes:
    """An EXIF block with a camera make and model, the orientation tag, and a GPS position."""
    exif = Image.Exif()
    exif[0x010F] = "imgtool-test-camera"  # Make
    exif[0x0110] = "Model 1"  # Model
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        gps_ifd = exif.get_ifd(0x8825)
        gps_ifd[1] = "N"  # GPSLatitudeRef
        gps_ifd[2] = (48.0, 51.0, 29.0)  # GPSLatitude: Paris
        gps_ifd[3] = "E"
        gps_ifd[4] = (2.0, 17.0, 40.0)
    return exif.tobytes()


XMP_WITH_GPS = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.48N"'
    ' exif:GPSLongitude="2,17.67E"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


def webp_chunks(data: bytes) -> list[bytes]:
    """The RIFF chunk names of a WebP file (b'VP8X', b'ICCP', b'EXIF', b'XMP ', ...)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", "not a WebP file"
    names, pos = [], 12
    while pos + 8 <= len(data):
        name, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        names.append(name)
        pos += 8 + size + (size & 1)
    return names


# --- colour science (numpy, D65 unless said) ----------------------------------

SRGB_PRIMARIES = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
ADOBE_RGB_PRIMARIES = ((0.640, 0.330), (0.210, 0.710), (0.150, 0.060))
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
D65 = (0.3127, 0.3290)
D50_XYZ = np.array([0.9642, 1.0, 0.8249])  # the ICC profile connection space white
ADOBE_RGB_GAMMA = 563 / 256  # 2.19921875, as the Adobe RGB (1998) spec rounds it
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """The sRGB transfer function's inverse, for values in 0..1."""
    v = np.asarray(v, np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """The sRGB transfer function: linear light 0..1 (clipped) to encoded 0..1."""
    v = np.clip(np.asarray(v, np.float64), 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def _xyz(xy) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz_matrix(primaries, white=D65) -> np.ndarray:
    """The 3x3 matrix from linear RGB to XYZ (white Y = 1) for these primaries."""
    m = np.stack([_xyz(p) for p in primaries], axis=1)
    scale = np.linalg.solve(m, _xyz(white))
    return m * scale


def adapt_to_d50(white=D65) -> np.ndarray:
    """Bradford chromatic adaptation from ``white`` to the ICC D50 white."""
    src, dst = _BRADFORD @ _xyz(white), _BRADFORD @ D50_XYZ
    return np.linalg.inv(_BRADFORD) @ np.diag(dst / src) @ _BRADFORD


def srgb_to_space(rgb8: np.ndarray, primaries, encode) -> np.ndarray:
    """uint8 sRGB pixels re-expressed (same colours) in another D65 RGB space, as uint8.

    ``encode`` is that space's transfer function (linear 0..1 -> encoded 0..1).
    """
    lin = srgb_to_linear(rgb8 / 255.0)
    m = np.linalg.inv(rgb_to_xyz_matrix(primaries)) @ rgb_to_xyz_matrix(SRGB_PRIMARIES)
    out = np.clip(lin @ m.T, 0.0, 1.0)
    return np.rint(encode(out) * 255).astype(np.uint8)


def adobe_encode(lin: np.ndarray) -> np.ndarray:
    """Adobe RGB's transfer function: linear light 0..1 to encoded 0..1."""
    return np.clip(lin, 0, 1) ** (1 / ADOBE_RGB_GAMMA)


def srgb_to_lab(rgb8: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65 white) of uint8 sRGB pixels."""
    xyz = srgb_to_linear(np.asarray(rgb8)[..., :3] / 255.0) @ rgb_to_xyz_matrix(SRGB_PRIMARIES).T
    t = xyz / _xyz(D65)
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference, per pixel, between two uint8 sRGB images (alpha ignored)."""
    return np.linalg.norm(srgb_to_lab(a) - srgb_to_lab(b), axis=-1)


def srgb_to_cmyk_plain(rgb8: np.ndarray) -> np.ndarray:
    """uint8 CMYK whose plain (profile-less) reading, R = (255-C)(255-K)/255, gives back ``rgb8``."""
    rgb = rgb8.astype(np.float64)
    k = 255 - rgb.max(axis=-1)
    scale = np.where(k < 255, 255 / np.maximum(255 - k, 1e-9), 0)
    cmy = 255 - rgb * scale[..., None]
    return np.rint(np.dstack([cmy, k])).clip(0, 255).astype(np.uint8)


def cmyk_plain_to_srgb(cmyk8: np.ndarray) -> np.ndarray:
    """What browsers show for bare (untagged) CMYK: R = (255-C)(255-K)/255."""
    c = cmyk8.astype(np.float64)
    return np.rint((255 - c[..., :3]) * (255 - c[..., 3:4]) / 255).astype(np.uint8)


# A press-like ink model for the test CMYK profile: in linear light, each ink
# absorbs a fraction of each primary (cyan also dims green a little, ...), and
# black absorbs everything.  Multilinear in C, M, Y, K; 100% K is black.
_INK_ABSORPTION = np.array(
    [  # R     G     B     (fraction absorbed at 100% ink)
        [0.97, 0.25, 0.05],  # cyan
        [0.10, 0.95, 0.30],  # magenta
        [0.02, 0.10, 0.93],  # yellow
        [1.00, 1.00, 1.00],  # black
    ]
)


def cmyk_model_to_linear(cmyk: np.ndarray) -> np.ndarray:
    """Linear-light sRGB (0..1) of ink amounts ``cmyk`` (0..1, last axis 4) under the ink model."""
    cmyk = np.asarray(cmyk, np.float64)
    out = np.ones(cmyk.shape[:-1] + (3,))
    for i in range(4):
        out = out * (1 - cmyk[..., i : i + 1] * _INK_ABSORPTION[i])
    return out


def cmyk_model_to_srgb(cmyk8: np.ndarray) -> np.ndarray:
    """uint8 sRGB truth of uint8 CMYK under the ink model that :func:`cmyk_profile` encodes."""
    return np.rint(linear_to_srgb(cmyk_model_to_linear(cmyk8 / 255.0)) * 255).astype(np.uint8)


# --- ICC profiles, built byte by byte (ICC.1:2001-04, version 2.1) -------------


def _s15(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(c) for c in xyz)


def _desc_tag(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return (
        b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_
        + b"\0" * 8  # no Unicode description
        + b"\0" * 3 + b"\0" * 67  # no ScriptCode description
    )


def _text_tag(text: str) -> bytes:
    return b"text" + b"\0" * 4 + text.encode("ascii") + b"\0"


def _curv_gamma(gamma: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, int(round(gamma * 256))) + b"\0\0"


def _curv_table(fn, n: int = 1024) -> bytes:
    table = np.rint(np.clip(fn(np.linspace(0, 1, n)), 0, 1) * 65535).astype(">u2")
    return b"curv" + b"\0" * 4 + struct.pack(">I", n) + table.tobytes()


def _profile(device_class: bytes, space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """A whole ICC profile: 128-byte header, tag table, tag data (each 4-byte aligned)."""
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, blobs = [], []
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        entries.append(struct.pack(">4sII", sig, offset, len(data)))
        blobs.append(data)
        offset += len(data)
    body = struct.pack(">I", len(tags)) + b"".join(entries) + b"".join(blobs)
    size = 128 + len(body)
    header = (
        struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000)
        + device_class + space + b"XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 4 + b"\0" * 4 + b"\0" * 8
        + struct.pack(">I", 0)  # perceptual
        + b"".join(_s15(c) for c in D50_XYZ) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    )
    assert len(header) == 128
    return header + body


def matrix_profile(name: str, primaries, trc: bytes, white=D65) -> bytes:
    """An RGB display profile (matrix/TRC), its colorants adapted to D50 as ICC requires."""
    m = adapt_to_d50(white) @ rgb_to_xyz_matrix(primaries, white)
    tags = [(b"desc", _desc_tag(name)), (b"cprt", _text_tag("No copyright, test data")),
            (b"wtpt", _xyz_tag(D50_XYZ))]
    tags += [(sig, _xyz_tag(m[:, i])) for i, sig in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))]
    tags += [(sig, trc) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    return _profile(b"mntr", b"RGB ", tags)


def adobe_rgb_profile() -> bytes:
    """Adobe RGB (1998): wider greens than sRGB, pure gamma 563/256."""
    return matrix_profile("Test Adobe RGB (1998)", ADOBE_RGB_PRIMARIES, _curv_gamma(ADOBE_RGB_GAMMA))


def display_p3_profile() -> bytes:
    """Display P3: DCI-P3 primaries, D65, the sRGB transfer curve (what iPhones embed)."""
    return matrix_profile("Test Display P3", P3_PRIMARIES, _curv_table(srgb_to_linear))


def srgb_profile() -> bytes:
    """lcms's built-in sRGB profile, as bytes."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gray_profile(gamma: float = 1.8) -> bytes:
    """A gray display profile with a pure-gamma tone curve (old Mac 'Gray Gamma 1.8')."""
    tags = [(b"desc", _desc_tag(f"Test Gray Gamma {gamma}")), (b"cprt", _text_tag("none")),
            (b"wtpt", _xyz_tag(D50_XYZ)), (b"kTRC", _curv_gamma(gamma))]
    return _profile(b"mntr", b"GRAY", tags)


def cmyk_profile(grid: int = 9) -> bytes:
    """A CMYK output profile whose A2B0 table (lut16, XYZ PCS) samples the ink model above."""
    levels = np.linspace(0.0, 1.0, grid)
    cmyk = np.stack(np.meshgrid(levels, levels, levels, levels, indexing="ij"), axis=-1)
    lin = cmyk_model_to_linear(cmyk)
    xyz = lin @ (adapt_to_d50() @ rgb_to_xyz_matrix(SRGB_PRIMARIES)).T
    clut = np.rint(np.clip(xyz * 32768, 0, 65535)).astype(">u2")  # u1Fixed15 XYZ
    identity_curve = np.array([0, 65535], ">u2").tobytes()
    lut = (
        b"mft2" + b"\0" * 4 + struct.pack(">BBBx", 4, 3, grid)
        + b"".join(_s15(v) for v in np.eye(3).ravel())
        + struct.pack(">HH", 2, 2)
        + identity_curve * 4 + clut.tobytes() + identity_curve * 3
    )
    tags = [(b"desc", _desc_tag("Test CMYK ink model")), (b"cprt", _text_tag("none")),
            (b"wtpt", _xyz_tag(D50_XYZ)), (b"A2B0", lut)]
    return _profile(b"prtr", b"CMYK", tags)


# --- files by hand (what Pillow will not write) -----------------------------------


def png_bytes(pixels: np.ndarray, bit_depth: int = 8, size: tuple[int, int] | None = None,
              sbit: tuple[int, ...] | None = None, filtered: bool = False) -> bytes:
    """A PNG of uint8/uint16 gray, RGB or RGBA ``pixels``; ``size`` overrides the header's claim.

    With ``size`` the IHDR claims (width, height) whatever the data holds: a
    decompression-bomb header over a few bytes of image data.  ``sbit``: an
    sBIT chunk (significant bits per channel).  ``filtered``: the rows take
    the Sub, Up, Average and Paeth filters in turn (else None), as encoders do.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    h, w, c = pixels.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    dtype = ">u2" if bit_depth == 16 else np.uint8
    rows = [row.astype(dtype).tobytes() for row in pixels]
    if filtered:
        raw = _png_filtered(rows, c * (2 if bit_depth == 16 else 1))
    else:
        raw = b"".join(b"\0" + row for row in rows)
    cw, ch = size or (w, h)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", cw, ch, bit_depth, color_type, 0, 0, 0)
    extra = chunk(b"sBIT", bytes(sbit)) if sbit else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _png_filtered(rows: list[bytes], bpp: int) -> bytes:
    """The PNG filters 1-4 (one per row in turn), written from the specification's definitions."""
    out = bytearray()
    prev = bytes(len(rows[0]))
    for i, row in enumerate(rows):
        kind = 1 + i % 4
        line = bytearray(len(row))
        for x in range(len(row)):
            a = row[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[x] = (row[x] - pred) % 256
        out += bytes([kind]) + line
        prev = row
    return bytes(out)


def tiff16_bytes(pixels: np.ndarray, size: tuple[int, int] | None = None, max_sample: int | None = None,
                 deflate: bool = False) -> bytes:
    """An uncompressed little-endian TIFF of uint16 gray, RGB or RGBA (unassociated alpha) ``pixels``.

    ``size`` overrides the (width, height) the header claims, as in :func:`png_bytes`;
    ``max_sample`` writes a MaxSampleValue tag; ``deflate`` compresses the strip (Adobe deflate).
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    h, w, c = pixels.shape
    data = pixels.astype("<u2").tobytes()
    if deflate:
        data = zlib.compress(data)
    w, h = size or (w, h)
    entries = [
        (256, 4, 1, w), (257, 4, 1, h), (258, 3, c, None), (259, 3, 1, 8 if deflate else 1),
        (262, 3, 1, 2 if c >= 3 else 1),
        (273, 4, 1, None), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)),
        (284, 3, 1, 1),
    ] + ([(281, 3, 1, max_sample)] if max_sample is not None else []) + ([(338, 3, 1, 2)] if c in (2, 4) else [])
    entries.sort()
    ifd_size = 2 + 12 * len(entries) + 4
    bits_at = 8 + ifd_size
    data_at = bits_at + 2 * c
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            value = bits_at if c > 2 else (16 if c == 1 else 16 | (16 << 16))
        if tag == 273:
            value = data_at
        out += struct.pack("<HHII", tag, typ, count, value) if typ == 4 or tag == 258 else struct.pack(
            "<HHIHH", tag, typ, count, value, 0
        )
    out += struct.pack("<I", 0) + struct.pack(f"<{c}H", *([16] * c))
    return out + data


def webp_tiff_bytes(rgb: np.ndarray) -> bytes:
    """A TIFF whose one strip is WebP-compressed (Compression 50001), as libtiff writes it: a lossless WebP per strip."""
    h, w, _ = rgb.shape
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "WEBP", lossless=True)
    strip = buf.getvalue()
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, None), (259, 3, 1, 50001), (262, 3, 1, 2),
               (273, 4, 1, None), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, len(strip)), (284, 3, 1, 1)]
    bits_at = 8 + 2 + 12 * len(entries) + 4
    data_at = bits_at + 6
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        value = {258: bits_at, 273: data_at}.get(tag, value)
        out += (struct.pack("<HHII", tag, typ, count, value) if typ == 4 or tag == 258
                else struct.pack("<HHIHH", tag, typ, count, value, 0))
    return out + struct.pack("<I", 0) + struct.pack("<3H", 8, 8, 8) + strip


def heic_bytes(rgb: np.ndarray, tile_size: int | None = None, quality: int = 90) -> bytes:
    """A HEIC written by pillow-heif; ``tile_size`` makes it a grid of tiles, as phones write them."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    params = {"quality": quality}
    if tile_size:
        params["tile_size"] = tile_size
    Image.fromarray(rgb).save(buf, "HEIF", **params)
    return buf.getvalue()


def save(im: Image.Image | np.ndarray, fmt: str, **params) -> bytes:
    """``im`` encoded by Pillow as ``fmt`` (with pillow-heif's HEIF encoder registered)."""
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>\n'

PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)

TEXT = b"This is not an image, whatever its name says.\n" * 4
