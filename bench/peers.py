"""The peers: what users run today, as one worker process over a list of files.

    python -m bench.peers pillow|vips LIST.json OUT_DIR [TIMINGS.json] [--blur 3x3|auto]

LIST.json holds [[input, relative output folder], ...].  Each worker makes the
three derivatives at imgtool's defaults and writes
``OUT_DIR/<rel>/<stem>_<operation>.webp``, and (when asked) per-image phase
timings: the sequential Pillow run's decode and encode times are the codec limit.

What each peer does, and how it matches imgtool:
- pillow: ``Image.open`` + ``load`` (libjpeg-turbo), ``ImageOps.exif_transpose``,
  ``convert`` only when the mode is not RGB/RGBA; thumbnail ``resize(LANCZOS)``;
  blur ``filter(Kernel((3,3), [1,2,1,2,4,2,1,2,1], 16))`` (Pillow copies the
  1-pixel border unfiltered, imgtool clamps to the edge there: only that ring
  differs); low-quality ``resize(NEAREST)`` (the same pixels as imgtool);
  ``save(WEBP, quality, method)``, which writes no metadata unless asked.
- vips: ``new_from_file`` (random access) + ``autorot`` + ``copy_memory`` (decode
  once; the three outputs are then computed from memory); thumbnail
  ``resize(kernel=lanczos3)`` with libvips' default gap (a box shrink to within
  2x, then Lanczos-3: 48-50 dB PSNR against Pillow's Lanczos on the photos);
  blur ``conv`` with the same integer mask (``precision=integer``, edges
  copied): exactly imgtool's pixels; low-quality ``resize(kernel=nearest)``:
  exactly imgtool's pixels; ``webpsave_buffer(Q, effort, keep=none)``.
  The operation cache is off (it would only hold memory across images).
  The harness sets VIPS_CONCURRENCY=1 when it runs N vips processes.
- ``--blur auto``: the Gaussian of sigma ``auto_sigma(w, h)`` (1.5% of the
  shorter side) instead of the 3x3 kernel: Pillow ``filter(GaussianBlur(sigma))``
  (its argument is the standard deviation; three box passes in 8 bits, edges
  repeated each pass), libvips ``gaussblur(sigma, min_ampl=MIN_AMPL,
  precision=integer)`` (an integer mask to 3 sigma, like imgtool's radius, edges
  copied; O(sigma) a pixel).  sharp (bench/sharp/peer.js) does what the vips
  peer does through sharp's own API.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

from . import BLUR, BLURS, EFFORT, MIN_AMPL, OPERATIONS, QUALITY, auto_sigma, half_size, thumb_size

now = time.perf_counter


def pillow_derivative(im, op, blur: str = BLUR):
    """One derivative of an upright RGB/RGBA PIL image, as the Pillow peer makes it."""
    from PIL import Image, ImageFilter

    w, h = im.size
    if op == "thumbnail":
        size = thumb_size(w, h)
        return im if size == (w, h) else im.resize(size, Image.Resampling.LANCZOS)
    if op == "blur" and blur == "auto":
        return im.filter(ImageFilter.GaussianBlur(auto_sigma(w, h)))
    if op == "blur":
        return im.filter(ImageFilter.Kernel((3, 3), [1, 2, 1, 2, 4, 2, 1, 2, 1], 16))
    return im.resize(half_size(w, h), Image.Resampling.NEAREST)


def pillow_worker(blur: str = BLUR):
    from PIL import Image, ImageOps

    def derivative(im, op):
        return pillow_derivative(im, op, blur)

    def one(src: Path, out: Path) -> dict:
        t = {}
        t0 = now()
        with Image.open(src) as im:
            im.load()
            t1 = now()
            im = ImageOps.exif_transpose(im)
            if im.mode not in ("RGB", "RGBA"):
                alpha = im.mode in ("LA", "PA") or "transparency" in im.info
                im = im.convert("RGBA" if alpha else "RGB")
        t2 = now()
        t["decode"], t["prepare"] = t1 - t0, t2 - t1
        for op in OPERATIONS:
            a = now()
            d = derivative(im, op)
            b = now()
            buf = io.BytesIO()
            d.save(buf, "WEBP", quality=QUALITY[op], method=EFFORT)
            c = now()
            (out / f"{src.stem}_{op}.webp").write_bytes(buf.getvalue())
            t[f"op:{op}"], t[f"encode:{op}"], t[f"write:{op}"] = b - a, c - b, now() - c
        t["pixels"] = im.size[0] * im.size[1]
        return t

    return one


def vips_worker(blur: str = BLUR):
    import pyvips

    pyvips.cache_set_max(0)
    mask = pyvips.Image.new_from_array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], scale=16)

    def derivative(img, op):
        w, h = img.width, img.height
        if op == "thumbnail":
            tw, th = thumb_size(w, h)
            return img if (tw, th) == (w, h) else img.resize(tw / w, vscale=th / h, kernel="lanczos3")
        if op == "blur" and blur == "auto":
            return img.gaussblur(auto_sigma(w, h), min_ampl=MIN_AMPL, precision="integer")
        if op == "blur":
            return img.conv(mask, precision="integer")
        hw, hh = half_size(w, h)
        return img.resize(hw / w, vscale=hh / h, kernel="nearest")

    def one(src: Path, out: Path) -> dict:
        t = {}
        t0 = now()
        img = pyvips.Image.new_from_file(str(src)).autorot()
        if img.interpretation not in ("srgb", "rgb") or img.format != "uchar":
            img = img.colourspace("srgb").cast("uchar")
        img = img.copy_memory()
        t["decode"] = now() - t0
        for op in OPERATIONS:
            a = now()
            # vips is lazy: the operation runs inside the save.
            data = derivative(img, op).webpsave_buffer(Q=QUALITY[op], effort=EFFORT, keep="none")
            b = now()
            (out / f"{src.stem}_{op}.webp").write_bytes(data)
            t[f"op+encode:{op}"], t[f"write:{op}"] = b - a, now() - b
        t["pixels"] = img.width * img.height
        return t

    return one


WORKERS = {"pillow": pillow_worker, "vips": vips_worker}


def main(argv: list[str]) -> int:
    blur = BLUR
    if "--blur" in argv:
        i = argv.index("--blur")
        blur = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
        if blur not in BLURS:
            raise SystemExit(f"--blur must be one of {', '.join(BLURS)}, not {blur!r}")
    kind, list_file, out_dir = argv[:3]
    timings_file = argv[3] if len(argv) > 3 else None
    one = WORKERS[kind](blur)
    jobs = json.loads(Path(list_file).read_text())
    out_root = Path(out_dir)
    timings = []
    for src, rel in jobs:
        out = out_root / rel
        out.mkdir(parents=True, exist_ok=True)
        t = one(Path(src), out)
        t["file"] = src
        timings.append(t)
    if timings_file:
        Path(timings_file).write_text(json.dumps(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
