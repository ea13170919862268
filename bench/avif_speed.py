"""AVIF's speed/size table: encode time and bytes over the corpus for each libavif speed 0-10.

    python -m bench.avif_speed [--corpus DIR] [--limit N] [--speeds 0,1,...,10] [--rounds 1]

A timing: run it on a quiet machine.  Each photo's three derivatives
(bench.avif_mapping.derivative: thumbnail 256 wide, blur at sigma auto,
low-quality) are made once; then, for each speed, every derivative is
encoded by imgtool.avif.encode_avif (one thread) at its operation's default
quality mapped by avif_quality (80 -> thumbnail and blur, 30 -> low-quality),
the best of ``--rounds`` times per file kept.  Prints a Markdown table:
seconds and bytes per derivative summed over the photos, the mean SSIM
(bench.ssim) of the blur-free derivatives, and each speed's time and bytes
relative to the fastest.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .avif_mapping import DEFAULT_CORPUS, OPS, derivative
from .ssim import ssim

DEFAULT_QUALITY = {"thumbnail": 80, "blur": 80, "low-quality": 30}


def main(argv=None) -> int:
    from imgtool.avif import avif_quality, encode_avif

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos")
    ap.add_argument("--speeds", default=",".join(str(s) for s in range(11)))
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    paths = sorted(p for p in args.corpus.iterdir() if p.is_file())[: args.limit]
    items = []
    for path in paths:
        with Image.open(path) as src:
            im = ImageOps.exif_transpose(src).convert("RGB")
        for op in OPS:
            d = derivative(im, op)
            items.append((op, d, np.asarray(d), avif_quality(DEFAULT_QUALITY[op], op)))
    encode_avif(items[0][1], items[0][3], 10)  # the codec's first-call set-up, outside the timings
    rows = []
    for speed in [int(s) for s in args.speeds.split(",")]:
        secs = {op: 0.0 for op in OPS}
        size = {op: 0 for op in OPS}
        quality = []
        for op, im, pixels, q in items:
            best = float("inf")
            for _ in range(args.rounds):
                t = time.perf_counter()
                data = encode_avif(im, q, speed)
                best = min(best, time.perf_counter() - t)
            secs[op] += best
            size[op] += len(data)
            if op != "blur":
                with Image.open(io.BytesIO(data)) as dec:
                    quality.append(ssim(pixels, np.asarray(dec.convert("RGB"))))
        rows.append((speed, secs, size, float(np.mean(quality))))
        print(f"  speed {speed}: {sum(secs.values()):.2f} s, {sum(size.values())} bytes", file=sys.stderr, flush=True)
    fastest_t = min(sum(r[1].values()) for r in rows)
    fastest_b = max(sum(r[2].values()) for r in rows)
    print(f"{len(paths)} photos from {args.corpus}, 3 derivatives each; best of {args.rounds}; one encoder thread\n")
    print("| speed | seconds: thumbnail / blur / low-quality | total s | bytes: thumbnail / blur / low-quality "
          "| total bytes | SSIM (thumbnail, low-quality) | time, bytes vs fastest / largest |")
    print("|---|---|---|---|---|---|---|")
    for speed, secs, size, q in rows:
        t, b = sum(secs.values()), sum(size.values())
        print(f"| {speed} | {' / '.join(f'{secs[o]:.2f}' for o in OPS)} | {t:.2f} | "
              f"{' / '.join(str(size[o]) for o in OPS)} | {b} | {q:.4f} | {t / fastest_t:.2f}x, {b / fastest_b:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
