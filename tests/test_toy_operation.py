"""An operation added through the registry alone reaches process, watch and queue.

tests/toy_operation.py registers ``posterize`` and its cpu implementation,
and nothing else: its outputs are written, its parameter is a command-line
option and a validated job option, and a bad value of it is refused (a usage
error for the CLI, ``image:failed`` for a job).  The commands run as real
processes that import the toy module before imgtool's CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen import photo
from imgtool import ops
from imgtool.errors import InvalidJob
from imgtool.ops import Settings
from imgtool.pipeline import Pipeline, Task

TESTS = Path(__file__).resolve().parent
# The command line, with the toy operation registered first.
WRAPPER = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import toy_operation
from imgtool.cli import main
main(sys.argv[1:])
"""
DEADLINE = 30.0


def posterized(path: Path, levels: int) -> np.ndarray:
    """The reference: each channel of the decoded input moved to the nearest of ``levels`` values."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB")).astype(np.float64)
    step = 255 / (levels - 1)
    return (np.floor(a / step + 0.5) * step + 0.5).astype(np.uint8)  # half up, as round() of the table


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def image(path: Path, w=40, h=30, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(w, h, seed)).save(path)
    return path


def imgtool(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WRAPPER, *map(str, args)], capture_output=True, text=True,
                          timeout=60, **kw)


def wait_until(pred, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def toy():
    import toy_operation

    if ops.find(toy_operation.NAME) is None:  # imported before, then unregistered
        ops.register(toy_operation.OPERATION)
        ops.implement("cpu", toy_operation.NAME, toy_operation.posterize_cpu)
    yield toy_operation
    ops.unregister(toy_operation.NAME)


def test_the_registry_alone_makes_it_an_operation(toy, tmp_path):
    assert "posterize" in ops.names() and ops.OPERATIONS[-1] == "posterize"
    s = Settings(poster_levels=3)
    assert s.poster_levels == 3 and Settings().poster_levels == 4 and s.quality["posterize"] == 90
    assert Settings().with_job_options({"posterize": {"levels": 8, "quality": 50}}).poster_levels == 8
    for bad in ({"posterize": {"levels": 1}}, {"posterize": {"levels": 2.5}}, {"posterize": {"colours": 3}}):
        with pytest.raises(InvalidJob, match="posterize"):
            Settings().with_job_options(bad)
    with pytest.raises(InvalidJob):
        Settings(poster_levels=17)
    src = image(tmp_path / "a.png")
    settings = Settings(ops=("posterize", "low-quality"), poster_levels=3, lossless=True)
    res = Pipeline(settings, backend="cpu").process(Task(src, tmp_path / "out"))
    assert res.status == "done", res.error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_low-quality.webp", "a_posterize.webp"]
    assert np.array_equal(pixels(tmp_path / "out" / "a_posterize.webp"), posterized(src, 3))


def test_process_runs_it_and_checks_its_option(tmp_path):
    src = image(tmp_path / "up" / "a.png", 50, 20)
    r = imgtool("process", tmp_path / "up", "--backend", "cpu", "--ops", "thumbnail,posterize",
                "--poster-levels", "3", "--lossless", "--json")
    assert r.returncode == 0, r.stderr
    [line] = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(line["outputs"]) == ["posterize", "thumbnail"]
    out = tmp_path / "up" / "processed"
    assert sorted(p.name for p in out.iterdir()) == ["a_posterize.webp", "a_thumbnail.webp"]
    assert np.array_equal(pixels(out / "a_posterize.webp"), posterized(src, 3))
    bad = imgtool("process", tmp_path / "up", "--backend", "cpu", "--ops", "posterize", "--poster-levels", "99")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: ") and "--poster-levels" in bad.stderr
    help_ = imgtool("process", "--help")
    assert "--poster-levels" in help_.stdout and "--poster-quality" in help_.stdout


def test_watch_runs_it(tmp_path):
    root = tmp_path / "watched"
    root.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "watch", str(root), "--backend", "cpu",
                             "--ops", "posterize", "--poster-levels", "2", "--lossless", "--settle", "0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: proc.poll() is not None or "watching" in _peek(proc)), "watch did not start"
        src = image(tmp_path / "staging.png", seed=3)
        os.replace(src, root / "b.png")
        out = root / "processed" / "b_posterize.webp"
        assert wait_until(out.exists), "no posterize output"
        time.sleep(0.2)
        assert sorted(p.name for p in out.parent.iterdir()) == ["b_posterize.webp"]
        assert np.array_equal(pixels(out), posterized(root / "b.png", 2))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


_seen: dict[int, str] = {}


def _peek(proc) -> str:
    """What the watcher has said on stderr so far (read without blocking past its first line)."""
    import select

    text = _seen.get(proc.pid, "")
    while select.select([proc.stderr], [], [], 0)[0]:
        line = proc.stderr.readline()
        if not line:
            break
        text += line
    _seen[proc.pid] = text
    return text


def test_queue_runs_it_and_fails_a_job_with_a_bad_value(redis_server, tmp_path):
    r = redis_server.client()
    root = tmp_path / "uploads"
    src = image(root / "c.png", 32, 24, seed=5)

    def job(job_id, options):
        return json.dumps({"jobId": job_id, "inputPath": str(src), "outputDir": str(root / "processed"),
                           "operations": ["posterize"], "timestamp": 1737158400000, "retryCount": 0,
                           "options": options})

    r.rpush("image:jobs", job("good", {"posterize": {"levels": 3}}), job("bad", {"posterize": {"levels": 1}}))
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "queue", "--redis", redis_server.address,
                                 "--backend", "cpu", "--ops", "thumbnail,posterize", "--lossless",
                                 "--allow-root", str(root), "--heartbeat-ttl", "1"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        assert wait_until(lambda: r.llen("image:done") == 1 and r.llen("image:failed") == 1), \
            (tmp_path / "worker.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    [done] = [json.loads(x) for x in r.lrange("image:done", 0, -1)]
    [failed] = [json.loads(x) for x in r.lrange("image:failed", 0, -1)]
    assert done["jobId"] == "good" and done["outputs"] == {"posterize": str(root / "processed" / "good_posterize.webp")}
    assert np.array_equal(pixels(root / "processed" / "good_posterize.webp"), posterized(src, 3))
    assert failed["jobId"] == "bad" and failed["error"]["type"] == "invalid_job"
    assert "options.posterize.levels" in failed["error"]["message"]
    assert sorted(p.name for p in (root / "processed").iterdir()) == ["good_posterize.webp"]
    assert proc.returncode == 0
