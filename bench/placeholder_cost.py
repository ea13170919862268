"""The placeholders' cost per image: ThumbHash + BlurHash from the thumbnail the pipeline already made.

    python -m bench.placeholder_cost [--corpus DIR] [--limit N] [--repeat 200]

A timing (run it on a quiet machine).  For each photo, its 256-wide thumbnail
(Pillow's Lanczos, reducing_gap 3: the pixels imgtool's thumbnail has) is made
once, outside the timing; then ``of_image`` (what the pipeline calls: the
thumbnail box-reduced to fit 100 x 100 by ``placeholder_source``, and both
strings) is timed, the best of ``--repeat`` calls; also each encoder alone.  The spec's goal: < 1 ms an image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from PIL import Image, ImageOps

from .report import best_of

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "photos"


def main(argv=None) -> int:
    from imgtool.placeholders import blurhash, of_image, placeholder_source, thumbhash

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args(argv)
    rows = []
    for path in sorted(p for p in args.corpus.iterdir() if p.is_file())[: args.limit]:
        with Image.open(path) as src:
            im = ImageOps.exif_transpose(src).convert("RGB")
        w, h = im.size
        thumb = im if w <= 256 else im.resize((256, max(1, round(h * 256 / w))), Image.Resampling.LANCZOS,
                                              reducing_gap=3.0)
        small = placeholder_source(thumb)
        rows.append((path.name, small.shape[1], small.shape[0],
                     best_of(lambda: of_image(im, [thumb]), args.repeat),  # what the pipeline calls
                     best_of(lambda: thumbhash(small), args.repeat), best_of(lambda: blurhash(small), args.repeat)))
    print(f"{len(rows)} photos from {args.corpus}; best of {args.repeat} calls each\n")
    print("| photo | source | source + both, ms | ThumbHash alone, ms | BlurHash alone, ms |")
    print("|---|---|---|---|---|")
    for name, w, h, both, th, bh in rows:
        print(f"| {name} | {w}x{h} | {both * 1e3:.3f} | {th * 1e3:.3f} | {bh * 1e3:.3f} |")
    print(f"\nmedian source + both: {statistics.median(r[3] for r in rows) * 1e3:.3f} ms, "
          f"largest {max(r[3] for r in rows) * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
