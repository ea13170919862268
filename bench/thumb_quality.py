"""Thumbnail quality through the real CLI: PSNR of --lossless thumbnails against Pillow's LANCZOS.

    python -m bench.thumb_quality [--corpus DIR] [--write-results]

For each backend (cpu, and the kernels through the cuda backend: on a GPU when
PyCUDA answers, else their CPU build, IMGTOOL_CUDA_RUNTIME=host) it runs
`imgtool process --lossless --ops thumbnail` over the corpus plus a 2048x2048
zone plate, decodes each thumbnail and compares it with Pillow's
`Image.resize(..., LANCZOS)` of the same upright sRGB input.  The spec's bar
is 40 dB on every image.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "photos"
BAR_DB = 40.0


def zone_plate(size: int = 2048) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) - size / 2
    v = 0.5 + 0.5 * np.cos(np.pi * (x * x + y * y) / size)
    return Image.fromarray(np.round(v * 255).astype(np.uint8)).convert("RGB")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def reference(path: Path, width: int = 256) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        w, h = im.size
        if w <= width:
            return np.asarray(im)
        return np.asarray(im.resize((width, max(1, round(h * width / w))), Image.Resampling.LANCZOS))


def measure(inputs: Path, backend: str) -> dict[str, float]:
    env = dict(os.environ)
    if backend == "kernels":
        try:
            import pycuda.driver  # noqa: F401

            env.pop("IMGTOOL_CUDA_RUNTIME", None)
        except Exception:
            env["IMGTOOL_CUDA_RUNTIME"] = "host"
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "imgtool", "-q", "process", str(inputs), "-o", out, "--lossless",
               "--ops", "thumbnail", "--backend", "cuda" if backend == "kernels" else "cpu", "--force"]
        subprocess.run(cmd, check=True, env=env)
        scores = {}
        for src in sorted(p for p in inputs.iterdir() if p.is_file()):
            with Image.open(Path(out) / f"{src.stem}_thumbnail.webp") as im:
                scores[src.name] = psnr(np.asarray(im.convert("RGB")), reference(src))
        return scores


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp)
        for p in sorted(args.corpus.iterdir()):
            (inputs / p.name).write_bytes(p.read_bytes())
        zone_plate().save(inputs / "zone-plate-2048.png")
        results = {b: measure(inputs, b) for b in ("cpu", "kernels")}
    names = sorted(results["cpu"])
    lines = ["| image | cpu backend dB | kernels dB |", "|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {results['cpu'][n]:.1f} | {results['kernels'][n]:.1f} |")
    worst = min(min(r.values()) for r in results.values())
    kernels_on = "a GPU" if "IMGTOOL_CUDA_RUNTIME" not in os.environ and _has_gpu() else "their CPU build (hostcuda)"
    summary = (f"Lowest: {worst:.1f} dB (bar {BAR_DB:.0f} dB: {'met' if worst >= BAR_DB else 'NOT met'}); "
               f"kernels ran on {kernels_on}; inf = identical pixels.")
    table = "\n".join(lines)
    print(table)
    print(summary)
    if args.write_results:
        _write(table, summary, args)
    return 0 if worst >= BAR_DB else 1


def _has_gpu() -> bool:
    try:
        import pycuda.driver  # noqa: F401

        return True
    except Exception:
        return False


def _write(table: str, summary: str, args) -> None:
    results = ROOT / "bench" / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    begin, end = "<!-- bench:thumb-quality -->", "<!-- /bench:thumb-quality -->"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = (f"{begin}\n{stamp}; `python -m bench.thumb_quality --corpus {args.corpus} --write-results`; "
            f"`imgtool process --lossless --ops thumbnail` against Pillow's LANCZOS of the upright sRGB input.\n\n"
            f"{table}\n\n{summary}\n{end}")
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Thumbnail quality (PSNR, lossless)\n" + body + "\n"
    results.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
