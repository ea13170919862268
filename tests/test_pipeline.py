"""The pipeline: all-or-nothing outputs, atomic writes; its pool: bounded, one drain/abort and signal policy."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgtool.backends.cpu import CpuBackend
from imgtool.ops import OPERATIONS, Settings
from imgtool.pipeline import IN_FLIGHT_PER_WORKER, Interrupted, Pipeline, Pool, Signals, Task, current_task


def png(path: Path, w=64, h=48, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_process_is_all_or_nothing_when_one_write_fails(tmp_path):
    src = png(tmp_path / "a.png")
    out = tmp_path / "processed"
    out.mkdir()
    (out / "a_low-quality.webp").mkdir()  # a directory where the last output must go
    res = Pipeline(Settings(), backend=CpuBackend()).process(Task(src, out))
    assert res.status == "failed" and res.error is not None
    assert sorted(p.name for p in out.iterdir()) == ["a_low-quality.webp"]
    assert (out / "a_low-quality.webp").is_dir()


def test_symlink_at_output_path_is_replaced_not_followed(tmp_path):
    src = png(tmp_path / "a.png")
    out = tmp_path / "processed"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "a_thumbnail.webp").symlink_to(victim)
    res = Pipeline(Settings(), backend=CpuBackend()).process(Task(src, out))
    assert res.status == "done"
    assert victim.read_text() == "keep me"
    assert not (out / "a_thumbnail.webp").is_symlink()
    with Image.open(out / "a_thumbnail.webp") as im:
        assert im.format == "WEBP"


def test_up_to_date_and_skip(tmp_path):
    src = png(tmp_path / "a.png")
    pipe = Pipeline(Settings(ops=("thumbnail",)), backend=CpuBackend())
    task = Task(src, tmp_path / "processed")
    assert not pipe.up_to_date(task)
    assert pipe.process(task).status == "done"
    assert pipe.up_to_date(task)
    assert pipe.process(task, force=False).status == "skipped"
    os.utime(src, ns=(src.stat().st_mtime_ns + 10**9,) * 2)
    assert not pipe.up_to_date(task)


def test_missing_input_is_a_retryable_failure(tmp_path):
    res = Pipeline(Settings(), backend=CpuBackend()).process(Task(tmp_path / "nope.jpg", tmp_path / "o"))
    assert res.status == "failed" and res.error.retryable and "nope.jpg" in str(res.error)
    assert not (tmp_path / "o").exists()


def test_map_keeps_a_bounded_number_of_tasks_in_flight(tmp_path):
    src = png(tmp_path / "a.png", 400, 300)
    pipe = Pipeline(Settings(), backend=CpuBackend(), jobs=2)
    taken = 0
    lock = threading.Lock()
    max_ahead = 0

    def tasks():
        nonlocal taken
        for i in range(30):
            with lock:
                taken += 1
            yield Task(src, tmp_path / "out", job_id=f"j{i}")

    done = 0
    for res in pipe.map(tasks(), force=True):
        assert res.status == "done"
        done += 1
        max_ahead = max(max_ahead, taken - done)
    assert done == 30
    # The queue, one task per busy worker, and the one being handed over.
    assert max_ahead <= IN_FLIGHT_PER_WORKER * 2 + 2 + 1
    assert len(list((tmp_path / "out").iterdir())) == 30 * len(OPERATIONS)


def test_map_reports_every_task_exactly_once(tmp_path):
    srcs = [png(tmp_path / f"{i}.png", 30 + i, 20, seed=i) for i in range(12)]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    tasks = [Task(s, tmp_path / "processed") for s in srcs + [tmp_path / "bad.png"]]
    results = list(Pipeline(Settings(), backend=CpuBackend(), jobs=3).map(tasks, force=True))
    assert sorted(r.task.job_id for r in results) == sorted(t.job_id for t in tasks)
    assert [r.task.job_id for r in results if r.status == "failed"] == ["bad"]


# ---- the pool: bounded, one drain/abort policy, the hooks for memory and time budgets ----------

def _wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_pool_admits_only_so_many_images_in_flight():
    pool = Pool(2)
    a, b = pool.acquire(), pool.acquire()
    assert pool.active == 2 and pool.acquire(timeout=0.05) is None  # a worker each: full
    ahead = [pool.acquire(timeout=0, upto=pool.capacity) for _ in range(pool.capacity - 2)]
    assert all(ahead) and pool.acquire(timeout=0, upto=pool.capacity) is None
    for s in ahead + [a]:
        s.release()
    a.release()  # a second release gives nothing back twice
    assert pool.active == 1 and pool.acquire(timeout=0) is not None
    b.release()


def test_drain_lets_work_in_flight_finish_and_admits_nothing_new():
    pool = Pool(2)
    release = threading.Event()
    finished = []

    def work(i):
        release.wait(10)
        finished.append(i)
        return i

    results = []
    for i in range(2):
        pool.submit(lambda i=i: work(i), pool.acquire(), on_done=lambda r, e: results.append((r, e)))
    drained = []
    t = threading.Thread(target=lambda: drained.append(pool.drain()))
    t.start()
    _wait(lambda: pool.closing)
    assert pool.acquire(timeout=0) is None  # closing: nothing new
    release.set()
    t.join(10)
    assert drained == [True] and sorted(finished) == [0, 1] and sorted(results) == [(0, None), (1, None)]
    assert pool.active == 0 and not pool.aborting


def test_a_drain_past_its_grace_aborts_the_tasks_at_their_next_step():
    pool = Pool(1)
    outcome = []

    def endless():
        while True:
            current_task().check()  # what the pipeline does between steps
            time.sleep(0.01)

    pool.submit(endless, pool.acquire(), on_done=lambda r, e: outcome.append(type(e)))
    pool.close(grace=0.2)
    start = time.monotonic()
    assert pool.drain() is False
    assert pool.aborting and 0.15 < time.monotonic() - start < 5
    _wait(lambda: outcome)
    assert outcome == [Interrupted] and pool.wait_idle(5)


def test_signals_first_drains_second_aborts_then_handlers_come_back():
    pool = Pool(1)
    said = []
    before = signal.getsignal(signal.SIGTERM)
    with Signals(pool, grace=None, on_drain=lambda n: said.append(("drain", n)),
                 on_abort=lambda n: said.append(("abort", n))) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        _wait(lambda: signals.count == 1)
        assert pool.closing and not pool.aborting and signals.draining.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        _wait(lambda: signals.count == 2)
        assert pool.aborting and signals.aborted
    assert said == [("drain", "SIGTERM"), ("abort", "SIGINT")]
    assert signal.getsignal(signal.SIGTERM) is before


def test_grace_zero_aborts_on_the_first_signal():
    pool = Pool(1)
    with Signals(pool, grace=0) as signals:
        os.kill(os.getpid(), signal.SIGINT)
        _wait(lambda: signals.count == 1)
    assert pool.closing and pool.aborting


def test_tasks_declare_their_decoded_size_and_a_deadline_can_be_overrun(tmp_path):
    pool = Pool(1, time_budget=0.05)
    seen = {}
    go = threading.Event()

    def task():
        ctx = current_task()
        ctx.admit(1234)
        seen["admitted"] = pool.admitted_bytes
        seen["deadline"] = ctx.deadline - ctx.started
        go.wait(10)

    pool.submit(task, pool.acquire())
    _wait(lambda: "admitted" in seen)
    assert seen["admitted"] == 1234 and seen["deadline"] == pytest.approx(0.05)
    _wait(lambda: pool.overdue())
    [late] = pool.overdue()
    assert late.overran
    go.set()
    assert pool.wait_idle(5) and pool.admitted_bytes == 0 and pool.overdue() == []
    # The pipeline declares what the header says the decoded image holds.
    src = png(tmp_path / "a.png", 30, 20)
    pipe = Pipeline(Settings(ops=("blur",)), backend=CpuBackend(), jobs=1)
    declared = []
    real = pipe.pool._admit
    pipe.pool._admit = lambda ctx, n: (declared.append(n), real(ctx, n))
    assert [r.status for r in pipe.map([Task(src, tmp_path / "o")], force=True)] == ["done"]
    assert declared == [30 * 20 * 3]
