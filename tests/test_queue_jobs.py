"""imgtool.queue.jobs (validation, entries), connection (--redis, backoff) and the defaults."""

import json
import os
import random

import pytest

from imgtool.errors import InvalidJob, PathNotAllowed
from imgtool.ops import Settings
from imgtool.queue import defaults
from imgtool.queue.connection import backoff_delay, redact, resolve_url
from imgtool.queue.jobs import (
    AllowRoots,
    done_entry,
    failed_entry,
    load,
    parse,
    retry_payload,
    try_load,
)

# The seed document's example job, as the upload server sends it.
SEED_JOB = {
    "jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890-image",
    "inputPath": "/absolute/path/to/uploads/userId/a1b2c3d4-e5f6-7890-abcd-ef1234567890-image.jpg",
    "outputDir": "/absolute/path/to/uploads/userId/processed",
    "operations": ["thumbnail", "blur", "low-quality"],
    "timestamp": 1737158400000,
    "retryCount": 0,
}
NO_ROOTS = AllowRoots(None)


def raw(obj) -> bytes:
    return json.dumps(obj).encode()


def test_the_seed_example_job_is_valid():
    job = parse(raw(SEED_JOB), Settings(), NO_ROOTS)
    assert job.job_id == SEED_JOB["jobId"]
    assert job.operations == ("thumbnail", "blur", "low-quality")
    assert job.retry_count == 0
    assert job.output_paths() == {
        op: f"/absolute/path/to/uploads/userId/processed/{SEED_JOB['jobId']}_{op}.webp"
        for op in job.operations
    }


def with_(**changes):
    job = dict(SEED_JOB)
    for k, v in changes.items():
        if v is KeyError:
            del job[k]
        else:
            job[k] = v
    return raw(job)


INVALID = {
    "not json": b"{not json",
    "empty payload": b"",
    "not utf-8": b'{"jobId": "\xff\xfe"}',
    "json array": b"[1, 2, 3]",
    "json string": b'"a job"',
    "NaN": with_(timestamp=float("nan")),
    "huge number": b'{"jobId": "a", "timestamp": 1e999}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "missing jobId": with_(jobId=KeyError),
    "missing inputPath": with_(inputPath=KeyError),
    "missing outputDir": with_(outputDir=KeyError),
    "missing operations": with_(operations=KeyError),
    "jobId number": with_(jobId=12),
    "jobId with slash": with_(jobId="a/b"),
    "jobId with dotdot": with_(jobId="a..b"),
    "jobId is dotdot": with_(jobId=".."),
    "jobId with NUL": with_(jobId="a\0b"),
    "jobId hidden": with_(jobId=".hidden"),
    "jobId empty": with_(jobId=""),
    "jobId too long": with_(jobId="a" * 201),
    "jobId with space": with_(jobId="a b"),
    "inputPath relative": with_(inputPath="uploads/a.jpg"),
    "inputPath empty": with_(inputPath=""),
    "inputPath list": with_(inputPath=["/a.jpg"]),
    "inputPath NUL": with_(inputPath="/a\0.jpg"),
    "outputDir relative": with_(outputDir="processed"),
    "outputDir null": with_(outputDir=None),
    "operations string": with_(operations="thumbnail"),
    "operations empty": with_(operations=[]),
    "operation unknown": with_(operations=["thumbnail", "sharpen"]),
    "operation empty name": with_(operations=[""]),
    "operation number": with_(operations=[1]),
    "operation twice": with_(operations=["blur", "blur"]),
    "retryCount string": with_(retryCount="0"),
    "retryCount negative": with_(retryCount=-1),
    "retryCount float": with_(retryCount=1.5),
    "retryCount bool": with_(retryCount=True),
    "timestamp string": with_(timestamp="yesterday"),
    "options not object": with_(options=[1]),
    "options unknown op": with_(options={"sharpen": {}}),
    "options bad width": with_(options={"thumbnail": {"width": 0}}),
    "options bad sigma": with_(options={"blur": {"sigma": 99}}),
    "options unknown param": with_(options={"blur": {"radius": 3}}),
    "options bad quality": with_(options={"low-quality": {"quality": "high"}}),
    "too large": with_(padding="x" * (defaults.MAX_PAYLOAD_BYTES + 1)),
}


# What each reason must name (the first words that apply).
REASON = {"not json": "not JSON", "empty payload": "not JSON", "not utf-8": "UTF-8",
          "json array": "JSON object", "json string": "JSON object", "NaN": "NaN",
          "huge number": "1e999", "deep nesting": "nested", "too large": "over the limit"}


@pytest.mark.parametrize("name", INVALID)
def test_invalid_jobs_are_refused_with_a_reason(name):
    with pytest.raises(InvalidJob) as info:
        parse(INVALID[name], Settings(), NO_ROOTS)
    field = name.split()[0]
    expected = REASON.get(name, "operation" if field == "operation" else field)
    assert expected in info.value.message
    assert not info.value.retryable


def test_optional_fields_may_be_left_out():
    job = parse(with_(timestamp=KeyError, retryCount=KeyError), Settings(), NO_ROOTS)
    assert job.retry_count == 0


def test_unknown_fields_are_kept_through_retry_and_results():
    payload = with_(userId="u1", extra={"nested": [1, 2]}, retryCount=1)
    job = parse(payload, Settings(), NO_ROOTS)
    again = json.loads(retry_payload(job))
    assert again["userId"] == "u1" and again["extra"] == {"nested": [1, 2]}
    assert again["retryCount"] == 2
    assert list(again)[:6] == list(SEED_JOB)  # field order kept
    done = json.loads(done_entry(job, job.output_paths(), 12.34, "w1"))
    assert done["userId"] == "u1" and done["status"] == "done" and done["worker"] == "w1"
    assert done["durationMs"] == 12.3 and isinstance(done["finishedAt"], int)


def test_options_are_applied_to_the_settings():
    job = parse(with_(options={"thumbnail": {"width": 320, "quality": 60}, "blur": {"sigma": 12}}),
                Settings(), NO_ROOTS)
    assert job.settings.thumb_width == 320
    assert job.settings.blur_sigma == 12.0
    assert job.settings.quality["thumbnail"] == 60
    assert job.settings.ops == job.operations


def test_operations_outside_the_workers_ops_are_refused():
    with pytest.raises(InvalidJob, match="not enabled"):
        parse(raw(SEED_JOB), Settings(ops=("thumbnail",)), NO_ROOTS)
    job = parse(with_(operations=["thumbnail"]), Settings(ops=("thumbnail",)), NO_ROOTS)
    assert job.settings.ops == ("thumbnail",)


def test_input_that_is_one_of_its_own_outputs_is_refused(tmp_path):
    payload = with_(jobId="x", inputPath=str(tmp_path / "x_blur.webp"), outputDir=str(tmp_path))
    with pytest.raises(InvalidJob, match="own outputs"):
        parse(payload, Settings(), NO_ROOTS)


def test_failed_entries_keep_the_job_or_the_raw_payload():
    e = json.loads(failed_entry(b"{oops", None, InvalidJob("payload is not JSON"), "w"))
    assert e["payload"] == "{oops" and e["status"] == "failed" and e["retryCount"] == 0
    assert e["error"] == {"type": "invalid_job", "message": "payload is not JSON"}
    big = b"x" * 100_000
    e = json.loads(failed_entry(big, None, InvalidJob("too large"), "w"))
    assert len(e["payload"]) == defaults.FAILED_PAYLOAD_EXCERPT and e["payloadBytes"] == 100_000
    data = try_load(with_(retryCount=2))
    e = json.loads(failed_entry(with_(retryCount=2), data, InvalidJob("bad"), "w"))
    assert e["jobId"] == SEED_JOB["jobId"] and e["retryCount"] == 2 and isinstance(e["failedAt"], int)


def test_load_refuses_what_json_dumps_could_not_write_back():
    with pytest.raises(InvalidJob):
        load(b'{"a": Infinity}')
    assert load(b'{"a": 1.5}') == {"a": 1.5}


# ------------------------------------------------------------------ allowed roots


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "uploads"
    (root / "u1" / "processed").mkdir(parents=True)
    (root / "u1" / "a.jpg").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    (root / "u1" / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "u1" / "linkdir").symlink_to(outside)
    return root, outside


def job_at(inp, out):
    return with_(inputPath=str(inp), outputDir=str(out))


def test_paths_inside_the_roots_pass_resolved(tree):
    root, _ = tree
    job = parse(job_at(root / "u1" / "a.jpg", root / "u1" / "processed"), Settings(), AllowRoots([root]))
    assert job.src == (root / "u1" / "a.jpg").resolve()
    # outputDir need not exist yet
    parse(job_at(root / "u1" / "a.jpg", root / "u2" / "processed"), Settings(), AllowRoots([root]))


@pytest.mark.parametrize("inp, out", [
    ("{outside}/secret.jpg", "{root}/u1/processed"),            # directly outside
    ("{root}/u1/../../outside/secret.jpg", "{root}/u1/processed"),  # through ..
    ("{root}/u1/link.jpg", "{root}/u1/processed"),              # through a symlink (file)
    ("{root}/u1/linkdir/secret.jpg", "{root}/u1/processed"),    # through a symlink (folder)
    ("{root}/u1/a.jpg", "{outside}"),                           # output outside
    ("{root}/u1/a.jpg", "{root}/../outside/new"),               # output through ..
    ("{root}/u1/a.jpg", "{root}/u1/linkdir/processed"),         # output through a symlink
    ("{root}2/a.jpg", "{root}/u1/processed"),                   # a sibling sharing the prefix
])
def test_paths_outside_the_roots_are_refused(tree, inp, out):
    root, outside = tree
    fmt = {"root": root, "outside": outside}
    with pytest.raises(PathNotAllowed):
        parse(job_at(inp.format(**fmt), out.format(**fmt)), Settings(), AllowRoots([root]))


def test_roots_come_from_the_environment_when_no_option(tree):
    root, outside = tree
    env = {defaults.ALLOW_ROOTS_ENV: os.pathsep.join([str(root), str(outside)])}
    assert len(AllowRoots.from_options([], env).roots) == 2
    assert AllowRoots.from_options([str(root)], env).roots == (str(root.resolve()),)
    assert not AllowRoots.from_options([], {})
    with pytest.raises(ValueError):
        AllowRoots([root / "missing"])


# ------------------------------------------------------------------ --redis and backoff


@pytest.mark.parametrize("value, env, url", [
    (None, {}, "redis://localhost:6379/0"),
    (None, {"REDIS_URL": "redis://r:1/2"}, "redis://r:1/2"),
    (None, {"REDIS_HOST": "h", "REDIS_PORT": "7000", "REDIS_DB": "3"}, "redis://h:7000/3"),
    (None, {"REDIS_HOST": "h", "REDIS_PASSWORD": "p@ss"}, "redis://:p%40ss@h:6379/0"),
    ("myhost", {}, "redis://myhost:6379/0"),
    ("myhost:6380", {"REDIS_DB": "1"}, "redis://myhost:6380/1"),
    ("[::1]:6380", {}, "redis://[::1]:6380/0"),
    ("rediss://user:pw@h:6390/4", {"REDIS_DB": "9"}, "rediss://user:pw@h:6390/4"),
    ("redis://h", {}, "redis://h"),
])
def test_redis_locations(value, env, url):
    assert resolve_url(value, env) == url


@pytest.mark.parametrize("bad", ["http://h", "h:port", "h:99999", "redis://:6379", "a b:1"])
def test_bad_redis_locations(bad):
    with pytest.raises(ValueError):
        resolve_url(bad, {})


def test_passwords_are_redacted_in_logs():
    assert redact("redis://:secret@h:1/0") == "redis://:***@h:1/0"
    assert redact("redis://h:1/0") == "redis://h:1/0"


def test_backoff_is_full_jitter_capped():
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(300.0, 1.0 * 2 ** attempt)
        samples = [backoff_delay(attempt, 1.0, 300.0, rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling  # uses the whole range: full jitter
    assert backoff_delay(10_000, 1.0, 300.0) <= 300.0


def test_spec_defaults():
    assert defaults.DEFAULT_PREFIX == "image"
    assert defaults.DEFAULT_MAX_RETRIES == 3
    assert defaults.DEFAULT_MAX_RECOVERIES == 3
    assert defaults.DEFAULT_DONE_CAP == 10_000
    assert defaults.DEFAULT_DRAIN_TIMEOUT == 30
    assert defaults.DEFAULT_WORKERS == 4
    assert (defaults.DEFAULT_RETRY_BASE, defaults.DEFAULT_RETRY_CAP) == (1.0, 300.0)
