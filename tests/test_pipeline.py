"""The pipeline: all-or-nothing outputs, atomic writes, bounded in-flight work."""

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from imgtool.backends.cpu import CpuBackend
from imgtool.ops import OPERATIONS, Settings
from imgtool.pipeline import IN_FLIGHT_PER_WORKER, Pipeline, Task


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
