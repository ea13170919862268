"""End to end against a real SeaweedFS: `imgtool process` over s3:// prefixes and queue jobs with s3:// paths.

What holds for files holds for objects: outputs in processed/ beside the
inputs (or under -o s3://...) with their Content-Type, a rerun that writes
nothing, a changed option that redoes, confinement by --allow-root
s3://bucket/prefix, a missing object retried then input_not_found, a killed
worker's jobs recovered with nothing stray, and the server stopped mid-run.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from imagegen import photo
from test_queue_worker import K, entries, inflight_keys, job, push, workers  # noqa: F401 - the fixture

RUN_TIMEOUT = 120
CLI = [sys.executable, "-m", "imgtool"]
OPS = ["thumbnail", "blur", "low-quality"]


# ---------------------------------------------------------------------------- helpers


def jpeg(w: int, h: int, seed: int = 0, exif: bool = False) -> bytes:
    im = Image.fromarray(photo(w, h, seed))
    buf = io.BytesIO()
    kwargs = {}
    if exif:
        e = Image.Exif()
        e[0x010F] = "imgtool-test-camera"  # Make: must not reach an output
        kwargs["exif"] = e.tobytes()
    im.save(buf, "JPEG", quality=92, **kwargs)
    return buf.getvalue()


def run(server, *args, env=None, timeout=RUN_TIMEOUT) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full.update(server.env())
    full.update(env or {})
    extra = ["--backend", "cpu"] if args[0] == "process" else []
    return subprocess.run([*CLI, *args, *extra], capture_output=True, text=True, env=full,
                          timeout=timeout)


def keys(client, bucket: str, prefix: str = "") -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", ())]
    return sorted(out)


def expected_sizes(w: int, h: int) -> dict[str, tuple[int, int]]:
    """The spec's sizes: thumbnail 256 wide (never upscaled), blur the same size, low-quality half."""
    return {"thumbnail": (w, h) if w <= 256 else (256, max(1, round(h * 256 / w))),
            "blur": (w, h), "low-quality": (max(1, w // 2), max(1, h // 2))}


def check_output(client, bucket: str, key: str, size: tuple[int, int], fmt: str = "WEBP") -> None:
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == {"WEBP": "image/webp", "AVIF": "image/avif"}[fmt], key
    data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt and im.size == size, (key, im.format, im.size)
        im.load()
        assert not {"exif", "icc_profile", "xmp"} & set(im.info), (key, im.info.keys())
    if fmt == "WEBP":
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        assert b"EXIF" not in data and b"XMP " not in data and b"imgtool-test-camera" not in data


# ---------------------------------------------------------------------------- process


def test_prefix_processed_into_processed_objects(seaweed, s3_bucket, tmp_path):
    c = seaweed.client()
    inputs = {"u1/wide.jpg": (640, 360, True), "u1/small.jpg": (120, 90, False),
              "u1/sub/tall.jpg": (300, 500, False)}
    for key, (w, h, exif) in inputs.items():
        c.put_object(Bucket=s3_bucket, Key=key, Body=jpeg(w, h, seed=len(key), exif=exif),
                     ContentType="image/jpeg")
    # Never inputs: outputs already there, a hidden name, a text file, a processed/ folder's image.
    c.put_object(Bucket=s3_bucket, Key="u1/.hidden.jpg", Body=jpeg(40, 30))
    c.put_object(Bucket=s3_bucket, Key="u1/notes.txt", Body=b"not an image")
    c.put_object(Bucket=s3_bucket, Key="u1/processed/old.jpg", Body=jpeg(40, 30))
    c.put_object(Bucket=s3_bucket, Key="u10/other.jpg", Body=jpeg(40, 30))  # beside u1/, not in it

    res = run(seaweed, "process", f"s3://{s3_bucket}/u1", "-j", "2", "--json")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert sorted(d["input"] for d in lines) == sorted(f"s3://{s3_bucket}/{k}" for k in inputs)
    assert all(d["status"] == "done" for d in lines)

    expected = {"u1/.hidden.jpg", "u1/notes.txt", "u1/processed/old.jpg", "u10/other.jpg", *inputs}
    for key, (w, h, _exif) in inputs.items():
        folder, name = key.rsplit("/", 1)
        stem = name.rsplit(".", 1)[0]
        for op, size in expected_sizes(w, h).items():
            out = f"{folder}/processed/{stem}_{op}.webp"
            expected.add(out)
            check_output(c, s3_bucket, out, size)
    assert keys(c, s3_bucket) == sorted(expected)  # nothing else: no temporary object, no stray output


def test_output_prefix_avif_and_local_inputs_into_s3(seaweed, s3_bucket, tmp_path):
    c = seaweed.client()
    c.put_object(Bucket=s3_bucket, Key="up/a/b.jpg", Body=jpeg(400, 300, 3))
    res = run(seaweed, "process", f"s3://{s3_bucket}/up/", "-o", f"s3://{s3_bucket}/derived/",
              "--format", "avif", "--ops", "thumbnail")
    assert res.returncode == 0, res.stderr
    check_output(c, s3_bucket, "derived/a/b_thumbnail.avif", (256, 192), fmt="AVIF")

    # Local files into a prefix, and objects into a local folder.
    local = tmp_path / "in"
    local.mkdir()
    (local / "c.jpg").write_bytes(jpeg(200, 100, 4))
    res = run(seaweed, "process", str(local), "-o", f"s3://{s3_bucket}/fromdisk", "--ops", "blur")
    assert res.returncode == 0, res.stderr
    check_output(c, s3_bucket, "fromdisk/c_blur.webp", (200, 100))
    again = run(seaweed, "process", str(local), "-o", f"s3://{s3_bucket}/fromdisk", "--ops", "blur")
    assert "0 done, 1 skipped" in again.stderr, again.stderr

    res = run(seaweed, "process", f"s3://{s3_bucket}/up/a/b.jpg", "-o", str(tmp_path / "out"),
              "--ops", "low-quality")
    assert res.returncode == 0, res.stderr
    with Image.open(tmp_path / "out" / "b_low-quality.webp") as im:
        assert im.size == (200, 150)
    again = run(seaweed, "process", f"s3://{s3_bucket}/up/a/b.jpg", "-o", str(tmp_path / "out"),
                "--ops", "low-quality")
    assert "0 done, 1 skipped" in again.stderr, again.stderr


def test_rerun_puts_nothing_and_a_changed_option_redoes(seaweed, s3_bucket):
    c = seaweed.client()
    for i in range(3):
        c.put_object(Bucket=s3_bucket, Key=f"u2/p{i}.jpg", Body=jpeg(320, 240, seed=i))
    res = run(seaweed, "process", f"s3://{s3_bucket}/u2/")
    assert res.returncode == 0 and "3 done, 0 skipped" in res.stderr, res.stderr
    outputs = keys(c, s3_bucket, "u2/processed/")
    assert len(outputs) == 9
    # Each output replaced by a marker with the same metadata: only a PUT by the rerun could change it.
    for key in outputs:
        head = c.head_object(Bucket=s3_bucket, Key=key)
        c.put_object(Bucket=s3_bucket, Key=key, Body=b"marker " + key.encode(), ContentType=head["ContentType"],
                     Metadata=head["Metadata"])
    res = run(seaweed, "process", f"s3://{s3_bucket}/u2/")
    assert res.returncode == 0 and "0 done, 3 skipped" in res.stderr, res.stderr
    for key in outputs:
        assert c.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"marker " + key.encode()

    res = run(seaweed, "process", f"s3://{s3_bucket}/u2/", "--thumb-width", "100")
    assert res.returncode == 0 and "3 done, 0 skipped" in res.stderr, res.stderr
    for i in range(3):
        check_output(c, s3_bucket, f"u2/processed/p{i}_thumbnail.webp", (100, 75))
        for op in ("blur", "low-quality"):  # only the outputs the option changes are redone
            key = f"u2/processed/p{i}_{op}.webp"
            assert c.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"marker " + key.encode()
    # The input replaced (a new upload under the same name) redoes too.
    c.put_object(Bucket=s3_bucket, Key="u2/p0.jpg", Body=jpeg(160, 120, seed=9))
    res = run(seaweed, "process", f"s3://{s3_bucket}/u2/", "--thumb-width", "100")
    assert "1 done, 2 skipped" in res.stderr, res.stderr
    check_output(c, s3_bucket, "u2/processed/p0_blur.webp", (160, 120))


def test_limits_and_refusals_are_one_line(seaweed, s3_bucket):
    c = seaweed.client()
    big = jpeg(300, 200)
    c.put_object(Bucket=s3_bucket, Key="u3/big.jpg", Body=big)
    c.put_object(Bucket=s3_bucket, Key="u3/fake.jpg", Body=b"<html>no image</html>" * 3)
    res = run(seaweed, "process", f"s3://{s3_bucket}/u3/", "--max-input-bytes", str(len(big) - 1))
    assert res.returncode == 1
    assert f"s3://{s3_bucket}/u3/big.jpg: is {len(big)} bytes, over the input limit" in res.stderr
    assert f"s3://{s3_bucket}/u3/fake.jpg: an HTML page" in res.stderr
    assert keys(c, s3_bucket, "u3/processed/") == []

    res = run(seaweed, "process", "s3://no-such-bucket-imgtool/u1/")
    assert res.returncode == 2 and "no such bucket 'no-such-bucket-imgtool'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    res = run(seaweed, "process", f"s3://{s3_bucket}/u3/", env={"AWS_SECRET_ACCESS_KEY": "wrong"})
    assert res.returncode == 2 and "credentials" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    # An output folder that cannot be written is one error for its inputs (exit 1), before any decode.
    res = run(seaweed, "process", f"s3://{s3_bucket}/u3/", "-o", "s3://no-such-bucket-imgtool/out/")
    assert res.returncode == 1 and "no such bucket 'no-such-bucket-imgtool'" in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "0 done, 0 skipped, 2 failed" in res.stderr  # said once, for both images
    # A path that is not there is that input's failure (exit 1), as for a local path.
    res = run(seaweed, "process", f"s3://{s3_bucket}/u3/nothing-here")
    assert res.returncode == 1 and f"Error: s3://{s3_bucket}/u3/nothing-here: no such file or directory" in res.stderr
    res = run(seaweed, "process", "s3://Bad_Bucket/x.jpg")
    assert res.returncode == 2 and "invalid bucket name" in res.stderr


def test_s3_endpoint_option_overrides_the_environment(seaweed, s3_bucket):
    c = seaweed.client()
    c.put_object(Bucket=s3_bucket, Key="e/a.jpg", Body=jpeg(64, 48))
    res = run(seaweed, "process", f"s3://{s3_bucket}/e/", "--s3-endpoint", seaweed.endpoint, "--ops", "blur",
              env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert res.returncode == 0, res.stderr
    assert keys(c, s3_bucket, "e/processed/") == ["e/processed/a_blur.webp"]


# ---------------------------------------------------------------------------- queue


@pytest.fixture(autouse=True)
def _no_aws_settings(monkeypatch):
    """Workers inherit this process's environment: only the test server's AWS settings reach them."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)


def _worker_env(server) -> dict:
    return server.env()


def test_queue_jobs_with_s3_paths_done_and_confined(seaweed, s3_bucket, redis_server, workers):
    c = seaweed.client()
    r = redis_server.client()
    url = f"s3://{s3_bucket}"
    for i in range(3):
        c.put_object(Bucket=s3_bucket, Key=f"uploads/u1/p{i}.jpg", Body=jpeg(300, 200, seed=i))
    c.put_object(Bucket=s3_bucket, Key="private/secret.jpg", Body=jpeg(64, 48))
    c.put_object(Bucket=s3_bucket, Key="uploads/u10/x.jpg", Body=jpeg(64, 48))
    from videoclips import make_clip

    c.put_object(Bucket=s3_bucket, Key="uploads/u1/v.mp4", Body=make_clip(None, "h264-mp4", n=30))
    push(r, *[job(f"p{i}", f"{url}/uploads/u1/p{i}.jpg", f"{url}/uploads/u1/processed") for i in range(3)],
         job("v", f"{url}/uploads/u1/v.mp4", f"{url}/uploads/u1/processed"),
         job("outside-in", f"{url}/private/secret.jpg", f"{url}/uploads/u1/processed"),
         job("outside-out", f"{url}/uploads/u1/p0.jpg", f"{url}/private/processed"),
         job("sibling", f"{url}/uploads/u10/x.jpg", f"{url}/uploads/u10/processed"),
         job("dots", f"{url}/uploads/u1/../../private/secret.jpg", f"{url}/uploads/u1/processed"),
         job("missing", f"{url}/uploads/u1/never.jpg", f"{url}/uploads/u1/processed", ["thumbnail"]))
    w = workers.start(redis_server, "-w", "2", "--max-retries", "2", "--allow-root", f"{url}/uploads/u1",
                      env=_worker_env(seaweed))
    workers.wait_for(lambda: r.llen(K.done) == 4 and r.llen(K.failed) == 5, 60, "4 done, 5 failed")
    done = {d["jobId"]: d for d in entries(r, K.done)}
    for i in range(3):
        d = done[f"p{i}"]
        assert d["outputs"] == {op: f"{url}/uploads/u1/processed/p{i}_{op}.webp" for op in OPS}
        for op, size in expected_sizes(300, 200).items():
            check_output(c, s3_bucket, f"uploads/u1/processed/p{i}_{op}.webp", size)
    for op, size in expected_sizes(64, 48).items():  # the video's frame: 64x48
        check_output(c, s3_bucket, f"uploads/u1/processed/v_{op}.webp", size)
    failed = {d["jobId"]: d for d in entries(r, K.failed)}
    for name in ("outside-in", "outside-out", "sibling"):
        assert failed[name]["error"]["type"] == "path_not_allowed", failed[name]
    assert failed["dots"]["error"]["type"] == "invalid_job"
    assert failed["missing"]["error"]["type"] == "input_not_found"
    assert failed["missing"]["retryCount"] == 2 and "retry 2 of missing" in w.text()
    # Nothing written outside the allowed prefix, and nothing but the outputs inside it.
    assert keys(c, s3_bucket) == sorted(
        ["private/secret.jpg", "uploads/u10/x.jpg", "uploads/u1/v.mp4"] + [f"uploads/u1/p{i}.jpg" for i in range(3)]
        + [f"uploads/u1/processed/{j}_{op}.webp" for j in ("p0", "p1", "p2", "v") for op in OPS])
    assert "Traceback" not in w.text()


def test_sigkilled_worker_s3_jobs_recovered_with_no_stray_objects(seaweed, s3_bucket, redis_server, workers):
    c = seaweed.client()
    r = redis_server.client()
    url = f"s3://{s3_bucket}"
    n = 16
    for i in range(n):
        c.put_object(Bucket=s3_bucket, Key=f"up/k{i:02d}.jpg", Body=jpeg(96, 64, seed=i))
    push(r, *[job(f"k{i:02d}", f"{url}/up/k{i:02d}.jpg", f"{url}/up/processed", ["thumbnail", "blur"])
              for i in range(n)])
    env = _worker_env(seaweed)
    first = workers.start(redis_server, "-w", "4", "--allow-root", f"{url}/up",
                          env={**env, "IMGTOOL_TEST_JOB_DELAY": "0.3"})
    workers.wait_for(lambda: r.llen(K.done) >= 2 and any(r.llen(k) >= 2 for k in inflight_keys(r)), 60,
                     "jobs done and jobs in flight")
    first.signal(signal.SIGKILL)
    first.wait(10)
    workers.start(redis_server, "-w", "4", "--allow-root", f"{url}/up", env=env)
    workers.wait_for(lambda: r.llen(K.done) == n and not inflight_keys(r), 60, "every job done")
    assert sorted(d["jobId"] for d in entries(r, K.done)) == [f"k{i:02d}" for i in range(n)]
    assert r.llen(K.failed) == 0
    assert keys(c, s3_bucket, "up/processed/") == sorted(
        f"up/processed/k{i:02d}_{op}.webp" for i in range(n) for op in ("thumbnail", "blur"))
    for i in range(n):
        check_output(c, s3_bucket, f"up/processed/k{i:02d}_thumbnail.webp", (96, 64))


def test_server_stopped_mid_run_retryable_then_done(seaweed_own, redis_server, workers):
    server = seaweed_own
    bucket = server.make_bucket("stop")
    c = server.client()
    r = redis_server.client()
    url = f"s3://{bucket}"
    n = 12
    for i in range(n):
        c.put_object(Bucket=bucket, Key=f"up/s{i:02d}.jpg", Body=jpeg(96, 64, seed=i))
    push(r, *[job(f"s{i:02d}", f"{url}/up/s{i:02d}.jpg", f"{url}/up/processed", ["thumbnail"]) for i in range(n)])
    w = workers.start(redis_server, "-w", "2", "--max-retries", "50", "--retry-base", "0.2", "--retry-cap",
                      "0.5", "--allow-root", f"{url}/up",
                      env={**_worker_env(server), "IMGTOOL_TEST_JOB_DELAY": "0.3"})
    workers.wait_for(lambda: r.llen(K.done) >= 2, 60, "two jobs done")
    server.stop()
    try:
        workers.wait_for(lambda: "queue: retry" in w.text(), 60, "a retry while the server is down")
        time.sleep(1.0)
    finally:
        server.start()
    workers.wait_for(lambda: r.llen(K.done) == n and not inflight_keys(r), 90, "every job done")
    assert r.llen(K.failed) == 0
    retries = [line for line in w.text().splitlines() if "queue: retry" in line]
    assert retries and all("cannot connect" in line or "transfer failed" in line or "timed out" in line
                           or "server busy" in line for line in retries), retries
    done = {d["jobId"]: d for d in entries(r, K.done)}
    assert sorted(done) == [f"s{i:02d}" for i in range(n)]
    assert any(d["retryCount"] >= 1 for d in done.values())
    assert keys(c, bucket, "up/processed/") == sorted(f"up/processed/s{i:02d}_thumbnail.webp" for i in range(n))
    assert "Traceback" not in w.text()


def test_enqueue_s3_prefix(seaweed, s3_bucket, redis_server):
    c = seaweed.client()
    c.put_object(Bucket=s3_bucket, Key="u5/a.jpg", Body=jpeg(64, 48))
    c.put_object(Bucket=s3_bucket, Key="u5/clip.mp4", Body=b"\x00\x00\x00\x18ftypisom" + b"\x00" * 20)
    c.put_object(Bucket=s3_bucket, Key="u5/processed/a_blur.webp", Body=b"x")
    res = run(seaweed, "enqueue", "--redis", redis_server.address, "--dry-run", f"s3://{s3_bucket}/u5/")
    assert res.returncode == 0, res.stderr
    jobs_ = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(j["jobId"], j["inputPath"], j["outputDir"]) for j in jobs_] == [
        ("a", f"s3://{s3_bucket}/u5/a.jpg", f"s3://{s3_bucket}/u5/processed"),
        ("clip", f"s3://{s3_bucket}/u5/clip.mp4", f"s3://{s3_bucket}/u5/processed")]


# ---------------------------------------------------------------------------- in this process: requests counted


@pytest.fixture
def object_store(seaweed):
    """The store s3:// locations get, made afresh with the test server's settings (and dropped after)."""
    from imgtool import storage

    for name, value in seaweed.env().items():
        os.environ[name] = value  # the autouse fixture removes them again
    storage._reset("s3")
    yield storage.for_location("s3://x/")
    storage._reset("s3")


def test_rerun_sends_no_put_and_no_get(seaweed, s3_bucket, object_store):
    from test_s3_store import Calls

    from imgtool.ops import Settings
    from imgtool.pipeline import Pipeline, Task, list_inputs

    c = seaweed.client()
    n = 6
    for i in range(n):
        c.put_object(Bucket=s3_bucket, Key=f"r/p{i}.jpg", Body=jpeg(200, 150, seed=i))
    calls = Calls(object_store.s3.client)
    pipe = Pipeline(Settings(), backend="cpu", jobs=2)
    try:
        def run_once(force=False):
            tasks = (Task(src, f"s3://{s3_bucket}/r/processed") for src in list_inputs(f"s3://{s3_bucket}/r/"))
            return sorted(res.status for res in pipe.map(tasks, force=force))

        assert run_once() == ["done"] * n
        assert calls.count("PutObject") == 3 * n and calls.count("GetObject") == n  # each input read once
        assert not object_store._ahead and object_store._ahead_bytes == 0  # nothing fetched ahead is left
        calls.sent.clear()
        assert run_once() == ["skipped"] * n
        assert calls.count("PutObject") == 0 and calls.count("GetObject") == 0
        assert not object_store._ahead
        puts = [h for op, h in calls.sent if op == "PutObject"]
        assert puts == []
        assert run_once(force=True) == ["done"] * n
        types = {h.get("Content-Type") for op, h in calls.sent if op == "PutObject"}
        assert types == {"image/webp"}
    finally:
        pipe.close()


def test_a_failed_put_deletes_the_objects_of_the_attempt(seaweed, s3_bucket, object_store, monkeypatch):
    from imgtool.errors import PermanentError
    from imgtool.storage import Output

    c = seaweed.client()
    webp = b"RIFF\x00\x00\x00\x00WEBP"
    outputs = [Output(f"s3://{s3_bucket}/o/a_thumbnail.webp", webp, "image/webp", "w=1"),
               Output(f"s3://{s3_bucket}/o/a_blur.webp", webp, "image/webp", "s=1"),
               Output("s3://imgtool-no-such-bucket/o/a_low-quality.webp", webp, "image/webp", "q=1")]
    with pytest.raises(PermanentError, match="no such bucket|not found"):
        object_store.write_outputs(outputs)
    assert keys(c, s3_bucket) == []
    # A refused PUT (read-only credentials) leaves nothing either, and says why in one line.
    from seaweed import READER
    from imgtool.storage.s3 import ObjectStore, S3Store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER[1])
    reader = ObjectStore(S3Store())
    with pytest.raises(PermanentError, match="access denied") as info:
        reader.write_outputs(outputs[:2])
    assert "\n" not in str(info.value)
    assert keys(c, s3_bucket) == []


def test_one_worker_reads_the_next_input_ahead(seaweed, s3_bucket, object_store):
    from test_s3_store import Calls

    from imgtool.ops import Settings
    from imgtool.pipeline import Pipeline, Task

    c = seaweed.client()
    for i in range(3):
        c.put_object(Bucket=s3_bucket, Key=f"one/p{i}.jpg", Body=jpeg(120, 90, seed=i))
    calls = Calls(object_store.s3.client)
    pipe = Pipeline(Settings(ops=("thumbnail",)), backend="cpu", jobs=1)
    try:
        tasks = [Task(f"s3://{s3_bucket}/one/p{i}.jpg", f"s3://{s3_bucket}/one/processed") for i in range(3)]
        held = []
        for res in pipe.map(iter(tasks)):
            assert res.status == "done", res.error
            held.append(sorted(object_store._ahead))
        # While an image was processed, the next input was being fetched (or had been): it was
        # asked for before the image's own work began; the last has none after it.
        assert held == [[tasks[1].src], [tasks[2].src], []]
        assert calls.count("GetObject") == 3 and calls.count("PutObject") == 3
    finally:
        pipe.close()


def test_queue_throttled_bucket_retried_until_it_answers_and_a_missing_bucket_is_permanent(
        seaweed, redis_server, workers):
    c = seaweed.client()
    r = redis_server.client()
    bucket = seaweed.make_bucket("thr")
    c.put_object(Bucket=bucket, Key="u/a.jpg", Body=jpeg(96, 64))
    seaweed.throttle(bucket)
    try:
        res = run(seaweed, "process", f"s3://{bucket}/u/")
        assert res.returncode in (1, 2) and "Traceback" not in res.stderr, res.stderr
        [line] = [x for x in res.stderr.splitlines() if x.startswith("Error: ")]
        assert f"s3://{bucket}/u/" in line and "503" in line, line
        push(r, job("a", f"s3://{bucket}/u/a.jpg", f"s3://{bucket}/u/processed", ["thumbnail"]),
             job("gone", "s3://imgtool-no-such-bucket/u/a.jpg", "s3://imgtool-no-such-bucket/u/processed"))
        w = workers.start(redis_server, "-w", "2", "--max-retries", "50", "--retry-base", "0.1",
                          "--retry-cap", "0.3", env=_worker_env(seaweed))
        workers.wait_for(lambda: r.llen(K.failed) == 1 and "queue: retry 2 of a" in w.text(), 60,
                         "the missing bucket failed, the throttled job retried")
    finally:
        seaweed.unthrottle(bucket)
    workers.wait_for(lambda: r.llen(K.done) == 1, 60, "the throttled job done once the bucket answers")
    [failed] = entries(r, K.failed)
    assert failed["jobId"] == "gone" and failed["retryCount"] == 0
    assert failed["error"]["type"] == "permanent"
    assert failed["error"]["message"] == ("s3://imgtool-no-such-bucket/u/a.jpg: no such bucket "
                                          "'imgtool-no-such-bucket'")
    retries = [line for line in w.text().splitlines() if "queue: retry" in line and " of a " in line]
    assert retries and all("server busy or failing (503" in line for line in retries), retries
    [done] = entries(r, K.done)
    assert done["retryCount"] >= 2
    check_output(c, bucket, "u/processed/a_thumbnail.webp", (96, 64))
    assert "Traceback" not in w.text()


def test_an_input_over_the_limit_is_never_fetched(seaweed, s3_bucket, object_store):
    from test_s3_store import Calls

    from imgtool import storage
    from imgtool.ops import Settings
    from imgtool.pipeline import Pipeline, Task

    data = jpeg(200, 100)
    c = seaweed.client()
    c.put_object(Bucket=s3_bucket, Key="big/a.jpg", Body=data)
    storage.configure(max_input_bytes=len(data) - 1)
    try:
        store = storage.for_location("s3://x/")
        calls = Calls(store.s3.client)
        pipe = Pipeline(Settings(), backend="cpu", jobs=2)
        try:
            [res] = pipe.map([Task(f"s3://{s3_bucket}/big/a.jpg", f"s3://{s3_bucket}/big/processed")])
        finally:
            pipe.close()
        assert res.status == "failed" and res.error.code == "too_large"
        assert f"is {len(data)} bytes, over the input limit of {len(data) - 1} bytes" in str(res.error)
        assert calls.count("HeadObject") >= 1 and calls.count("GetObject") == 0
    finally:
        storage.configure(max_input_bytes=storage.DEFAULT_MAX_INPUT_BYTES)


@pytest.mark.parametrize("args,says", [
    (["queue", "--allow-root", "s3://Bad_Bucket/", "--redis", "127.0.0.1:1"],
     "Invalid value for '--allow-root': s3://Bad_Bucket/: invalid bucket name"),
    (["process", "s3://b/x.jpg", "--s3-endpoint", "ftp://x"], "S3 endpoint must be an http:// or https:// URL"),
    (["process", "s3://bucket/a/../b.jpg"], "s3://bucket/a/../b.jpg: key has an empty, '.' or '..' component"),
    (["enqueue", "--dry-run", "s3://bucket/a\\b.jpg"], "key holds a backslash"),
])
def test_s3_usage_errors_are_one_line(args, says):
    res = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert says in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_queue_refused_credentials_are_permanent(seaweed, s3_bucket, redis_server, workers):
    c = seaweed.client()
    r = redis_server.client()
    c.put_object(Bucket=s3_bucket, Key="u/a.jpg", Body=jpeg(64, 48))
    push(r, job("a", f"s3://{s3_bucket}/u/a.jpg", f"s3://{s3_bucket}/u/processed"))
    w = workers.start(redis_server, "--max-retries", "5",
                      env={**_worker_env(seaweed), "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    workers.wait_for(lambda: r.llen(K.failed) == 1, 60, "the job failed")
    [failed] = entries(r, K.failed)
    assert failed["retryCount"] == 0 and failed["error"]["type"] == "permanent", failed
    message = failed["error"]["message"]
    assert message.startswith(f"s3://{s3_bucket}/u/a.jpg: ") and "\n" not in message
    assert "credentials" in message, message
    assert keys(c, s3_bucket) == ["u/a.jpg"] and "Traceback" not in w.text()


def test_an_unreachable_server_is_each_input_s_retryable_failure(monkeypatch):
    """The up-to-date check's HEAD failing is no crash of the run: the input fails, retryable."""
    from conftest import free_port
    from imgtool import storage
    from imgtool.ops import Settings
    from imgtool.pipeline import Pipeline, Task
    from imgtool.storage import s3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    storage.configure(s3_endpoint=f"http://127.0.0.1:{free_port()}")
    pipe = Pipeline(Settings(), backend="cpu", jobs=2)
    try:
        tasks = [Task(f"s3://bucket-x/u/{n}.jpg", "s3://bucket-x/u/processed") for n in ("a", "b")]
        results = list(pipe.map(tasks))
        assert [r.status for r in results] == ["failed", "failed"]
        for r in results:
            assert r.error.code == "io_error" and r.error.retryable and "cannot connect" in str(r.error)
    finally:
        pipe.close()
        s3._config.pop("endpoint_url", None)
        storage._reset("s3")
