"""How soon `imgtool process` stops on Ctrl-C: from SIGINT to its exit, in the middle of a run.

Writes ``--images`` large PNGs into a temporary folder, starts ``imgtool
process`` on them, sends SIGINT once the first outputs are in place, and
times until the process has exited (exit code 130 checked).  The target is
an interactive stop: well under a second (outputs are all or nothing, so
nothing is waited for).  The figure is a wall time, so run it on a quiet
machine; tests/test_cli.py checks only that it stops and leaves no partial
file.

    python -m bench.stop_latency                  # 5 runs, 40 images of 1600x1200, -j 2
    python -m bench.stop_latency --runs 2 --images 8 --size 400x300   # a smoke run
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _images(folder: Path, count: int, width: int, height: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], -1)
    for i in range(count):
        img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"big{i}.png")


def one_run(folder: Path, jobs: int, timeout: float = 120.0) -> float:
    """Seconds from SIGINT to exit in one run over ``folder`` (its processed/ emptied first)."""
    out = folder / "processed"
    if out.exists():
        for p in out.iterdir():
            p.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "imgtool", "process", str(folder), "--backend", "cpu",
                             "-j", str(jobs)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (out.exists() and len(list(out.glob("*.webp"))) >= 3):
        if proc.poll() is not None:
            raise RuntimeError("imgtool finished before it could be interrupted: give it more images")
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=timeout)
    took = time.monotonic() - sent
    if proc.returncode != 130:
        raise RuntimeError(f"exit {proc.returncode}, not 130: {err[-500:]}")
    return took


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", default="1600x1200", help="WIDTHxHEIGHT of each image")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="imgtool-stop-") as tmp:
        folder = Path(tmp)
        _images(folder, args.images, width, height)
        times = [one_run(folder, args.jobs) for _ in range(args.runs)]
    print(f"SIGINT to exit over {args.runs} runs ({args.images} images of {width}x{height}, -j {args.jobs}): "
          f"median {statistics.median(times):.3f} s, worst {max(times):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
