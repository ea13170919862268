"""AVIF encoding through Pillow's AVIF plugin (libavif): no metadata, sRGB, alpha kept.

``--format avif`` writes the same derivatives as WebP, at the same quality
numbers: ``avif_quality`` maps a WebP quality (what the options and job
options say, 0-100) of an operation's output to the AVIF quality whose files
are as good by mean SSIM on the corpus photos and smaller (bench/RESULTS.md, "AVIF quality
mapping"; ``python -m bench.avif_mapping``).  ``speed`` is libavif's 0
(slowest, smallest) to 10 (fastest); ``DEFAULT_SPEED`` comes from the
speed/size table (``python -m bench.avif_speed``).

What is written: libaom's AV1 tuned for SSIM, 4:2:0 YUV (4:4:4 from quality 95
up, where chroma detail is what is asked for), full range, the colour signalled as nclx sRGB (BT.709
primaries, sRGB transfer) and no ICC profile, no Exif, no XMP; RGBA keeps its
alpha plane.  One encoder thread by default: the pipeline runs one encode per
worker already.
"""

from __future__ import annotations

import io

from PIL import Image, features

from .ops.settings import DEFAULT_AVIF_SPEED as DEFAULT_SPEED
from .ops.settings import MAX_AVIF_SPEED as MAX_SPEED
from .ops.settings import MIN_AVIF_SPEED as MIN_SPEED
# (WebP quality, AVIF quality) anchors per operation, linear between them.
# Measured at speed 8 on the corpus photos (python -m bench.avif_mapping): for
# each WebP quality, the lowest AVIF quality whose mean SSIM over the photos'
# derivative (thumbnail, blur, low-quality) reaches WebP's.  Another operation
# takes the highest of the three at each point.  0 and 100 are the ends, not
# measurements.
QUALITY_ANCHORS = {
    "thumbnail": ((0, 0), (30, 41), (50, 49), (80, 65), (90, 82), (100, 100)),
    "blur": ((0, 0), (30, 35), (50, 39), (80, 52), (90, 70), (100, 100)),
    "low-quality": ((0, 0), (30, 43), (50, 51), (80, 66), (90, 84), (100, 100)),
}
DEFAULT_ANCHORS = tuple((q, max(dict(a)[q] for a in QUALITY_ANCHORS.values()))
                        for q, _ in QUALITY_ANCHORS["thumbnail"])
FULL_CHROMA_FROM = 95  # AVIF quality from which chroma is not subsampled
# libaom tuned for SSIM instead of PSNR: at speed 8 on the corpus its files are
# 20-25% smaller at the same SSIM, without it larger than WebP's on the
# low-quality derivative (bench/RESULTS.md).
AOM_OPTIONS = (("tune", "ssim"),)


def available() -> bool:
    """Whether this Pillow was built with libavif (an encoder)."""
    return bool(features.check("avif"))


def avif_quality(webp_quality: int, operation: str | None = None) -> int:
    """The AVIF quality for a WebP quality (0-100) of ``operation``'s output, linear between its anchors."""
    if isinstance(webp_quality, bool) or not isinstance(webp_quality, int) or not 0 <= webp_quality <= 100:
        raise ValueError(f"quality must be an integer from 0 to 100, not {webp_quality!r}")
    anchors = QUALITY_ANCHORS.get(operation, DEFAULT_ANCHORS)
    for (q0, a0), (q1, a1) in zip(anchors, anchors[1:]):
        if webp_quality <= q1:
            return round(a0 + (a1 - a0) * (webp_quality - q0) / (q1 - q0))
    return anchors[-1][1]


def encode_avif(image, quality: int, speed: int = DEFAULT_SPEED, *, threads: int = 1) -> bytes:
    """The AVIF file of an RGB or RGBA image (a PIL image, or anything with ``to_image()``).

    ``quality`` is AVIF's own (0-100: map a WebP quality with ``avif_quality``).
    """
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        raise ValueError(f"AVIF quality must be an integer from 0 to 100, not {quality!r}")
    if isinstance(speed, bool) or not isinstance(speed, int) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"AVIF speed must be an integer from {MIN_SPEED} to {MAX_SPEED}, not {speed!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    im = image if isinstance(image, Image.Image) else image.to_image()
    if im.mode not in ("RGB", "RGBA"):
        raise ValueError(f"AVIF encodes RGB or RGBA images, not {im.mode}")
    if not available():
        raise RuntimeError("this Pillow has no AVIF encoder (libavif)")
    out = io.BytesIO()
    codec = _codec()
    im.save(
        out, "AVIF", quality=quality, speed=speed, max_threads=threads, codec=codec,
        advanced=AOM_OPTIONS if codec == "aom" else None,
        subsampling="4:4:4" if quality >= FULL_CHROMA_FROM else "4:2:0", range="full",
        icc_profile=None, exif=b"", xmp=None,
    )
    return out.getvalue()


def _codec() -> str:
    """libaom where this libavif has it (the options and the mapping are measured with it), else its choice."""
    try:
        from PIL import _avif

        return "aom" if _avif.encoder_codec_available("aom") else "auto"
    except (ImportError, AttributeError):
        return "auto"
