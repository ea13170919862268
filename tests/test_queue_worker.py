"""imgtool queue end to end, against a real redis-server: the protocol, and no job ever lost.

Workers run as real processes (``imgtool queue``).  Where a test needs jobs to
stay in flight for a while, or a job that kills its worker, the worker runs
through WRAPPER, which slows Pipeline.process down or SIGKILLs the process on
one jobId; everything else is the real command.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import RedisServer, free_port
from imagegen import photo
from imgtool.ops import job_id_for
from imgtool.queue.keys import Keys
from imgtool.queue.protocol import Protocol
from imgtool.pipeline import list_inputs as walk

K = Keys()
OPS = ["thumbnail", "blur", "low-quality"]
# Short timings so the tests run in seconds; each is an option of `imgtool queue`.
FAST = ["--backend", "cpu", "--effort", "0", "--heartbeat-ttl", "1", "--retry-base", "0.05",
        "--retry-cap", "0.2", "--drain-timeout", "10"]

WRAPPER = r"""
import os, signal, sys, time
from imgtool import pipeline

delay = float(os.environ.get("IMGTOOL_TEST_JOB_DELAY", "0"))
kill_on = os.environ.get("IMGTOOL_TEST_KILL_ON_JOB")
if delay or kill_on:
    original = pipeline.Pipeline.process

    def process(self, task, force=True):
        if kill_on and task.job_id == kill_on:
            os.kill(os.getpid(), signal.SIGKILL)
        end = time.monotonic() + delay
        while time.monotonic() < end:  # like real work, it notices a stop
            if self.stop_event.is_set():
                raise pipeline.Interrupted()
            time.sleep(0.01)
        return original(self, task, force)

    pipeline.Pipeline.process = process

from imgtool.cli import main
main(sys.argv[1:])
"""


# ---------------------------------------------------------------------------- helpers


class WorkerProcess:
    def __init__(self, server: RedisServer | str, log: Path, args, env=None):
        address = server if isinstance(server, str) else server.address
        self.log = log
        cmd = [sys.executable, "-c", WRAPPER, "queue", "--redis", address, *FAST, *args]
        full_env = dict(os.environ, **(env or {}))
        full_env.pop("IMGTOOL_ALLOW_ROOTS", None)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=f, env=full_env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


class Workers:
    """Starts worker processes for a test; kills what is left; shows their logs on a timeout."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.started: list[WorkerProcess] = []

    def start(self, server, *args, env=None) -> WorkerProcess:
        w = WorkerProcess(server, self.tmp / f"worker-{len(self.started)}.log", args, env)
        self.started.append(w)
        return w

    def logs(self) -> str:
        return "\n".join(f"--- worker {i} (pid {w.pid}) ---\n{w.text()[-3000:]}" for i, w in enumerate(self.started))

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")
            time.sleep(0.05)

    def stop_all(self) -> None:
        for w in self.started:
            if w.alive():
                w.proc.kill()
                w.proc.wait(timeout=10)


@pytest.fixture
def workers(tmp_path):
    ws = Workers(tmp_path)
    yield ws
    ws.stop_all()


def entries(r, key) -> list[dict]:
    return [json.loads(x) for x in r.lrange(key, 0, -1)]


def inflight_keys(r) -> list[bytes]:
    return list(r.scan_iter(match="image:worker:*:inflight"))


def full_inflight(r, n: int):
    """The in-flight key holding ``n`` jobs, if any."""
    return next((k for k in inflight_keys(r) if r.llen(k) == n), None)


def make_image(path: Path, w=64, h=48, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(w, h, seed)).save(path)
    return path


def job(job_id, src, out_dir, operations=OPS, **extra) -> dict:
    d = {"jobId": job_id, "inputPath": str(src), "outputDir": str(out_dir), "operations": list(operations),
         "timestamp": 1737158400000, "retryCount": 0}
    d.update(extra)
    return d


def push(r, *jobs_) -> None:
    r.rpush(K.jobs, *[j if isinstance(j, bytes) else json.dumps(j) for j in jobs_])


def assert_outputs_valid(entry: dict, size: tuple[int, int]) -> None:
    w, h = size
    expect = {"thumbnail": (w, h) if w <= 256 else (256, max(1, round(h * 256 / w))),
              "blur": (w, h), "low-quality": (max(1, w // 2), max(1, h // 2))}
    assert sorted(entry["outputs"]) == sorted(entry["operations"])
    for op, path in entry["outputs"].items():
        assert path == os.path.join(entry["outputDir"], f"{entry['jobId']}_{op}.webp")
        with Image.open(path) as im:
            assert im.format == "WEBP" and im.size == expect[op], (path, im.size)


def metrics_of(port: int) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def healthz(port: int) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


# ---------------------------------------------------------------------------- the protocol itself


def test_scripts_are_atomic_and_safe_to_repeat(redis_server):
    """The Lua steps on their own: finish once, promote in due order, release keeps order."""
    r = redis_server.client()
    p = Protocol(r, K, done_cap=3)
    p.beat("w1", 10_000, {"state": "idle"})
    push(r, b"j1", b"j2", b"j3")
    assert [p.take("w1", 0.1) for _ in range(3)] == [b"j1", b"j2", b"j3"]  # FIFO
    assert p.finish("w1", b"j1", "done", b"e1") is True
    assert p.finish("w1", b"j1", "done", b"e1") is False  # a repeat records nothing
    assert r.lrange(K.done, 0, -1) == [b"e1"]
    # retries: in image:retry and the schedule together; due ones to the head, earliest first
    push(r, b"pending")
    assert p.finish("w1", b"j2", "retry", b"j2-retry-late", retry_delay_ms=200)
    assert p.finish("w1", b"j3", "retry", b"j3-retry-soon", retry_delay_ms=0)
    assert r.llen(K.retry) == 2 and r.zcard(K.retry_schedule) == 2
    assert p.promote_due() == 1  # only the one that is due
    assert r.lrange(K.jobs, 0, -1) == [b"j3-retry-soon", b"pending"]
    assert r.lrange(K.retry, 0, -1) == [b"j2-retry-late"]
    time.sleep(0.25)
    assert p.promote_due() == 1
    assert r.lrange(K.jobs, 0, -1) == [b"j2-retry-late", b"j3-retry-soon", b"pending"]
    # several due at once: the earliest due ends up first
    for name, delay in ((b"q-second", 20), (b"q-first", 10), (b"q-third", 30)):
        r.rpush(K.inflight("w1"), name)  # as if taken
        p.finish("w1", name, "retry", name + b"-r", retry_delay_ms=delay)
    time.sleep(0.05)
    assert p.promote_due() == 3
    assert r.lrange(K.jobs, 0, 2) == [b"q-first-r", b"q-second-r", b"q-third-r"]
    r.delete(K.jobs)
    assert r.llen(K.retry) == 0 and r.zcard(K.retry_schedule) == 0
    # an entry put in image:retry by hand gets a due time from the sweep
    r.rpush(K.retry, b"old-worker-leftover")
    assert p.sweep_retry() == 1 and p.sweep_retry() == 0
    assert p.promote_due() == 1 and r.lindex(K.jobs, 0) == b"old-worker-leftover"
    # the done list is capped
    r.delete(K.jobs)
    push(r, *[b"c%d" % i for i in range(5)])
    for i in range(5):
        assert p.take("w1", 0.1) == b"c%d" % i
        p.finish("w1", b"c%d" % i, "done", b"d%d" % i)
    assert r.lrange(K.done, 0, -1) == [b"d2", b"d3", b"d4"]
    # release puts what is in flight back at the head, in order, and deregisters
    push(r, b"x1", b"x2", b"x3")
    p.take("w1", 0.1), p.take("w1", 0.1)
    assert p.release("w1") == 2
    assert r.lrange(K.jobs, 0, -1) == [b"x1", b"x2", b"x3"]
    assert not r.exists(K.heartbeat("w1")) and r.scard(K.workers) == 0


def test_recovery_waits_for_the_heartbeat_and_counts_poison_pills(redis_server):
    r = redis_server.client()
    p = Protocol(r, K)
    p.beat("dead", 300, {"state": "busy"})
    push(r, b"a", b"b", b"later")
    p.take("dead", 0.1), p.take("dead", 0.1)
    assert p.dead_workers() == []  # heartbeat still there
    assert p.recover("dead", 3, lambda x: b"F") == (0, 0)
    time.sleep(0.4)
    assert p.dead_workers() == ["dead"]
    assert p.recover("dead", 3, lambda x: b"F") == (2, 0)
    assert r.lrange(K.jobs, 0, -1) == [b"a", b"b", b"later"]  # back at the head, in order
    assert r.scard(K.workers) == 0  # reaped
    # the same payload lost with its worker again and again: more than max times -> failed
    for n in range(1, 5):
        wid = f"dead{n}"
        r.delete(K.jobs)
        push(r, b"p")
        p.beat(wid, 1, {"state": "busy"})
        assert p.take(wid, 0.1) == b"p"
        time.sleep(0.01)
        assert p.recover(wid, 3, lambda x: b"poison " + x) == ((1, 0) if n <= 3 else (0, 1))
    assert r.lrange(K.failed, 0, -1) == [b"poison p"] and r.llen(K.jobs) == 0
    assert r.hlen(K.recoveries) == 2  # "a" and "b" were recovered once and have not finished
    p.beat("w", 10_000, {"state": "idle"})
    push(r, b"a")
    p.take("w", 0.1)
    p.finish("w", b"a", "done", b"ok")
    assert r.hlen(K.recoveries) == 1  # a finished job's count is dropped


# ---------------------------------------------------------------------------- end to end


SEED_ID = "a1b2c3d4-e5f6-7890-abcd-ef1234567890-image"


def test_the_seed_example_job_is_processed_fifo(redis_server, workers, tmp_path):
    r = redis_server.client()
    base = tmp_path / "absolute" / "path" / "to"  # the seed's /absolute/path/to, under tmp
    src = make_image(base / "uploads" / "userId" / f"{SEED_ID}.jpg", 320, 200)
    seed_payload = json.dumps({
        "jobId": SEED_ID,
        "inputPath": f"{base}/uploads/userId/{SEED_ID}.jpg",
        "outputDir": f"{base}/uploads/userId/processed",
        "operations": ["thumbnail", "blur", "low-quality"],
        "timestamp": 1737158400000,
        "retryCount": 0,
    })
    others = [job(f"next-{i}", make_image(base / "uploads" / "userId" / f"next-{i}.png", seed=i),
                  base / "uploads" / "userId" / "processed", ["thumbnail"], userId="u9") for i in range(5)]
    r.rpush(K.jobs, seed_payload)
    push(r, *others)
    w = workers.start(redis_server, "-w", "1", "--allow-root", str(base / "uploads"))
    workers.wait_for(lambda: r.llen(K.done) == 6, 30, "six jobs done")
    done = entries(r, K.done)
    assert [d["jobId"] for d in done] == [SEED_ID] + [f"next-{i}" for i in range(5)]  # FIFO
    first = done[0]
    assert {k: first[k] for k in json.loads(seed_payload)} == json.loads(seed_payload)
    assert first["status"] == "done" and first["worker"] and first["durationMs"] >= 0
    assert first["finishedAt"] >= 1737158400000
    assert first["outputs"] == {op: f"{base}/uploads/userId/processed/{SEED_ID}_{op}.webp" for op in OPS}
    assert_outputs_valid(first, (320, 200))
    assert sorted(os.listdir(src.parent / "processed")) == sorted(
        [f"{SEED_ID}_{op}.webp" for op in OPS] + [f"next-{i}_thumbnail.webp" for i in range(5)])
    assert done[1]["userId"] == "u9"  # unknown fields kept
    assert r.llen(K.jobs) == r.llen(K.failed) == r.llen(K.retry) == 0
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert inflight_keys(r) == [] and r.scard(K.workers) == 0 and not list(r.scan_iter("image:worker:*"))


def test_invalid_jobs_land_in_failed_and_nothing_is_written_outside(redis_server, workers, tmp_path):
    r = redis_server.client()
    root = tmp_path / "uploads"
    good = make_image(root / "u1" / "good.png")
    out = root / "u1" / "processed"
    outside = tmp_path / "outside"
    secret = make_image(outside / "secret.png")
    (root / "u1" / "link.png").symlink_to(secret)
    (root / "u1" / "outlink").symlink_to(outside, target_is_directory=True)
    ok = job("good", good, out)

    def variant(**changes):
        d = dict(ok)
        for k, v in changes.items():
            if v is None:
                d.pop(k)
            else:
                d[k] = v
        return json.dumps(d).encode()

    cases = {
        "bad json": (b"{this is not json", "not JSON"),
        "not utf-8": (b'{"jobId": "\xff"}', "UTF-8"),
        "json array": (b'["good"]', "JSON object"),
        "missing jobId": (variant(jobId=None), "jobId"),
        "missing inputPath": (variant(inputPath=None), "inputPath"),
        "missing outputDir": (variant(outputDir=None), "outputDir"),
        "missing operations": (variant(operations=None), "operations"),
        "jobId number": (variant(jobId=42), "jobId"),
        "operations string": (variant(operations="thumbnail"), "operations"),
        "retryCount string": (variant(retryCount="1"), "retryCount"),
        "jobId with /": (variant(jobId="../../evil"), "jobId"),
        "jobId with ..": (variant(jobId="a..b"), "jobId"),
        "jobId with NUL": (variant(jobId="a\0b"), "jobId"),
        "relative inputPath": (variant(inputPath="u1/good.png"), "absolute"),
        "relative outputDir": (variant(outputDir="processed"), "absolute"),
        "unknown operation": (variant(operations=["thumbnail", "sharpen"]), "sharpen"),
        "empty operations": (variant(operations=[]), "empty"),
        "bad options": (variant(options={"thumbnail": {"width": -5}}), "width"),
        "10 MB payload": (variant(padding="x" * 10_000_000), "over the limit"),
        "input outside": (variant(inputPath=str(secret)), "outside the allowed roots"),
        "input through ..": (variant(inputPath=f"{root}/u1/../../outside/secret.png"), "outside the allowed"),
        "input through a symlink": (variant(inputPath=str(root / "u1" / "link.png")), "outside the allowed"),
        "output outside": (variant(outputDir=str(outside)), "outside the allowed"),
        "output through ..": (variant(outputDir=f"{root}/../outside/new"), "outside the allowed"),
        "output through a symlink": (variant(outputDir=str(root / "u1" / "outlink" / "p")), "outside the allowed"),
    }
    r.rpush(K.jobs, *[payload for payload, _ in cases.values()])
    push(r, ok)
    w = workers.start(redis_server, "-w", "1", "--allow-root", str(root))
    workers.wait_for(lambda: r.llen(K.done) == 1 and r.llen(K.failed) == len(cases), 30, "all jobs recorded")
    failed = entries(r, K.failed)
    assert len(failed) == len(cases)  # one entry per bad job, in the order pushed
    for f, (name, (payload, reason)) in zip(failed, cases.items()):
        assert reason in f["error"]["message"], (name, f["error"])
        assert f["status"] == "failed" and f["error"]["type"] in ("invalid_job", "path_not_allowed")
        assert f["retryCount"] == 0 and isinstance(f["failedAt"], int)
    big = [f for f in failed if "over the limit" in f["error"]["message"]][0]
    assert len(json.dumps(big)) < 10_000  # the 10 MB payload is not copied into image:failed
    assert [f["payload"] for f in failed if "payload" in f][:1] == ["{this is not json"]
    assert w.alive()  # the worker keeps running
    assert sorted(p.name for p in outside.rglob("*")) == ["secret.png"]  # nothing written outside
    webps = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.webp"))
    assert webps == sorted(f"uploads/u1/processed/good_{op}.webp" for op in OPS)
    assert_outputs_valid(entries(r, K.done)[0], (64, 48))


def test_web_output_options_are_validated_and_applied(redis_server, workers, tmp_path):
    """The blur's sigma, the thumbnail's widths, the format and the AVIF speed as job options: a bad
    value goes to image:failed with the reason; good ones give their outputs, the skipped widths and
    the placeholders in image:done."""
    from imgtool.backends.cpu import CpuBackend
    from imgtool.ops import Settings

    r = redis_server.client()
    root = tmp_path / "uploads"
    src = make_image(root / "u1" / "pic.png", 100, 80)
    out = root / "u1" / "processed"
    bad = {
        "sigma a word": ({"blur": {"sigma": "soft"}}, "options.blur.sigma must be 'auto', '3x3' or a number"),
        "sigma 0": ({"blur": {"sigma": 0}}, "options.blur.sigma must be > 0 and <= 50"),
        "sigma 51": ({"blur": {"sigma": 51}}, "options.blur.sigma must be > 0 and <= 50"),
        "sigma as text": ({"blur": {"sigma": "12"}}, "options.blur.sigma must be"),
        "width twice": ({"thumbnail": {"width": [256, 640, 256]}}, "options.thumbnail.width 256 is given twice"),
        "no widths": ({"thumbnail": {"width": []}}, "options.thumbnail.width is an empty list"),
        "width 0 in a list": ({"thumbnail": {"width": [64, 0]}}, "options.thumbnail.width must be between 1"),
        "nine widths": ({"thumbnail": {"width": list(range(10, 100, 10))}}, "over the limit of 8"),
        "width text": ({"thumbnail": {"width": ["64"]}}, "options.thumbnail.width must be an integer"),
        "format gif": ({"format": "gif"}, "options.format must be one of webp, avif"),
        "avif speed 11": ({"format": "avif", "avif_speed": 11}, "options.avif_speed must be between 0 and 10"),
        "avif speed text": ({"avif_speed": "fast"}, "options.avif_speed must be an integer"),
        "avif on a lossless worker": ({"format": "avif"}, "cannot be lossless"),
    }
    push(r, *[job(f"bad-{i}", src, out, options=options) for i, (options, _) in enumerate(bad.values())])
    push(r, job("sharp", src, out, ["thumbnail", "blur"],
                options={"thumbnail": {"width": [64, 32, 128]}, "blur": {"sigma": "3x3"}}))
    lossless = workers.start(redis_server, "-w", "1", "--allow-root", str(root), "--lossless")
    workers.wait_for(lambda: r.llen(K.failed) == len(bad) and r.llen(K.done) == 1, 30, "the lossless worker's jobs")
    lossless.signal(signal.SIGTERM)
    assert lossless.wait(15) == 0
    for entry, (name, (_options, reason)) in zip(entries(r, K.failed), bad.items()):
        assert entry["status"] == "failed" and entry["error"]["type"] == "invalid_job", name
        assert reason in entry["error"]["message"], (name, entry["error"])
    assert sorted(p.name for p in out.iterdir()) == ["sharp_blur.webp", "sharp_thumbnail-32.webp",
                                                     "sharp_thumbnail.webp"]
    done = entries(r, K.done)[0]
    assert done["outputs"] == {"thumbnail": f"{out}/sharp_thumbnail.webp",
                               "thumbnail-32": f"{out}/sharp_thumbnail-32.webp", "blur": f"{out}/sharp_blur.webp"}
    assert list(done["skippedOutputs"]) == ["thumbnail-128"] and (done["width"], done["height"]) == (100, 80)
    assert set(done["placeholders"]) == {"thumbhash", "blurhash"}
    pixels = np.asarray(Image.open(src).convert("RGB"))
    made = CpuBackend().apply(pixels, Settings(ops=("thumbnail", "blur"), thumb_width=(64, 32), blur_sigma="3x3"))
    for key, path in done["outputs"].items():
        with Image.open(path) as im:  # lossless: exactly the computed pixels
            assert np.array_equal(np.asarray(im.convert("RGB")), made[key]), key

    push(r, job("small", src, out, ["thumbnail", "low-quality"],
                options={"format": "avif", "avif_speed": 9, "thumbnail": {"width": [48, 96]}}))
    workers.start(redis_server, "-w", "1", "--allow-root", str(root))
    workers.wait_for(lambda: r.llen(K.done) == 2, 30, "the AVIF job")
    small = entries(r, K.done)[1]
    assert small["status"] == "done" and "skippedOutputs" not in small
    sizes = {"thumbnail": (48, 38), "thumbnail-96": (96, 77), "low-quality": (50, 40)}
    assert sorted(small["outputs"]) == sorted(sizes)
    for key, size in sizes.items():
        assert small["outputs"][key] == f"{out}/small_{key}.avif"
        with Image.open(small["outputs"][key]) as im:
            assert im.format == "AVIF" and im.size == size


def test_missing_input_is_retried_until_it_appears(redis_server, workers, tmp_path):
    r = redis_server.client()
    root = tmp_path / "uploads"
    late = root / "late.png"
    never = root / "never.png"
    out = root / "processed"
    make_image(root / "old.png")
    # An entry in image:retry without a due time, as the old worker left them.
    r.rpush(K.retry, json.dumps(job("old", root / "old.png", out, ["thumbnail"], retryCount=1)))
    push(r, job("late", late, out, ["thumbnail"]), job("never", never, out, ["thumbnail"]))
    w = workers.start(redis_server, "-w", "2", "--max-retries", "5", "--retry-base", "0.2",
                      "--retry-cap", "1.0", "--allow-root", str(tmp_path))

    def late_waiting():
        for member, due in r.zrange(K.retry_schedule, 0, -1, withscores=True):
            payload = member.split(b"|", 1)[1]
            if json.loads(payload)["jobId"] == "late":
                return payload, due
        return None

    payload, due = workers.wait_for(late_waiting, 20, "the late job in the retry schedule")
    assert payload in r.lrange(K.retry, 0, -1)  # in image:retry and the schedule together
    assert json.loads(payload)["retryCount"] >= 1
    server_ms = r.time()[0] * 1000
    assert due <= server_ms + 1000 + 100  # within the cap of its backoff
    make_image(late)
    workers.wait_for(lambda: r.llen(K.failed) == 1 and r.llen(K.done) == 2, 30, "late done, never failed")
    done = {d["jobId"]: d for d in entries(r, K.done)}
    assert done["late"]["retryCount"] >= 1
    assert done["old"]["retryCount"] == 1
    assert_outputs_valid(done["late"], (64, 48))
    [failed] = entries(r, K.failed)
    assert failed["jobId"] == "never" and failed["retryCount"] == 5
    assert failed["error"]["type"] == "input_not_found" and "never.png" in failed["error"]["message"]
    assert r.llen(K.retry) == 0 and r.zcard(K.retry_schedule) == 0 and r.llen(K.jobs) == 0
    assert "retry 5 of never" in w.text()


def test_sigkill_with_jobs_in_flight_then_restart_loses_nothing(redis_server, workers, tmp_path):
    r = redis_server.client()
    src = make_image(tmp_path / "in" / "a.png")
    n = 40
    push(r, *[job(f"k{i:03d}", src, tmp_path / "out", ["thumbnail", "low-quality"]) for i in range(n)])
    first = workers.start(redis_server, "-w", "4", env={"IMGTOOL_TEST_JOB_DELAY": "0.3"})
    key = workers.wait_for(lambda: full_inflight(r, 4) if r.llen(K.done) >= 4 else None, 30,
                           "four jobs in flight")
    first.signal(signal.SIGKILL)
    first.wait(10)
    stranded = r.llen(key)
    assert stranded >= 1
    second = workers.start(redis_server, "-w", "4")
    workers.wait_for(lambda: r.llen(K.done) + r.llen(K.failed) == n and not inflight_keys(r), 30,
                     "every job recorded")
    ids = [d["jobId"] for d in entries(r, K.done)]
    assert sorted(ids) == [f"k{i:03d}" for i in range(n)]  # each once: none lost, none twice
    assert r.llen(K.failed) == 0 and r.llen(K.jobs) == 0
    workers.wait_for(lambda: r.scard(K.workers) == 1, 10, "the dead worker deregistered")
    assert "is dead (no heartbeat): put back" in second.text()
    second.signal(signal.SIGTERM)
    assert second.wait(15) == 0


def test_a_job_that_kills_its_worker_becomes_a_poison_pill(redis_server, workers, tmp_path):
    r = redis_server.client()
    src = make_image(tmp_path / "in" / "a.png")
    push(r, job("poison", src, tmp_path / "out", ["thumbnail"]),
         *[job(f"fine{i}", src, tmp_path / "out", ["thumbnail"]) for i in range(2)])
    deaths = 0
    env = {"IMGTOOL_TEST_KILL_ON_JOB": "poison"}
    while not r.llen(K.failed):
        w = workers.start(redis_server, "-w", "1", "--max-recoveries", "2", env=env)
        workers.wait_for(lambda: not w.alive() or r.llen(K.failed), 30, "the worker to die or fail the job")
        if not w.alive():
            assert w.proc.returncode == -signal.SIGKILL
            deaths += 1
        assert deaths <= 3, workers.logs()
    assert deaths == 3  # taken, then recovered twice (the limit); the third recovery fails it
    [failed] = entries(r, K.failed)
    assert failed["jobId"] == "poison" and failed["error"]["type"] == "poison_pill"
    workers.wait_for(lambda: r.llen(K.done) == 2, 20, "the other jobs done")
    assert r.hlen(K.recoveries) == 0


def test_redis_killed_and_restarted_mid_run(redis_server_aof, workers, tmp_path):
    server = redis_server_aof
    r = server.client()
    src = make_image(tmp_path / "in" / "a.png")
    n = 30
    push(r, *[job(f"r{i:03d}", src, tmp_path / "out", ["thumbnail"]) for i in range(n)])
    port = free_port()
    w = workers.start(server, "-w", "3", "--metrics-port", str(port), env={"IMGTOOL_TEST_JOB_DELAY": "0.15"})
    workers.wait_for(lambda: r.llen(K.done) >= 5, 30, "some jobs done")
    workers.wait_for(lambda: healthz(port) == 200, 10, "/healthz 200")
    server.kill(signal.SIGKILL)
    workers.wait_for(lambda: healthz(port) == 503, 10, "/healthz 503 while Redis is down")
    time.sleep(1.0)  # jobs finish meanwhile and wait to be recorded
    assert w.alive()
    server.start()
    r = server.client()
    workers.wait_for(lambda: r.llen(K.done) == n and not any(r.llen(k) for k in inflight_keys(r)), 40,
                     "every job recorded after the restart")
    assert sorted(d["jobId"] for d in entries(r, K.done)) == [f"r{i:03d}" for i in range(n)]
    assert r.llen(K.jobs) == r.llen(K.failed) == 0
    workers.wait_for(lambda: healthz(port) == 200, 10, "/healthz 200 again")
    log = w.text()
    assert "unreachable" in log and "working again" in log
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0


def test_worker_started_while_redis_is_down_waits_for_it(workers, tmp_path):
    server = RedisServer(tmp_path / "late-redis")
    w = workers.start(server)
    time.sleep(1.5)
    assert w.alive()  # never exits on a connection error
    server.start()
    try:
        r = server.client()
        src = make_image(tmp_path / "in" / "a.png")
        push(r, job("a", src, tmp_path / "out", ["blur"]))
        workers.wait_for(lambda: r.llen(K.done) == 1, 30, "the job done once Redis is up")
        w.signal(signal.SIGINT)
        assert w.wait(15) == 0
    finally:
        server.kill()


def test_sigterm_finishes_in_flight_jobs_and_leaves_the_rest(redis_server, workers, tmp_path):
    r = redis_server.client()
    src = make_image(tmp_path / "in" / "a.png")
    n = 10
    push(r, *[job(f"t{i}", src, tmp_path / "out", ["thumbnail"]) for i in range(n)])
    w = workers.start(redis_server, "-w", "2", "--drain-timeout", "8", env={"IMGTOOL_TEST_JOB_DELAY": "1.0"})
    key = workers.wait_for(lambda: full_inflight(r, 2), 20, "two jobs in flight")
    held = [json.loads(x)["jobId"] for x in r.lrange(key, 0, -1)]
    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert time.monotonic() - sent < 8  # within the drain timeout
    done = [d["jobId"] for d in entries(r, K.done)]
    pending = [json.loads(x)["jobId"] for x in r.lrange(K.jobs, 0, -1)]
    assert set(held) <= set(done)  # in-flight jobs finished
    assert sorted(done + pending) == sorted(f"t{i}" for i in range(n))  # nothing lost
    assert pending == sorted(pending) and len(pending) >= n - 4  # the rest stay pending, in order
    assert inflight_keys(r) == [] and r.scard(K.workers) == 0


@pytest.mark.parametrize("how", ["second signal", "drain timeout"])
def test_unfinished_jobs_go_back_at_once(redis_server, workers, tmp_path, how):
    r = redis_server.client()
    src = make_image(tmp_path / "in" / "a.png")
    push(r, *[job(f"s{i}", src, tmp_path / "out", ["thumbnail"]) for i in range(4)])
    w = workers.start(redis_server, "-w", "2", "--drain-timeout", "1" if how == "drain timeout" else "60",
                      env={"IMGTOOL_TEST_JOB_DELAY": "60"})
    workers.wait_for(lambda: full_inflight(r, 2), 20, "two jobs in flight")
    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    if how == "second signal":
        time.sleep(0.3)
        w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert time.monotonic() - sent < 5
    assert [json.loads(x)["jobId"] for x in r.lrange(K.jobs, 0, -1)] == ["s0", "s1", "s2", "s3"]
    assert r.llen(K.done) == 0 and inflight_keys(r) == [] and r.scard(K.workers) == 0


def test_two_workers_four_jobs_each_500_jobs_once_each(redis_server, workers, tmp_path):
    r = redis_server.client()
    sizes = [(64 + 7 * i, 48 + 5 * i) for i in range(10)]
    srcs = [make_image(tmp_path / "up" / f"img{i}.png", w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    n = 500
    jobs_ = [job(f"m{i:03d}", srcs[i % 10], tmp_path / "up" / "processed", OPS, userId=f"u{i}") for i in range(n)]
    invalid = [b"not json %d" % i for i in range(10)]
    mixed = jobs_[:250] + invalid + jobs_[250:]
    push(r, *mixed)
    ports = [free_port(), free_port()]
    ws = [workers.start(redis_server, "-w", "4", "--metrics-port", str(p), "--allow-root", str(tmp_path))
          for p in ports]
    workers.wait_for(lambda: r.llen(K.done) + r.llen(K.failed) == n + 10, 90, "all 510 jobs recorded")
    done = entries(r, K.done)
    counts = collections.Counter(d["jobId"] for d in done)
    assert len(done) == n and set(counts.values()) == {1} and len(counts) == n
    assert r.llen(K.failed) == 10 and r.llen(K.jobs) == 0
    by_id = {j["jobId"]: i for i, j in enumerate(jobs_)}
    for d in done:
        i = by_id[d["jobId"]]
        assert d["userId"] == f"u{i}"
        assert_outputs_valid(d, sizes[i % 10])
    assert len(list((tmp_path / "up" / "processed").iterdir())) == 3 * n  # no temporary files left
    assert {d["worker"] for d in done} == {
        w for w in (b.decode() for b in r.smembers(K.workers))}  # both took part
    # /metrics: Prometheus text whose counters add up to the lists
    def samples():
        return [metrics_of(p) for p in ports]

    def total(ms, result):
        return sum(m.get(("imgtool_queue_jobs_total", (("result", result),)), 0) for m in ms)

    ms = workers.wait_for(lambda: (lambda m: m if m[0].get(("imgtool_queue_depth", (("queue", "done"),))) == n
                                   else None)(samples()), 10, "depth gauges updated")
    assert total(ms, "done") == n == r.llen(K.done)
    assert total(ms, "failed") == 10 == r.llen(K.failed)
    assert total(ms, "retried") == 0
    for op in OPS:
        assert sum(m[("imgtool_queue_operations_total", (("operation", op), ("result", "done")))] for m in ms) == n
    assert sum(m[("imgtool_queue_job_duration_seconds_count", (("result", "done"),))] for m in ms) == n
    assert all(m[("imgtool_queue_redis_up", ())] == 1 for m in ms)
    assert all(m[("imgtool_queue_worker_state", (("state", "idle"),))] == 1 for m in ms)
    assert all(any(k[0] == "imgtool_queue_backend_info" and ("backend", "cpu") in k[1] for k in m) for m in ms)
    assert all(healthz(p) == 200 for p in ports)
    for w in ws:
        w.signal(signal.SIGTERM)
    assert [w.wait(15) for w in ws] == [0, 0]


def test_enqueue_and_status(redis_server, workers, tmp_path):
    r = redis_server.client()
    user = tmp_path / "uploads" / "user1"
    for name in ("a1b2-cat.jpg", "c3d4-dog.png"):
        make_image(user / name)
    make_image(user / "processed" / "old_thumbnail.png")  # processed/ is skipped
    cli = [sys.executable, "-m", "imgtool"]
    res = subprocess.run([*cli, "enqueue", "--redis", redis_server.address, str(user)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    raw = r.lrange(K.jobs, 0, -1)
    jobs_ = [json.loads(x) for x in raw]
    # One job per image, in the order the folder walk gives (largest first).
    assert [j["jobId"] for j in jobs_] == [job_id_for(p) for p in walk(user)]
    assert sorted(j["jobId"] for j in jobs_) == ["a1b2-cat", "c3d4-dog"]
    for x, j in zip(raw, jobs_):
        assert list(j) == ["jobId", "inputPath", "outputDir", "operations", "timestamp", "retryCount"]
        assert x == json.dumps(j, separators=(",", ":")).encode()  # as JSON.stringify writes it
        assert j["outputDir"] == str(user / "processed") and os.path.isabs(j["inputPath"])
        assert j["operations"] == OPS and j["retryCount"] == 0 and isinstance(j["timestamp"], int)
    res = subprocess.run([*cli, "enqueue", "--redis", redis_server.address, "--ops", "blur", "--options",
                          '{"blur": {"sigma": 2}}', "-n", str(user / "a1b2-cat.jpg")],
                         capture_output=True, text=True, timeout=30)
    assert json.loads(res.stdout)["options"] == {"blur": {"sigma": 2}} and r.llen(K.jobs) == 2
    w = workers.start(redis_server, "-w", "2", env={"IMGTOOL_TEST_JOB_DELAY": "60"})
    workers.wait_for(lambda: sum(r.llen(k) for k in inflight_keys(r)) == 2, 20, "both jobs in flight")

    def status_json():
        res = subprocess.run([*cli, "status", "--redis", redis_server.address, "--json"],
                             capture_output=True, text=True, timeout=30)
        st = json.loads(res.stdout)
        return st if st["workers"] and st["workers"][0]["state"] == "busy" else None

    st = workers.wait_for(status_json, 10, "status to show the worker busy")
    assert st["lists"] == {"image:jobs": 0, "image:retry": 0, "image:done": 0, "image:failed": 0}
    [row] = st["workers"]
    assert row["alive"] and row["state"] == "busy" and row["inFlight"] == 2 and row["backend"] == "cpu"
    w.signal(signal.SIGKILL)
    w.wait(10)
    res = subprocess.run([*cli, "status", "--redis", redis_server.address], capture_output=True, text=True,
                         timeout=30)
    assert "image:jobs" in res.stdout and "in flight 2" in res.stdout
    bad = subprocess.run([*cli, "status", "--redis", "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: cannot reach Redis") and "Traceback" not in bad.stderr
