"""AVIF quality mapping: for each WebP quality, the AVIF quality at least as good by SSIM, and the sizes.

    python -m bench.avif_mapping [--corpus DIR] [--limit N] [--webp 30,50,80,90] [--speed 8] [--ops ...]

Not a timing.  For each photo and each derivative imgtool makes (thumbnail
256 wide: Pillow's Lanczos with reducing_gap 3; blur: the box-cascade Gaussian
at sigma auto; low-quality: half size, nearest), the derivative is encoded as
WebP (Pillow, method 4) at each WebP quality and as AVIF (imgtool.avif) at
the AVIF qualities a bisection visits; SSIM (bench.ssim, luma) of each decoded
file against the derivative's pixels.  For each WebP quality and derivative:
the lowest AVIF quality whose mean SSIM over the photos is >= WebP's (equal
SSIM on the corpus: the mapping's anchor), and at that quality the SSIM and
bytes of both, summed over the photos, and the largest per-photo AVIF/WebP
size ratio; and the stricter quality at which every photo's SSIM is >= its
WebP's, with the bytes there.  Prints Markdown.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .ssim import ssim

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "photos"
OPS = ("thumbnail", "blur", "low-quality")


def derivative(im: Image.Image, op: str) -> Image.Image:
    from imgtool.backends.boxblur import auto_sigma
    from imgtool.backends.cpu import boxes_image

    w, h = im.size
    if op == "thumbnail":
        if w <= 256:
            return im
        return im.resize((256, max(1, round(h * 256 / w))), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if op == "blur":
        out = boxes_image(im, auto_sigma(w, h))
        return out if isinstance(out, Image.Image) else out.to_image()
    ow, oh = max(1, w // 2), max(1, h // 2)
    return im.resize((ow, oh), Image.Resampling.NEAREST, box=(0, 0, 2 * ow, 2 * oh))


def webp(im: Image.Image, q: int) -> bytes:
    out = io.BytesIO()
    im.save(out, "WEBP", quality=q, method=4)
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class Photo:
    """One derivative's pixels and the AVIF files made of it so far (quality -> (bytes, SSIM))."""

    def __init__(self, name: str, im: Image.Image, speed: int):
        self.name, self.im, self.speed = name, im, speed
        self.pixels = np.asarray(im)
        self.avif: dict[int, tuple[int, float]] = {}

    def at(self, q: int) -> tuple[int, float]:
        from imgtool.avif import encode_avif

        if q not in self.avif:
            data = encode_avif(self.im, q, self.speed)
            self.avif[q] = (len(data), ssim(self.pixels, decoded(data)))
        return self.avif[q]

    def lowest(self, target: float) -> int:
        """The lowest AVIF quality whose SSIM reaches ``target`` (SSIM rises with quality)."""
        lo, hi = 0, 100
        if self.at(hi)[1] < target:
            return hi
        while lo < hi:
            mid = (lo + hi) // 2
            if self.at(mid)[1] >= target:
                hi = mid
            else:
                lo = mid + 1
        return lo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos")
    ap.add_argument("--webp", default="30,50,80,90", help="WebP qualities to map")
    ap.add_argument("--speed", type=int, default=8, help="AVIF speed (0-10)")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--check-mapping", action="store_true",
                    help="instead of searching, measure imgtool.avif.avif_quality's mapping as it stands")
    args = ap.parse_args(argv)
    if args.check_mapping:
        return check_mapping(args)
    started = time.time()
    qualities = [int(q) for q in args.webp.split(",")]
    ops = args.ops.split(",")
    paths = sorted(p for p in args.corpus.iterdir() if p.is_file())[: args.limit]
    print(f"{len(paths)} photos from {args.corpus}; AVIF speed {args.speed}, 1 thread; WebP method 4\n")
    print("| derivative | WebP q | AVIF q: equal mean SSIM (every photo) | SSIM WebP / AVIF (mean) "
          "| bytes WebP / AVIF (sum) | AVIF / WebP bytes: sum, largest photo | at the every-photo q: sum |")
    print("|---|---|---|---|---|---|---|")
    for op in ops:
        photos = []
        for path in paths:
            with Image.open(path) as src:
                im = ImageOps.exif_transpose(src).convert("RGB")
            photos.append(Photo(path.name, derivative(im, op), args.speed))
        for q in qualities:
            webps = []
            for p in photos:
                data = webp(p.im, q)
                webps.append((len(data), ssim(p.pixels, decoded(data))))
            every = max(p.lowest(s) for p, (_, s) in zip(photos, webps))
            ws = float(np.mean([s for _, s in webps]))
            # The lowest quality whose mean SSIM reaches WebP's (it rises with quality; bisect).
            lo, hi = 0, every
            while lo < hi:
                mid = (lo + hi) // 2
                if np.mean([p.at(mid)[1] for p in photos]) >= ws:
                    hi = mid
                else:
                    lo = mid + 1
            anchor = lo
            avifs = [p.at(anchor) for p in photos]
            wb, ab = sum(b for b, _ in webps), sum(b for b, _ in avifs)
            as_ = float(np.mean([s for _, s in avifs]))
            worst = max(a / w for (a, _), (w, _) in zip(avifs, webps))
            eb = sum(p.at(every)[0] for p in photos)
            print(f"| {op} | {q} | {anchor} ({every}) | {ws:.4f} / {as_:.4f} | {wb} / {ab} | {ab / wb:.2f}, "
                  f"{worst:.2f} | {eb / wb:.2f} |", flush=True)
            print(f"  {op} q{q}: per photo lowest " + ", ".join(f"{p.name} {p.lowest(s)}"
                  for p, (_, s) in zip(photos, webps)), file=sys.stderr)
    print(f"\n{time.time() - started:.0f} s")
    return 0


def check_mapping(args) -> int:
    """WebP at each quality against AVIF at avif_quality(quality): SSIM and bytes, per derivative."""
    from imgtool.avif import avif_quality

    started = time.time()
    qualities = [int(q) for q in args.webp.split(",")]
    paths = sorted(p for p in args.corpus.iterdir() if p.is_file())[: args.limit]
    print(f"{len(paths)} photos from {args.corpus}; AVIF speed {args.speed}, 1 thread; WebP method 4; "
          f"AVIF at imgtool.avif.avif_quality(WebP q, derivative)\n")
    print("| derivative | WebP q | AVIF q | SSIM WebP / AVIF (mean) | photos with AVIF's SSIM below WebP's "
          "| bytes WebP / AVIF (sum) | AVIF / WebP bytes |")
    print("|---|---|---|---|---|---|---|")
    for op in args.ops.split(","):
        photos = []
        for path in paths:
            with Image.open(path) as src:
                im = ImageOps.exif_transpose(src).convert("RGB")
            photos.append(Photo(path.name, derivative(im, op), args.speed))
        for q in qualities:
            aq = avif_quality(q, op)
            webps = []
            for p in photos:
                data = webp(p.im, q)
                webps.append((len(data), ssim(p.pixels, decoded(data))))
            avifs = [p.at(aq) for p in photos]
            below = sum(a[1] < w[1] for a, w in zip(avifs, webps))
            wb, ab = sum(b for b, _ in webps), sum(b for b, _ in avifs)
            print(f"| {op} | {q} | {aq} | {np.mean([s for _, s in webps]):.4f} / {np.mean([s for _, s in avifs]):.4f} "
                  f"| {below} of {len(photos)} | {wb} / {ab} | {ab / wb:.2f} |", flush=True)
    print(f"\n{time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
