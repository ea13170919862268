"""Corpora: the generated photo-like default, tiny images for the RSS test, listing and balancing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import IMAGE_SUFFIXES

# Bump when the generator changes, so cached corpora are made again.
GENERATOR_VERSION = 1

# (width, height, count): photo-like images of about 0.3, 2 and 12 megapixels.
DEFAULT_MIX = ((640, 480, 6), (1632, 1224, 3), (4000, 3000, 2))
# The first image of this size is stored sideways with EXIF orientation 6, so
# that every contestant has to apply the orientation to match the others.
ROTATED_SIZE = (1632, 1224)


def photo_like(w: int, h: int, seed: int) -> Image.Image:
    """An RGB image that codecs find about as hard as a photo.

    Smooth colour gradients, hard-edged shapes softened like a lens would,
    mid-scale texture and sensor-like noise: WebP at quality 80 spends about
    as much time per pixel on it as on the photos in shared/corpus.
    """
    rng = np.random.default_rng(seed)

    def smooth(cells: int, size=(w, h)) -> np.ndarray:
        cw = max(2, cells)
        ch = max(2, round(cells * h / w))
        small = rng.integers(0, 256, (ch, cw, 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), np.int16)

    img = smooth(6) // 2 + smooth(40) // 3 + smooth(max(2, w // 24)) // 6
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        rw, rh = int(rng.integers(w // 40 + 1, w // 4 + 2)), int(rng.integers(h // 40 + 1, h // 4 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + rw, y0 + rh), fill=colour)
        else:
            draw.polygon([(x0, y0), (x0 + rw, y0 + rh // 3), (x0 + rw // 2, y0 + rh)], fill=colour)
    canvas = canvas.filter(ImageFilter.GaussianBlur(1.2))
    noise = np.stack(
        [np.asarray(Image.effect_noise((w, h), 9), np.int16) - 128 for _ in range(3)], axis=2
    )
    out = np.asarray(canvas, np.int16) + noise
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def default_corpus(cache: Path) -> Path:
    """The generated corpus (cached under ``cache``); made on first use."""
    key = hashlib.sha1(repr((GENERATOR_VERSION, DEFAULT_MIX)).encode()).hexdigest()[:10]
    folder = cache / f"corpus-{key}"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    seed = 0
    for w, h, count in DEFAULT_MIX:
        for i in range(count):
            seed += 1
            img = photo_like(w, h, seed)
            exif = Image.Exif()
            if (w, h) == ROTATED_SIZE and i == 0:
                # Stored rotated 90 degrees clockwise; orientation 6 turns it back.
                img = img.transpose(Image.Transpose.ROTATE_90)
                exif[0x0112] = 6
            name = f"photo-{w * h / 1e6:.1f}mp-{i:02d}.jpg"
            img.save(folder / name, "JPEG", quality=90, exif=exif.tobytes())
    (folder / ".complete").write_text("")
    return folder


def small_corpus(cache: Path, count: int, size=(96, 64)) -> Path:
    """``count`` tiny JPEGs (crops of one photo-like canvas), 1000 per sub-folder."""
    folder = cache / f"small-{GENERATOR_VERSION}-{count}-{size[0]}x{size[1]}"
    if (folder / ".complete").exists():
        return folder
    canvas = np.asarray(photo_like(1024, 768, 12345))
    rng = np.random.default_rng(7)
    w, h = size
    for i in range(count):
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        x, y = int(rng.integers(0, 1024 - w)), int(rng.integers(0, 768 - h))
        Image.fromarray(canvas[y : y + h, x : x + w]).save(sub / f"s{i:06d}.jpg", quality=85)
    (folder / ".complete").write_text("")
    return folder


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` as imgtool's walk finds them (no hidden, no processed/)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "processed" and not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(root) / name)
    return found


def pixels(path: Path) -> int:
    with Image.open(path) as im:
        return im.size[0] * im.size[1]


def balanced(paths: list[Path], parts: int) -> list[list[Path]]:
    """Split ``paths`` into ``parts`` lists of nearly equal pixel counts (largest first, greedy)."""
    sized = sorted(((pixels(p), p) for p in paths), key=lambda t: (-t[0], str(t[1])))
    bins: list[list[Path]] = [[] for _ in range(parts)]
    load = [0] * parts
    for n, p in sized:
        i = load.index(min(load))
        bins[i].append(p)
        load[i] += n
    return [b for b in bins if b]
