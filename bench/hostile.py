"""Hostile files and the checks that bound them: worst-case time and memory, and what the checks cost.

    python -m bench.hostile [--corpus DIR] [--limit N] [--repeat 5] [--quick]

A timing (run it on a quiet machine).  Three parts:

1. Each hostile file (tests/hostile_files.py: a scan-bomb JPEG, files whose
   headers claim far more pixels than their data holds, four tiny WebPs
   that decode to 120 MP) through ``imgtool process`` in a child process:
   wall time, peak RSS (the child's ru_maxrss), exit code and its one line.
   The scan bomb is also given to Pillow alone (no scan limit, 120 s cap) to
   show what the limit saves.
2. The checks' cost on the corpus: ``budgets.check`` (the scan count and the
   data-length floor) per image, against the image's whole
   ``Pipeline.process`` time; the watched thread of ``--job-timeout``
   (process with the budget against without); the confined open and write
   (``--allow-root``) against the plain one.  The spec's bar: the
   performance section's throughput ratios fall by at most 2%, so each
   share here should stay well under 2%.
3. The longest pause a thread watching a decode sees, per format (the
   time budget's watcher relies on the decoders releasing the GIL).

``--quick`` makes every hostile file small (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "photos"
sys.path.insert(0, str(ROOT / "tests"))

from .report import best_of  # noqa: E402
import hostile_files as h  # noqa: E402 - from tests/, the same files the tests use


def _run_child(args: list[str], timeout: float) -> tuple[float, int, int, str]:
    """(seconds, peak RSS bytes, exit code, last stderr line) of one child process."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "dt = time.perf_counter() - t; "
            "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024; "
            "line = (p.stderr.strip().splitlines() or [''])[0][:160]; "
            "print(dt, rss, p.returncode, line, sep='\\t')")
    try:
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                             timeout=timeout).stdout.strip()
    except subprocess.TimeoutExpired:
        return timeout, 0, -1, f"(over {timeout:g} s)"
    dt, rss, rc, line = (out.split("\t", 3) + ["", "", "", ""])[:4]
    return float(dt), int(rss), int(rc), line


def hostile_files(folder: Path, quick: bool) -> dict[str, Path]:
    made = {}

    def put(name: str, data: bytes) -> None:
        path = folder / name
        path.write_bytes(data)
        made[name] = path

    put("scan-bomb.jpg", h.scan_bomb_jpeg(scans=300 if quick else 3000, side=256 if quick else 2048))
    side = 1000 if quick else 10954
    put("claims-big.jpg", h.forged_jpeg(side))
    put("claims-big.png", h.forged_png(1000 if quick else 10000))
    put("claims-big.gif", h.forged_gif(1000 if quick else 10000))
    put("claims-big.bmp", h.forged_bmp(1000 if quick else 10000))
    put("cut.webp", h.truncated_webp(300 if quick else 3000))
    put("cut.tif", h.truncated_tiff(300 if quick else 2000))
    put("cut.avif", h.truncated_avif(200 if quick else 1000))
    try:
        put("cut.heic", h.truncated_heif(200 if quick else 1000))
    except ImportError:
        pass
    # A valid lossless WebP of 120 MP (flat) that takes a few hundred bytes: admitted by size.
    import numpy as np
    from PIL import Image

    big = 1000 if quick else 10954
    buf = io.BytesIO()
    Image.fromarray(np.full((big, big, 3), 77, np.uint8)).save(buf, "WEBP", lossless=True, method=0)
    for i in range(4):
        put(f"tiny-120mp-{i}.webp", buf.getvalue())
    return made


def part_hostile(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        files = hostile_files(folder, quick)
        print("## Hostile files through `imgtool process` (one child process each; cpu backend)\n")
        print("| file | bytes | seconds | peak RSS, MB | exit | first line |")
        print("|---|---|---|---|---|---|")
        for name, path in files.items():
            if name.startswith("tiny-120mp-") and not name.endswith("-0.webp"):
                continue
            dt, rss, rc, line = _run_child(
                [sys.executable, "-m", "imgtool", "process", str(path), "-o", str(Path(tmp) / "out"), "--force",
                 "--backend", "cpu"], timeout=600)
            print(f"| {name} | {path.stat().st_size} | {dt:.2f} | {rss / 2**20:.0f} | {rc} | "
                  f"{line.replace(str(folder) + '/', '').replace('|', '/')} |")
        # Four 120 MP WebPs at once, with and without a memory budget.
        four = Path(tmp) / "four"
        four.mkdir()
        for i in range(4):
            os.link(files[f"tiny-120mp-{i}.webp"], four / f"tiny-120mp-{i}.webp")
        print("\n| four tiny 120 MP WebPs, -j 4 | seconds | peak RSS, MB |\n|---|---|---|")
        for budget in ("none", "auto", "2G"):
            dt, rss, rc, _ = _run_child(
                [sys.executable, "-m", "imgtool", "process", str(four), "-o", str(Path(tmp) / "out4"), "--force",
                 "--backend", "cpu", "-j", "4", "--max-memory", budget], timeout=600)
            print(f"| --max-memory {budget} (exit {rc}) | {dt:.2f} | {rss / 2**20:.0f} |")
        # What the scan limit saves: Pillow alone on the bomb.
        code = ("import sys, time; from PIL import Image; t = time.perf_counter(); im = Image.open(sys.argv[1]); "
                "im.load(); print(time.perf_counter() - t)")
        try:
            out = subprocess.run([sys.executable, "-c", code, str(files["scan-bomb.jpg"])], capture_output=True,
                                 text=True, timeout=120).stdout.strip()
            print(f"\nPillow alone (no scan limit) on scan-bomb.jpg: {float(out):.2f} s")
        except (subprocess.TimeoutExpired, ValueError):
            print("\nPillow alone (no scan limit) on scan-bomb.jpg: over 120 s (stopped)")


def part_checks(corpus: Path, limit: int | None, repeat: int) -> None:
    from imgtool import budgets
    from imgtool.imageio import open_image
    from imgtool.ops import Settings
    from imgtool.pipeline import Pipeline, Task
    from imgtool.storage import confine

    paths = sorted(p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith("."))[:limit]
    settings = Settings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain = Pipeline(settings, backend="cpu", jobs=1)
        timed = Pipeline(settings, backend="cpu", jobs=1, job_timeout=120.0)
        root = os.path.realpath(tmp)
        for path in paths:
            def check(run=True):
                with open_image(path, 1 << 40) as opened:
                    if run:
                        budgets.check(opened.file, opened.image.format, opened.image, path)

            check_cost = max(best_of(check, repeat) - best_of(lambda: check(False), repeat), 0.0)

            out = Path(tmp) / "out"
            work_plain = best_of(lambda: plain.pool.run_here(lambda: plain.process(Task(path, out), force=True)),
                               repeat)
            work_timed = best_of(lambda: timed.pool.run_here(lambda: timed.process(Task(path, out), force=True)),
                               repeat)
            # The confined write: the same bytes to a folder opened from the root by handle.
            data = b"x" * 50_000
            target = confine.confined(os.path.join(root, "c", "p"), root)
            from imgtool.storage.base import Output
            from imgtool.storage.local import LocalStore, write_atomic

            store = LocalStore()
            w_conf = best_of(lambda: store.write_outputs([Output(store.join(target, "a.webp"), data, "")]), repeat)
            w_plain = best_of(lambda: write_atomic(os.path.join(root, "c", "q", "a.webp"), data), repeat)
            rows.append((path.name, check_cost, work_plain, work_timed, w_conf - w_plain))
        plain.close()
        timed.close()
    print(f"\n## The checks' cost: {len(rows)} images from {corpus}, best of {repeat}\n")
    print("| image | budgets.check, ms | process, ms | with --job-timeout, ms | confined write extra, ms |")
    print("|---|---|---|---|---|")
    for name, c, p, t, w in rows:
        print(f"| {name} | {c * 1e3:.3f} | {p * 1e3:.1f} | {t * 1e3:.1f} | {w * 1e3:.3f} |")
    if rows:
        share = statistics.median(c / p for _n, c, p, _t, _w in rows)
        thread = statistics.median((t - p) / p for _n, _c, p, t, _w in rows)
        write = statistics.median(3 * w / p for _n, _c, p, _t, w in rows)  # three outputs an image
        print(f"\nmedian share of an image's time: checks {share:.2%}, the watched thread {thread:.2%}, "
              f"confined writes (3 outputs) {write:.2%}")


def part_gil(quick: bool) -> None:
    import numpy as np
    from PIL import Image

    side = (600, 400) if quick else (4000, 3000)
    arr = np.random.default_rng(0).integers(0, 255, (side[1], side[0], 3), dtype=np.uint8)
    print("\n## The longest pause a watching thread sees during a decode\n")
    print("| format | decode, s | longest pause, ms |\n|---|---|---|")
    for fmt, kw in [("JPEG", {"progressive": True}), ("PNG", {"compress_level": 1}), ("WEBP", {"method": 0}),
                    ("AVIF", {"speed": 10}), ("GIF", {}), ("TIFF", {"compression": "tiff_lzw"})]:
        buf = io.BytesIO()
        Image.fromarray(arr if fmt != "GIF" else arr[:, :, 0]).save(buf, fmt, **kw)
        data = buf.getvalue()
        done = threading.Event()

        def work():
            with Image.open(io.BytesIO(data)) as im:
                im.load()
            done.set()

        t0 = time.perf_counter()
        threading.Thread(target=work).start()
        gaps, last = [0.0], time.perf_counter()
        while not done.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        print(f"| {fmt} | {time.perf_counter() - t0:.2f} | {max(gaps) * 1e3:.0f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small hostile files: a smoke test")
    args = ap.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    part_hostile(args.quick)
    part_checks(args.corpus, args.limit, args.repeat)
    part_gil(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
