"""The direct libwebp encoder writes what Pillow would, and steps aside where it can't."""

import io

import numpy as np
import pytest
from PIL import Image

from imgtool.imageio import libwebp as webp


def _pillow(im, quality):
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=quality, method=4)
    return buf.getvalue()


def test_libwebp_is_found():
    # Pillow's wheels bundle libwebp; on this project's machines it must load.
    assert webp.available()


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("quality", [30, 80])
def test_same_bytes_as_pillow(mode, quality):
    rng = np.random.default_rng(3)
    h, w = 123, 257
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x % 256, y * 2 % 256, (x * y) % 256, np.where(x < 60, 0, 200)], -1).astype(np.uint8)
    a[..., :3] = np.clip(a[..., :3] + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(a if mode == "RGBA" else np.ascontiguousarray(a[..., :3]))
    assert webp.encode_simple(im, quality, 4, False) == _pillow(im, quality)


def test_other_settings_fall_back():
    im = Image.new("RGB", (8, 8))
    assert webp.encode_simple(im, 80, 6, False) is None
    assert webp.encode_simple(im, 80, 4, True) is None
    assert webp.encode_simple(im.convert("L"), 80, 4, False) is None


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (3, 2), (1000, 70), (70, 1000)])
def test_image_bytes_is_tobytes(mode, size):
    from imgtool.pixels import image_bytes

    rng = np.random.default_rng(5)
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8), mode)
    assert image_bytes(im) == im.tobytes()
