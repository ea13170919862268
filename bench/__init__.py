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


def half_size(w: int, h: int) -> tuple[int, int]:
    return max(1, w // 2), max(1, h // 2)
