"""Latency of `imgtool watch`: from a photo's close to its three outputs being in place.

Starts ``imgtool watch`` on an empty temporary folder, writes each corpus
photo into it the way an upload server does (open, write, close under its
final name), and times from the close to the moment every output is
visible; one photo at a time, so the figure is latency, not queueing.  The
pipeline's own milliseconds come from the watcher's --json line, which
splits the latency into settle time, processing and the rest.

    python -m bench.watch_latency                    # corpus photos, inotify and polling
    python -m bench.watch_latency --corpus DIR --repeat 3 --no-write

Figures go into bench/RESULTS.md under "Watch latency" (the section is
replaced, other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = Path("/work/shared/corpus/photos")
RESULTS = HERE / "RESULTS.md"
HEADING = "## Watch latency"
OPERATIONS = ("thumbnail", "blur", "low-quality")
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")


class Watch:
    def __init__(self, root: Path, args: list[str]):
        cmd = [sys.executable, "-m", "imgtool", "watch", str(root), "--json", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.records: list[dict] = []
        self.log: list[str] = []
        self.backend = "?"
        for stream, sink in ((self.proc.stdout, self._json), (self.proc.stderr, self._log)):
            threading.Thread(target=lambda s=stream, k=sink: [k(l.rstrip("\n")) for l in s],
                             daemon=True).start()
        end = time.monotonic() + 60
        while not any(l.startswith("watching ") for l in self.log):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit("imgtool watch did not start:\n" + "\n".join(self.log))
            time.sleep(0.01)

    def _json(self, line: str) -> None:
        self.records.append(json.loads(line))

    def _log(self, line: str) -> None:
        self.log.append(line)
        if line.startswith("watching ") and "backend " in line:
            self.backend = line.rsplit("backend ", 1)[1].rstrip(")")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def measure(mode: str, extra: list[str], photos: list[Path], repeat: int, backend: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix="imgtool-watch-bench-"))
    try:
        (root / "user1").mkdir()
        watch = Watch(root, ["--backend", backend, *extra])
        rows = []
        try:
            for _ in range(repeat):
                for photo in photos:
                    data = photo.read_bytes()
                    stem = f"{uuid.uuid4()}-{photo.stem}"
                    dst = root / "user1" / f"{stem}{photo.suffix.lower()}"
                    outs = [root / "user1" / "processed" / f"{stem}_{op}.webp" for op in OPERATIONS]
                    n = len(watch.records)
                    with open(dst, "wb") as f:
                        f.write(data)
                    closed = time.perf_counter()
                    deadline = closed + 120
                    while not all(p.exists() for p in outs):
                        if time.perf_counter() > deadline:
                            raise SystemExit(f"{photo.name}: no outputs after 120 s\n" + "\n".join(watch.log))
                        time.sleep(0.001)
                    latency = (time.perf_counter() - closed) * 1000
                    while len(watch.records) <= n:
                        time.sleep(0.001)
                    rec = watch.records[n]
                    rows.append({"photo": photo.name, "size": f"{rec.get('width')}x{rec.get('height')}",
                                 "latency_ms": latency, "pipeline_ms": rec["durationMs"]})
                    print(f"{mode:>8}  {photo.name:<32} {rows[-1]['size']:>10}  "
                          f"latency {latency:7.0f} ms  pipeline {rec['durationMs']:7.0f} ms", flush=True)
        finally:
            watch.stop()
        return {"mode": mode, "args": " ".join(extra), "rows": rows, "backend": watch.backend}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def report(runs: list[dict], argv: list[str], photos: list[Path]) -> str:
    machine = f"{platform.node() or 'unknown host'}: {platform.platform()}, {os.cpu_count()} CPUs"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                machine += f" ({line.split(':', 1)[1].strip()})"
                break
    except OSError:
        pass
    try:
        machine += ", load average %.1f %.1f %.1f at the end" % os.getloadavg()
    except OSError:
        pass
    lines = [
        HEADING, "",
        "`" + " ".join(["python -m bench.watch_latency", *argv]) + "`",
        f"on {datetime.date.today().isoformat()}, {machine}, backend {runs[0]['backend']}; "
        f"{len(photos)} corpus photos, written one at a time (open, write, close) into the watched folder.",
        "Latency: from the close to all three outputs visible.  Pipeline: decode, operations and",
        "encode, as the watcher's --json line reports it; the rest is the settle time plus event",
        "delivery and polling.",
        "",
        "| observer | options | n | latency median | p90 | max | pipeline median | latency - pipeline, median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lat = [r["latency_ms"] for r in run["rows"]]
        pipe = [r["pipeline_ms"] for r in run["rows"]]
        rest = [r["latency_ms"] - r["pipeline_ms"] for r in run["rows"]]
        lines.append(
            f"| {run['mode']} | `{run['args'] or '(defaults)'}` | {len(lat)} | "
            f"{statistics.median(lat):.0f} ms | {pct(lat, 0.9):.0f} ms | {max(lat):.0f} ms | "
            f"{statistics.median(pipe):.0f} ms | {statistics.median(rest):.0f} ms |")
    lines += ["", "Per photo (first run of each observer, latency / pipeline, ms):", "",
              "| photo | size | " + " | ".join(r["mode"] + " " + (r["args"] or "defaults") for r in runs) + " |",
              "|---|---|" + "---|" * len(runs)]
    first = runs[0]["rows"][: len(photos)]
    for i, row in enumerate(first):
        cells = []
        for run in runs:
            r = run["rows"][i]
            cells.append(f"{r['latency_ms']:.0f} / {r['pipeline_ms']:.0f}")
        lines.append(f"| {row['photo']} | {row['size']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace the "Watch latency" section of RESULTS.md (or add it), keeping the others."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.strip() == HEADING), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + text + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    path.write_text(new)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of photos")
    ap.add_argument("--repeat", type=int, default=1, help="times through the corpus per observer")
    ap.add_argument("--backend", default="auto", help="imgtool --backend")
    ap.add_argument("--settle", type=float, default=None, help="imgtool watch --settle (default: its own)")
    ap.add_argument("--poll-interval", type=float, default=None,
                    help="imgtool watch --poll-interval (default: its own)")
    ap.add_argument("--observers", default="inotify,inotify:0,polling",
                    help="comma-separated runs, each inotify or polling, optionally :SETTLE "
                         "(inotify:0 shows the floor: event delivery and processing alone)")
    ap.add_argument("--no-write", action="store_true", help=f"print only; leave {RESULTS.name} alone")
    args = ap.parse_args(argv)
    photos = sorted(p for p in args.corpus.iterdir() if p.suffix.lower() in SUFFIXES)
    if not photos:
        raise SystemExit(f"no photos in {args.corpus}")
    common = ["--settle", str(args.settle)] if args.settle is not None else []
    runs = []
    for spec in args.observers.split(","):
        mode, _, settle = spec.partition(":")
        extra = ["--settle", settle] if settle else list(common)
        if mode == "polling":
            extra += ["--polling"]
            if args.poll_interval is not None:
                extra += ["--poll-interval", str(args.poll_interval)]
        elif mode != "inotify":
            raise SystemExit(f"unknown observer {mode!r}")
        runs.append(measure(mode, extra, photos, args.repeat, args.backend))
    text = report(runs, argv, photos)
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
