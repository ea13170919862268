"""Make examples/sample.jpg, the photo-like image the README's first command processes.

Run from the repository root: python examples/make_sample.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def sample(width: int = 1600, height: int = 1067, seed: int = 7) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack([90 + 80 * y / height, 140 + 60 * y / height, 230 - 40 * y / height], -1)
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # Hills, a sun and a few trees: smooth areas, hard edges and fine detail.
    for i, colour in enumerate([(70, 120, 60), (50, 95, 45), (35, 70, 35)]):
        base = height * (0.55 + 0.12 * i)
        pts = [(0, height)] + [
            (px, base - 60 * np.sin(px / width * np.pi * (2 + i) + i)) for px in range(0, width + 20, 20)
        ] + [(width, height)]
        draw.polygon(pts, fill=colour)
    draw.ellipse([width * 0.7, height * 0.1, width * 0.8, height * 0.1 + width * 0.1], fill=(255, 230, 150))
    for _ in range(40):
        tx, ty = rng.uniform(0, width), rng.uniform(height * 0.6, height)
        s = rng.uniform(10, 40)
        draw.polygon([(tx, ty - 3 * s), (tx - s, ty), (tx + s, ty)], fill=(20, 60 + int(s), 25))
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    noise = rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "sample.jpg"
    sample().save(out, quality=88)
    print(out)
