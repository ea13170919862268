"""The codec limit, and where a peer's time goes, from per-image timings.

The codec limit is what no CPU pipeline built on these codecs can beat: each
image's single-thread decode time plus its three single-thread WebP encode
times, summed over the corpus and divided by the cores.  Each round measures
it in a process of its own (``python -m bench.limit LIST.json TIMINGS.json``):

- decode: ``Image.open`` + ``load``, Pillow's libjpeg-turbo (what imgtool runs);
- encodes: the three outputs (computed beforehand with Pillow, not timed) given
  to libwebp's simple API (``WebPEncodeRGB``/``RGBA``, the libwebp bundled with
  Pillow; the same bitstream as Pillow's save at effort 4): the codec's own
  time, without the ~10% Pillow's animation-encoder wrapper adds.

Where that libwebp cannot be loaded the encodes go through Pillow's save,
and the report says so.  The sequential Pillow loop's own decode + save
times give the same sum through Pillow, reported beside it.
"""

from __future__ import annotations

import ctypes
import io
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from imgtool.imageio.libwebp import load_libwebp

from . import EFFORT, OPERATIONS, QUALITY


def codec_seconds(timings: list[dict]) -> float:
    """Sum over images of decode + every encode, single thread."""
    return sum(
        t["decode"] + sum(v for k, v in t.items() if k.startswith("encode:")) for t in timings
    )


def codec_limit(timings: list[dict], cores: int) -> float:
    return codec_seconds(timings) / cores


def phases(timings: list[dict]) -> dict[str, float]:
    """Seconds per phase summed over images (keys as the workers name them)."""
    out: dict[str, float] = defaultdict(float)
    for t in timings:
        for k, v in t.items():
            if k not in ("file", "pixels", "encoder"):
                out[k] += v
    return dict(out)


def main(argv: list[str]) -> int:
    from PIL import Image, ImageOps

    from .peers import pillow_derivative

    list_file, timings_file = argv[:2]
    lib = load_libwebp() if EFFORT == 4 else None  # the simple API's method is 4
    timings = []
    for src, _rel in json.loads(Path(list_file).read_text()):
        t: dict = {"file": src, "encoder": "libwebp simple API" if lib else "Pillow save"}
        t0 = time.perf_counter()
        with Image.open(src) as im:
            im.load()
            t["decode"] = time.perf_counter() - t0
            im = ImageOps.exif_transpose(im)
            if im.mode not in ("RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
        for op in OPERATIONS:
            d = pillow_derivative(im, op)
            if lib is not None:
                raw, w, h = d.tobytes(), d.size[0], d.size[1]
                encode = lib.WebPEncodeRGBA if d.mode == "RGBA" else lib.WebPEncodeRGB
                out = ctypes.c_void_p()
                a = time.perf_counter()
                n = encode(raw, w, h, w * len(d.mode), float(QUALITY[op]), ctypes.byref(out))
                t[f"encode:{op}"] = time.perf_counter() - a
                lib.WebPFree(out)
                if not n:
                    raise RuntimeError(f"{src}: libwebp failed on {op}")
            else:
                buf = io.BytesIO()
                a = time.perf_counter()
                d.save(buf, "WEBP", quality=QUALITY[op], method=EFFORT)
                t[f"encode:{op}"] = time.perf_counter() - a
        timings.append(t)
    Path(timings_file).write_text(json.dumps(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
