"""The benchmark harness: imgtool against a Pillow loop and libvips, the codec limit, the GPU.

Run ``python -m bench --help``.  Every contestant makes the same three
derivatives at imgtool's defaults (below; ``__main__`` checks them against
``imgtool.ops`` before it measures anything).
"""

THUMB_WIDTH = 256
QUALITY = {"thumbnail": 80, "blur": 80, "low-quality": 30}
EFFORT = 4
OPERATIONS = ("thumbnail", "blur", "low-quality")

# Input files the peers take from a folder: what imgtool's walk accepts
# among the formats the corpora here hold.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")


def thumb_size(w: int, h: int) -> tuple[int, int]:
    """The thumbnail's size: THUMB_WIDTH wide, never upscaled (imgtool.ops.output_size)."""
    if w <= THUMB_WIDTH:
        return w, h
    return THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))


# The blur every contestant makes: "auto" (a Gaussian of sigma auto_sigma(w, h),
# imgtool's default) or, with ``python -m bench --blur 3x3``, the old worker's
# [1 2 1] kernel (imgtool's default before; its ratios are measured that way).
BLUR = "auto"
BLURS = ("auto", "3x3")
# The Gaussian's kernel reaches 3 sigma (imgtool's radius ceil(3 sigma)): libvips
# and sharp stop a mask where it falls below min_ampl, exp(-4.5) there.
MIN_AMPL = 0.0111


def auto_sigma(w: int, h: int) -> float:
    """--blur-sigma auto: 1.5% of the shorter side, at least 1, at most 50 (the spec's rule)."""
    return min(50.0, max(1.0, 0.015 * min(w, h)))


def half_size(w: int, h: int) -> tuple[int, int]:
    return max(1, w // 2), max(1, h // 2)
