"""The watcher's ignore rules and readiness logic, on real files, with a controlled clock."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from imagegen import photo
from imgtool import watcher as watcher_mod
from imgtool.ops import Settings
from imgtool.pipeline import Pipeline
from imgtool.watcher import (
    CLOSED,
    CREATED,
    NO_CLOSE_QUIET,
    SCANNED,
    TOUCHED,
    WRITING,
    ReadyTracker,
    Watcher,
    is_watched_candidate,
)

SETTLE = 0.5


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def advance(self, dt):
        self.t += dt


def small_jpeg(path: Path, seed: int = 0, size=(48, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(*size, seed=seed)).save(path, "JPEG")
    return path


def aged(path: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def take(tracker: ReadyTracker):
    """(path, force) of the file taken, or None."""
    item = tracker.take_ready()
    return None if item is None else item[:2]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def tracker(clock):
    return ReadyTracker(SETTLE, needs_close=True, clock=clock)


# -- what is watched -----------------------------------------------------------

@pytest.mark.parametrize("rel, wanted", [
    ("u1/a1b2-cat.jpg", True),
    ("u1/a1b2-cat.JPEG", True),
    ("top.png", True),
    ("u1/deep/er/x.webp", True),
    ("u1/processed/a1b2-cat.jpg", False),
    ("u1/processed/a1b2-cat_thumbnail.webp", False),
    ("u1/a1b2-cat_blur.webp", False),
    ("u1/.a1b2-cat.jpg", False),
    ("u1/.cache/x.jpg", False),
    ("u1/x.jpg.tmp", False),
    ("u1/x.tmp", False),
    ("u1/x.jpg.part", False),
    ("u1/x.jpg~", False),
    ("u1/notes.txt", False),
    ("u1/processed/.imgtool-abc.tmp", False),
])
def test_ignore_rules(tmp_path, rel, wanted):
    assert is_watched_candidate(tmp_path / rel, tmp_path) is wanted


def test_rules_apply_below_the_root_only(tmp_path):
    # A watched folder that itself sits in a "processed" or hidden folder still works.
    root = tmp_path / ".data" / "processed" / "uploads"
    assert is_watched_candidate(root / "u1" / "x.jpg", root)
    assert not is_watched_candidate(tmp_path / "elsewhere" / "x.jpg", root)


# -- readiness -----------------------------------------------------------------

def test_closed_file_is_ready_after_the_quiet_period(tmp_path, tracker, clock):
    f = str(small_jpeg(tmp_path / "a.jpg"))
    tracker.note(f, CLOSED)
    clock.advance(SETTLE - 0.01)
    assert take(tracker) is None
    clock.advance(0.02)
    assert take(tracker) == (f, False)
    assert take(tracker) is None  # taken once


def test_each_write_restarts_the_quiet_period(tmp_path, tracker, clock):
    # open/append/close repeatedly: every close (and write) pushes readiness back.
    f = tmp_path / "a.jpg"
    data = small_jpeg(tmp_path / "src.jpg").read_bytes()
    for i in range(0, len(data), 500):
        with open(f, "ab") as fh:
            fh.write(data[i:i + 500])
        tracker.note(str(f), WRITING)
        tracker.note(str(f), CLOSED)
        clock.advance(SETTLE * 0.8)
        assert take(tracker) is None
    clock.advance(SETTLE)
    assert take(tracker) == (str(f), False)


def test_file_still_open_for_writing_waits_for_its_close(tmp_path, tracker, clock):
    f = str(small_jpeg(tmp_path / "a.jpg"))
    tracker.note(f, CREATED)
    tracker.note(f, WRITING)
    clock.advance(SETTLE * 2)
    assert take(tracker) is None
    tracker.note(f, CLOSED)
    clock.advance(SETTLE)
    assert take(tracker) == (f, False)


def test_file_never_closed_is_taken_after_the_longer_wait(tmp_path, tracker, clock):
    f = str(small_jpeg(tmp_path / "a.jpg"))
    tracker.note(f, WRITING)
    clock.advance(NO_CLOSE_QUIET - 0.01)
    assert take(tracker) is None
    clock.advance(0.02)
    assert take(tracker) == (f, False)


def test_without_close_events_the_settle_time_is_all(tmp_path, clock):
    polling = ReadyTracker(SETTLE, needs_close=False, clock=clock)
    f = str(small_jpeg(tmp_path / "a.jpg"))
    polling.note(f, WRITING)
    clock.advance(SETTLE + 0.01)
    assert take(polling) == (f, False)


def test_a_file_created_with_content_and_no_write_after_came_in_whole(tmp_path, tracker, clock):
    # What watchdog reports for the files of a folder moved in, or written
    # before the watch on their new folder was in place: a creation, no close.
    whole = str(small_jpeg(tmp_path / "whole.jpg"))
    tracker.note(whole, CREATED)
    new = tmp_path / "new.jpg"
    new.touch()  # a writer's open(O_CREAT): empty, writes follow
    tracker.note(str(new), CREATED)
    clock.advance(SETTLE + 0.01)
    assert take(tracker) == (whole, False)
    assert take(tracker) is None
    new.write_bytes(Path(whole).read_bytes())
    tracker.note(str(new), WRITING)
    clock.advance(SETTLE + 0.01)
    assert take(tracker) is None  # written to, not closed
    tracker.note(str(new), CLOSED)
    clock.advance(SETTLE + 0.01)
    assert take(tracker) == (str(new), False)


def test_touch_keeps_what_was_known_about_the_writing(tmp_path, tracker, clock):
    f = str(small_jpeg(tmp_path / "a.jpg"))
    tracker.note(f, TOUCHED)  # touch of a file with no history: whole
    clock.advance(SETTLE + 0.01)
    assert take(tracker) == (f, False)
    tracker.finish(f, changed=False)
    g = str(small_jpeg(tmp_path / "b.jpg"))
    tracker.note(g, WRITING)
    tracker.note(g, TOUCHED)  # chmod while being written: still writing
    clock.advance(SETTLE + 0.01)
    assert take(tracker) is None


def test_change_without_an_event_waits_again(tmp_path, clock):
    # Polling sees a file only once per interval: a change between looks
    # must be caught by the check at the end of the quiet period.
    t = ReadyTracker(SETTLE, needs_close=False, clock=clock)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"\xff\xd8partial")
    t.note(str(f), CREATED)
    with open(f, "ab") as fh:
        fh.write(b"more")
    clock.advance(SETTLE + 0.01)
    assert take(t) is None
    clock.advance(SETTLE + 0.01)
    assert take(t) == (str(f), False)


def test_a_file_replaced_by_one_of_the_same_size_and_mtime_is_seen(tmp_path, tracker, clock):
    f = small_jpeg(tmp_path / "a.jpg")
    st = f.stat()
    tracker.note(str(f), CLOSED)
    other = tmp_path / "other.jpg"
    other.write_bytes(f.read_bytes())
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, f)  # same size and mtime, new inode
    clock.advance(SETTLE + 0.01)
    assert take(tracker) is None


def test_deleted_files_are_dropped(tmp_path, tracker, clock):
    f = small_jpeg(tmp_path / "a.jpg")
    tracker.note(str(f), CLOSED)
    f.unlink()
    clock.advance(SETTLE + 0.01)
    assert take(tracker) is None
    assert not tracker.pending
    tracker.note(str(f), CLOSED)  # an event for a file already gone
    assert not tracker.pending


def test_scanned_old_file_is_ready_at_once_recent_one_after_settle(tmp_path, tracker, clock):
    old = str(aged(small_jpeg(tmp_path / "old.jpg"), 60))
    new = str(small_jpeg(tmp_path / "new.jpg", seed=1))
    tracker.note(old, SCANNED)
    tracker.note(new, SCANNED)
    assert take(tracker) == (old, False)
    assert take(tracker) is None
    clock.advance(SETTLE + 0.01)
    assert take(tracker) == (new, False)


def test_scanned_files_are_told_apart_from_files_seen_changing(tmp_path, tracker, clock):
    scanned = str(aged(small_jpeg(tmp_path / "s.jpg"), 60))
    seen = str(small_jpeg(tmp_path / "e.jpg", seed=1))
    tracker.note(scanned, SCANNED)
    tracker.note(seen, SCANNED)
    tracker.note(seen, CLOSED)
    clock.advance(SETTLE + 0.01)
    assert {tracker.take_ready(), tracker.take_ready()} == {(scanned, False, False), (seen, False, True)}


def test_a_file_in_work_is_never_taken_twice_and_a_change_forces_a_redo(tmp_path, tracker, clock):
    f = str(small_jpeg(tmp_path / "a.jpg"))
    tracker.note(f, CLOSED)
    clock.advance(SETTLE + 0.01)
    assert take(tracker) == (f, False)
    tracker.note(f, CLOSED)  # rewritten while in work
    clock.advance(SETTLE + 0.01)
    assert take(tracker) is None
    assert tracker.next_due() is None
    tracker.finish(f, changed=True)
    assert take(tracker) == (f, True)
    tracker.finish(f, changed=False)
    assert not tracker.pending and not tracker.in_work


def test_events_after_the_work_that_change_nothing_are_left_to_the_up_to_date_check(
        tmp_path, tracker, clock):
    f = str(small_jpeg(tmp_path / "a.jpg"))
    tracker.note(f, CLOSED)
    clock.advance(SETTLE + 0.01)
    assert take(tracker) == (f, False)
    tracker.note(f, TOUCHED)  # e.g. a late event
    tracker.finish(f, changed=False)
    clock.advance(SETTLE + 0.01)
    assert take(tracker) == (f, False)  # not forced: the pipeline will skip it


# -- the Watcher in this process -------------------------------------------------

def _watcher(root: Path, results: list, **kw) -> Watcher:
    pipe = Pipeline(Settings(), backend="cpu", jobs=1)
    return Watcher(root, pipe, jobs=1, settle=0.1, on_result=results.append, **kw)


def _wait(pred, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_queue_overflow_triggers_a_rescan(tmp_path):
    small_jpeg(tmp_path / "u1" / "missed.jpg")  # there before the start, and no scan
    results: list = []
    w = _watcher(tmp_path, results, initial_scan=False)
    w.start()
    try:
        time.sleep(0.5)
        assert results == []
        # What watchdog does on IN_Q_OVERFLOW: rebuild its watches and log this.
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
        assert _wait(lambda: len(results) == 1)
        assert results[0].task.src.name == "missed.jpg" and results[0].status == "done"
    finally:
        w.stop()
    assert w._hook not in logging.getLogger(watcher_mod.OVERFLOW_LOGGER).handlers


def test_own_outputs_and_reads_make_no_work(tmp_path):
    results: list = []
    w = _watcher(tmp_path, results)
    seen: list = []
    real = w._on_event
    w._on_event = lambda e: (seen.append(e), real(e))[1]
    w.start()
    try:
        small_jpeg(tmp_path / "u1" / "a.jpg")
        assert _wait(lambda: len(results) == 1)
        n = len(seen)
        time.sleep(0.6)
        with w._cond:
            assert not w._tracker.pending and not w._tracker.in_work
        assert len(results) == 1
        # Every event after the file was whole came from our own outputs.
        assert all("processed" in Path(os.fsdecode(e.src_path)).parts for e in seen[n:])
    finally:
        w.stop()


def test_a_file_replaced_by_an_older_copy_is_processed_again(tmp_path):
    # cp -p / rsync -t / mv of an older file: the mtime says "up to date", the ctime does not.
    root = tmp_path / "watched"
    f = small_jpeg(root / "u1" / "a.jpg")
    results: list = []
    w = _watcher(root, results)
    w.start()
    try:
        assert _wait(lambda: len(results) == 1)
        time.sleep(0.2)
        older = aged(small_jpeg(tmp_path / "staging.jpg", seed=7, size=(40, 30)), 3600)
        os.replace(older, f)
        assert _wait(lambda: len(results) == 2)
        assert results[1].status == "done" and results[1].size == (40, 30)
        time.sleep(0.5)
        assert len(results) == 2
    finally:
        w.stop()


def test_stop_lets_the_file_in_work_finish(tmp_path):
    small_jpeg(tmp_path / "big.jpg", size=(1600, 1200))
    results: list = []
    w = _watcher(tmp_path, results)
    started = threading.Event()
    real = w.pipeline.process
    w.pipeline.process = lambda task, force=True: (started.set(), real(task, force))[1]
    w.start()
    assert started.wait(15)
    w.stop()
    assert [r.status for r in results] == ["done"]
    assert len(list((tmp_path / "processed").glob("*.webp"))) == 3


def test_the_catch_up_scan_redoes_what_a_changed_option_changes(tmp_path):
    """Up to date means made with these settings: a watch started with another blur sigma redoes the blurs alone."""
    for i in range(2):
        aged(small_jpeg(tmp_path / "u1" / f"p{i}.jpg", seed=i), 3600)
    first: list = []
    w = _watcher(tmp_path, first)
    w.start()
    try:
        assert _wait(lambda: len(first) == 2)
    finally:
        w.stop()
    out = tmp_path / "u1" / "processed"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.webp")}
    assert len(before) == 6
    again: list = []
    pipe = Pipeline(Settings(blur_sigma=2.0), backend="cpu", jobs=1)
    w = Watcher(tmp_path, pipe, jobs=1, settle=0.1, on_result=again.append)
    w.start()
    try:
        assert _wait(lambda: len(again) == 2)
        time.sleep(0.3)
    finally:
        w.stop()
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.webp")}
    assert sorted(n for n in after if after[n] != before[n]) == ["p0_blur.webp", "p1_blur.webp"]
    assert [r.status for r in again] == ["done", "done"]
    same: list = []
    w = Watcher(tmp_path, pipe, jobs=1, settle=0.1, on_result=same.append)
    w.start()
    time.sleep(1.0)  # a catch-up scan that finds nothing to do reports nothing
    w.stop()
    assert same == [] and {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.webp")} == after
