"""End-to-end tests of `imgtool watch`: a real subprocess, real folders, real filesystem events.

Every test runs with both observers: inotify (close-after-write) and
--polling (settle time).  "Processed once" is counted from the watcher's
--json lines and checked on the outputs' inodes (every write is a new file
renamed into place, so a second processing changes them).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import pytest
from PIL import Image

from imagegen import photo
from imgtool.ops import OPERATIONS

POLL_INTERVAL = 0.25
DEADLINE = 30.0  # generous: the machine running the tests may be loaded

MODES = {
    "inotify": [],
    "polling": ["--polling", "--poll-interval", str(POLL_INTERVAL)],
}


def jpeg_bytes(w: int = 96, h: int = 64, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(w, h, seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def upload_name(name: str) -> str:
    return f"{uuid.uuid4()}-{name}.jpg"


def outputs_of(src: Path) -> list[Path]:
    stem = src.name.rsplit(".", 1)[0]
    return [src.parent / "processed" / f"{stem}_{op}.webp" for op in OPERATIONS]


def has_outputs(src: Path) -> bool:
    return all(p.exists() for p in outputs_of(src))


def wait_until(pred, timeout: float = DEADLINE, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


class WatchProcess:
    """`imgtool watch` running on a folder, its --json lines and log lines collected."""

    def __init__(self, root: Path, mode: str, *extra: str):
        self.root = root
        self.args = [sys.executable, "-m", "imgtool", "watch", str(root), "--json",
                     "--backend", "cpu", "-j", "2", *MODES[mode], *extra]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.records: list[dict] = []
        self.log: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._json), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.log.append), daemon=True),
        ]
        for t in self._readers:
            t.start()
        assert wait_until(lambda: any(l.startswith("watching ") for l in self.log)
                          or self.proc.poll() is not None), self.stderr()
        assert self.proc.poll() is None, self.stderr()

    def _json(self, line: str) -> None:
        self.records.append(json.loads(line))

    @staticmethod
    def _read(stream, sink) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def stderr(self) -> str:
        return "\n".join(self.log)

    def done(self, src: Path | None = None) -> list[dict]:
        return [r for r in self.records if r["status"] == "done"
                and (src is None or Path(r["input"]) == src.resolve())]

    def lines_about(self, name: str) -> list[str]:
        return [l for l in self.log if name in l]

    def scanned(self) -> bool:
        return any(l.startswith("catch-up scan") for l in self.log)

    def stop(self, sig=signal.SIGTERM, timeout: float = DEADLINE) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for t in self._readers:
            t.join(5)
        return rc


@pytest.fixture(params=list(MODES))
def mode(request):
    return request.param


@pytest.fixture
def uploads(tmp_path):
    root = tmp_path / "uploads"
    (root / "user1").mkdir(parents=True)
    return root


@pytest.fixture
def start(uploads, mode):
    procs: list[WatchProcess] = []

    def _start(*extra: str) -> WatchProcess:
        p = WatchProcess(uploads, mode, *extra)
        procs.append(p)
        return p

    yield _start
    for p in procs:
        p.stop()


def test_a_copied_file_is_processed(start, uploads, tmp_path):
    # How soon is bench/watch_latency.py's to measure, on a quiet machine.
    w = start()
    src = tmp_path / "photo.jpg"
    src.write_bytes(jpeg_bytes())
    dst = uploads / "user1" / upload_name("photo")
    shutil.copy(src, dst)
    assert wait_until(lambda: has_outputs(dst), timeout=DEADLINE, interval=0.005), w.stderr()
    assert wait_until(lambda: len(w.records) >= 1)
    assert [r["status"] for r in w.records] == ["done"]
    assert set(w.records[0]["outputs"]) == set(OPERATIONS)
    # Its line carries the image's size and placeholders (tests/test_placeholders.py decodes them).
    with Image.open(src) as im:
        assert (w.records[0]["width"], w.records[0]["height"]) == im.size
    assert set(w.records[0]["placeholders"]) == {"thumbhash", "blurhash"}


def test_a_file_written_in_chunks_over_3_s_is_processed_once_after_its_last_write(start, uploads):
    w = start()
    dst = uploads / "user1" / upload_name("chunked")
    data = jpeg_bytes(320, 240, seed=3)
    chunks = 20
    step = -(-len(data) // chunks)
    for i in range(chunks):  # open, append, close, pause: 3 s in all
        with open(dst, "ab") as f:
            f.write(data[i * step:(i + 1) * step])
        time.sleep(0.15)
    last_write = dst.stat().st_mtime_ns
    assert wait_until(lambda: w.done(dst)), w.stderr()
    inodes = [p.stat().st_ino for p in outputs_of(dst)]
    time.sleep(1.5)  # room for a second, wrong, processing
    assert len(w.done(dst)) == 1, w.records
    assert [r for r in w.records if r["status"] != "done"] == []
    assert [p.stat().st_ino for p in outputs_of(dst)] == inodes
    assert all(p.stat().st_mtime_ns >= last_write for p in outputs_of(dst))
    with Image.open(outputs_of(dst)[0]) as thumb:  # thumbnail of the whole file
        assert thumb.size == (256, 192)
    with Image.open(outputs_of(dst)[1]) as blur:
        assert blur.size == (320, 240)


def test_a_file_renamed_into_place_is_processed_once(start, uploads):
    w = start()
    user = uploads / "user1"
    data = jpeg_bytes(seed=4)
    # Written slowly under a hidden and under a .part name, each renamed when whole.
    moves = [(user / f".upload-{uuid.uuid4()}", user / upload_name("renamed")),
             (user / (upload_name("renamed2") + ".part"), user / upload_name("renamed2"))]
    for tmp, final in moves:
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(0.6)
            f.write(data[len(data) // 2:])
        os.rename(tmp, final)
        assert wait_until(lambda: w.done(final)), w.stderr()
    time.sleep(1.0)
    assert sorted(Path(r["input"]).name for r in w.records) == sorted(f.name for _, f in moves)
    assert all(r["status"] == "done" for r in w.records)


def test_files_moved_in_or_written_into_new_folders_are_processed_at_once(start, uploads, tmp_path):
    # Moved in from outside, with a folder moved in, or written into a folder
    # made that instant (before the watch on it is in place): no close event
    # is ever seen for most of these.
    w = start()
    outside = tmp_path / "staging"
    single = outside / upload_name("moved")
    folder = outside / "user9"
    inner = [folder / upload_name("in-folder-1"), folder / "sub" / upload_name("in-folder-2")]
    for i, p in enumerate([single, *inner]):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(jpeg_bytes(seed=10 + i))
    os.rename(single, uploads / "user1" / single.name)
    os.rename(folder, uploads / "user9")
    landed = [uploads / "user1" / single.name, uploads / "user9" / inner[0].name,
              uploads / "user9" / "sub" / inner[1].name]
    for i in range(5):
        p = uploads / f"new{i}" / upload_name("first-upload")
        p.parent.mkdir()
        p.write_bytes(jpeg_bytes(seed=20 + i))
        landed.append(p)
    # Whole on arrival: each is taken without the close that never comes.  That it is taken
    # after the settle time, not NO_CLOSE_QUIET, is tests/test_watcher.py's (on a fake clock,
    # test_a_file_created_with_content_and_no_write_after_came_in_whole); how soon,
    # bench/watch_latency.py's.
    assert wait_until(lambda: all(w.done(p) for p in landed)), w.stderr()
    time.sleep(0.5)
    assert len(w.records) == len(landed)


def test_processed_folders_and_temporary_files_produce_nothing(start, uploads):
    w = start()
    user = uploads / "user1"
    data = jpeg_bytes(seed=5)
    ignored = [user / "processed" / upload_name("inside-processed"), user / ".hidden.jpg",
               user / "a.jpg.tmp", user / "b.tmp", user / "c.jpg.part", user / "d.jpg~",
               user / ".cache" / "e.jpg", user / "f_thumbnail.webp", user / "notes.txt"]
    for p in ignored:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    sentinel = user / upload_name("sentinel")
    time.sleep(0.5)
    sentinel.write_bytes(data)
    assert wait_until(lambda: w.done(sentinel)), w.stderr()
    time.sleep(1.0)
    assert [Path(r["input"]).name for r in w.records] == [sentinel.name]
    assert not (user / "processed" / "processed").exists()
    assert not (user / ".cache" / "processed").exists()
    assert sorted(p.name for p in (user / "processed").iterdir()) == sorted(
        [ignored[0].name] + [p.name for p in outputs_of(sentinel)])


def test_catch_up_on_start_and_a_restart_redoes_nothing(start, uploads):
    files = []
    for i in range(20):
        p = uploads / f"user{i % 4}" / upload_name(f"old{i}")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(jpeg_bytes(seed=i))
        files.append(p)
    w = start()
    assert wait_until(lambda: len(w.done()) >= 20), w.stderr()
    assert sorted(Path(r["input"]).name for r in w.done()) == sorted(p.name for p in files)
    assert w.stop(signal.SIGINT) == 0
    stamps = {o: (o.stat().st_ino, o.stat().st_mtime_ns) for f in files for o in outputs_of(f)}

    w2 = start()
    assert wait_until(w2.scanned), w2.stderr()
    assert any("0 files to process" in l for l in w2.log), w2.stderr()
    time.sleep(1.0)
    assert w2.records == []
    assert {o: (o.stat().st_ino, o.stat().st_mtime_ns) for o in stamps} == stamps

    # A file rewritten later is processed again, and only that one.
    files[7].write_bytes(jpeg_bytes(seed=99))
    assert wait_until(lambda: w2.done(files[7])), w2.stderr()
    time.sleep(1.0)
    assert [Path(r["input"]).name for r in w2.records] == [files[7].name]
    assert all(o.stat().st_mtime_ns >= files[7].stat().st_mtime_ns for o in outputs_of(files[7]))


def test_no_initial_scan_leaves_old_files_alone(start, uploads):
    old = uploads / "user1" / upload_name("old")
    old.write_bytes(jpeg_bytes())
    w = start("--no-initial-scan")
    new = uploads / "user1" / upload_name("new")
    new.write_bytes(jpeg_bytes(seed=1))
    assert wait_until(lambda: w.done(new)), w.stderr()
    time.sleep(0.5)
    assert [Path(r["input"]).name for r in w.records] == [new.name]
    assert not has_outputs(old)


def test_a_burst_of_200_files_is_processed_exactly_once_in_bounded_memory(start, uploads):
    w = start()
    ps = psutil.Process(w.proc.pid)
    base_rss = ps.memory_info().rss
    data = [jpeg_bytes(64, 48, seed=i) for i in range(8)]
    files = []
    for i in range(200):
        p = uploads / f"user{i % 10}" / upload_name(f"burst{i}")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data[i % len(data)])
        files.append(p)
    peak = base_rss

    def all_done():
        nonlocal peak
        peak = max(peak, ps.memory_info().rss)
        return len(w.done()) >= 200

    assert wait_until(all_done, timeout=90, interval=0.05), (len(w.done()), w.stderr()[-2000:])
    time.sleep(1.0)
    counts = Counter(Path(r["input"]).name for r in w.records)
    assert counts == Counter(p.name for p in files)  # each once, nothing else
    assert all(has_outputs(p) for p in files)
    assert peak < 300 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
    assert peak - base_rss < 100 * 2**20, f"grew by {(peak - base_rss) / 2**20:.0f} MiB"


def test_a_broken_file_is_logged_once_and_the_next_is_processed(start, uploads):
    w = start()
    bad = uploads / "user1" / upload_name("broken")
    bad.write_bytes(jpeg_bytes()[:200])  # a truncated JPEG
    assert wait_until(lambda: any(r["status"] == "failed" for r in w.records)), w.stderr()
    good = uploads / "user1" / upload_name("good")
    good.write_bytes(jpeg_bytes(seed=2))
    assert wait_until(lambda: w.done(good)), w.stderr()
    time.sleep(0.5)
    assert w.proc.poll() is None
    about_bad = w.lines_about(bad.name)
    assert len(about_bad) == 1 and about_bad[0].startswith("Error: "), w.stderr()
    assert [r["status"] for r in w.records] == ["failed", "done"]
    assert not has_outputs(bad) and not (bad.parent / "processed" / outputs_of(bad)[0].name).exists()
    assert w.stop() == 0


def test_sigterm_during_work_finishes_what_is_in_flight_and_exits_0(start, uploads):
    files = []
    for i in range(4):
        p = uploads / "user1" / upload_name(f"large{i}")
        p.write_bytes(jpeg_bytes(2400, 1800, seed=i))
        files.append(p)
    w = start("-j", "1", "-v")

    def started():
        return [p.name for p in files if any(p.name in line and line.endswith(": started") for line in w.log)]

    # The signal goes once a second file has started: it is in flight then
    # (one at a time), whatever the machine's speed.
    assert wait_until(lambda: len(started()) >= 2, timeout=60), w.stderr()
    in_flight = started()
    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    done = {Path(r["input"]).name for r in w.done()}
    assert set(in_flight) <= done, "a file in flight at the signal was not finished"
    assert len(done) < len(files), "nothing was in flight: the test did not test"
    for p in files:
        assert has_outputs(p) == (p.name in done)
    leftovers = [q.name for q in (uploads / "user1" / "processed").iterdir() if q.suffix != ".webp"
                 or q.name.startswith(".")]
    assert leftovers == []
    assert any(l.startswith("stopped: ") for l in w.log)
