"""Hostile jobs against real workers and a real redis-server: the time budget, memory admission, out of memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from test_queue_worker import FAST, K, entries, job, make_image, push, workers  # noqa: F401 - fixture

MB = 1 << 20


def _noise_png(path: Path, w: int, h: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        path, compress_level=0)
    return path


def _gradient_png(path: Path, side: int = 10000) -> Path:
    """side x side pixels (100 MP by default) that compress to a few hundred KB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, side).astype(np.uint8)
    a = np.empty((side, side, 3), np.uint8)
    a[:] = ramp[:, None, None]
    a[:, :, 1] = ramp[None, :]
    Image.fromarray(a).save(path, compress_level=6)
    return path


def test_a_job_over_the_time_budget_fails_as_timeout_and_the_worker_goes_on(redis_server, workers, tmp_path):
    r = redis_server.client()
    big = _noise_png(tmp_path / "up" / "big.png", 6000, 4000)
    small = make_image(tmp_path / "up" / "small.png")
    out = tmp_path / "up" / "processed"
    push(r, job("big", big, out), job("small", small, out))
    workers.start(redis_server, "-w", "1", "--job-timeout", "1")
    workers.wait_for(lambda: r.llen(K.done) == 1 and r.llen(K.failed) == 1, 90, "one done, one failed")
    failed, = entries(r, K.failed)
    done, = entries(r, K.done)
    assert failed["jobId"] == "big" and failed["error"]["type"] == "timeout", failed
    assert "--job-timeout" in failed["error"]["message"] and failed["retryCount"] == 0
    assert r.llen(K.retry) == 0  # permanent: never retried
    assert done["jobId"] == "small" and done["worker"] == failed["worker"]
    time.sleep(1.0)  # the abandoned work would have written by now, were it allowed to
    assert sorted(os.listdir(out)) == sorted(f"small_{op}.webp" for op in ("thumbnail", "blur", "low-quality"))


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_four_100mp_jobs_under_a_small_memory_budget_run_one_at_a_time(redis_server, workers, tmp_path):
    r = redis_server.client()
    src = _gradient_png(tmp_path / "up" / "a.png")
    srcs = [src] + [src.with_name(f"{c}.png") for c in "bcd"]
    for s in srcs[1:]:
        os.link(src, s)
    out = tmp_path / "up" / "processed"
    budget = 1000 * MB  # one 100 MP thumbnail job is estimated at 600 MB: two do not fit
    w = workers.start(redis_server, "-w", "4", "--max-memory", str(budget), "--ops", "thumbnail")
    workers.wait_for(lambda: r.scard(K.workers) == 1, 60, "the worker registered")
    time.sleep(0.5)
    base = _peak_rss(w.pid)  # the worker before any job: interpreter, numpy, Pillow
    push(r, *[job(s.stem, s, out, ["thumbnail"]) for s in srcs])
    workers.wait_for(lambda: r.llen(K.done) == 4, 180, "four jobs done")
    peak = _peak_rss(w.pid)
    # The margin: the worker's own memory before any job, and 100 MB for allocator slack.
    margin = base + 100 * MB
    assert peak < budget + margin, (peak / MB, base / MB)
    # Four at once would need four decoded images (300 MB each) at the same time.
    assert peak < base + 2 * 300 * MB
    assert r.llen(K.failed) == 0


def test_out_of_memory_is_retryable_on_every_attempt(redis_server, tmp_path):
    r = redis_server.client()
    src = _gradient_png(tmp_path / "up" / "huge.png")
    out = tmp_path / "up" / "processed"
    push(r, job("huge", src, out))
    limit = 900 * MB  # the address space: the worker starts, a 100 MP decode and its outputs do not fit
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); "
            "from imgtool.cli import main; main(sys.argv[1:])" % (limit, limit))
    env = dict(os.environ, MALLOC_ARENA_MAX="1")
    env.pop("IMGTOOL_ALLOW_ROOTS", None)
    log = tmp_path / "worker.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", code, "queue", "--redis", redis_server.address, *FAST,
                                 "-w", "1", "--max-retries", "3", "-v"], stderr=f, env=env)
    try:
        deadline = time.monotonic() + 120
        while r.llen(K.failed) == 0:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        failed, = entries(r, K.failed)
        text = log.read_text()
        assert failed["error"]["type"] == "resource_exhausted", (failed, text[-2000:])
        assert failed["retryCount"] == 3  # retried on every attempt, not made permanent on the second
        assert text.count("resource_exhausted") + text.count("out of memory") >= 3
        assert "corrupt" not in text
        assert not out.exists() or os.listdir(out) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
