"""Hostile names: jobIds, surrogates and huge numbers in jobs, control characters in file names, an outputDir
that is a file; and process --allow-root.  Real worker processes, a real redis-server, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_queue_worker import K, entries, job, make_image, push, workers  # noqa: F401 - fixture

from imgtool.textsafe import printable


def test_printable_escapes_what_would_break_or_hide_a_line():
    assert printable("plain name.jpg") == "plain name.jpg"
    assert printable("a\nError: fake.png") == "a\\nError: fake.png"
    assert printable("x\x1b[31m\r\t\x7f") == "x\\x1b[31m\\r\\t\\x7f"
    assert printable("evil\u202egnp.exe") == "evil\\u202egnp.exe"
    assert printable(os.fsdecode(b"bad\xffname")) == "bad\\xffname"


def test_hostile_job_fields_are_invalid_jobs_and_the_worker_goes_on(redis_server, workers, tmp_path):
    r = redis_server.client()
    root = tmp_path / "up"
    good = make_image(root / "good.png")
    out = root / "processed"
    (root / "afile").write_bytes(b"not a folder")
    ok = job("good", good, out)
    cases = [
        (json.dumps(dict(ok, jobId="nl\n")).encode(), "invalid_job", "jobId"),
        (json.dumps(dict(ok, jobId="tab\t")).encode(), "invalid_job", "jobId"),
        (json.dumps(ok).replace('"good"', '"bad\\ud800"', 1).encode(), "invalid_job", "surrogate"),
        (json.dumps(ok).replace('"up/', '"up/\\udfff', 1).replace(str(root), str(root) + "/\\udfff", 1).encode(),
         "invalid_job", "surrogate"),
        (json.dumps(dict(ok, x="y")).replace('"y"', "1" + "0" * 5000).encode(), "invalid_job", "digits"),
        (json.dumps(dict(ok, retryCount=0)).replace('"retryCount": 0', '"retryCount": ' + "9" * 40).encode(),
         "invalid_job", "digits"),
        (json.dumps(dict(ok, jobId="f", outputDir=str(root / "afile"))).encode(), "invalid_job", "is a file"),
    ]
    r.rpush(K.jobs, *[c[0] for c in cases])
    push(r, ok)
    w = workers.start(redis_server, "-w", "1", "--allow-root", str(root))
    workers.wait_for(lambda: r.llen(K.done) == 1 and r.llen(K.failed) == len(cases), 30, "every job recorded")
    failed = entries(r, K.failed)
    for f, (_payload, kind, reason) in zip(failed, cases):
        assert f["error"]["type"] == kind and reason in f["error"]["message"], f["error"]
        assert f["retryCount"] == 0
    assert r.llen(K.retry) == 0 and w.alive()
    assert "Traceback" not in w.text()
    assert sorted(os.listdir(out)) == sorted(f"good_{op}.webp" for op in ("thumbnail", "blur", "low-quality"))
    assert not any("\n" in name for name in os.listdir(root))


def test_a_file_name_with_a_newline_cannot_forge_a_log_line(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    bad = src / "x\nError: all good.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg at all, just bytes")
    run = subprocess.run([sys.executable, "-m", "imgtool", "process", str(src), "-o", str(tmp_path / "o"),
                          "--backend", "cpu"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "x\\nError: all good.jpg" in errors[0], run.stderr
    assert not any(line.startswith("Error: all good") for line in run.stderr.splitlines())


def test_process_allow_root_refuses_links_out_and_processes_the_rest(tmp_path):
    root = tmp_path / "tree"
    outside = tmp_path / "outside"
    make_image(root / "ok.png")
    secret = make_image(outside / "secret.png")
    (root / "link.png").symlink_to(secret)
    (root / "sub").mkdir()
    (root / "sub" / "processed").symlink_to(outside, target_is_directory=True)  # processed/ leading out
    make_image(root / "sub" / "two.png", seed=2)
    run = subprocess.run([sys.executable, "-m", "imgtool", "process", str(root), "--allow-root", str(root),
                          "--backend", "cpu", "--ops", "thumbnail", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    lines = {os.path.basename(d["input"]): d for d in map(json.loads, run.stdout.splitlines())}
    assert lines["ok.png"]["status"] == "done"
    assert lines["link.png"]["status"] == "failed"
    assert lines["link.png"]["error"]["type"] == "path_not_allowed"
    assert lines["two.png"]["status"] == "failed"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]
    assert (root / "processed" / "ok_thumbnail.webp").is_file()
    # An input outside the root, given by name, is refused too.
    run = subprocess.run([sys.executable, "-m", "imgtool", "process", str(secret), "--allow-root", str(root),
                          "-o", str(root / "o"), "--backend", "cpu"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "outside the allowed roots" in run.stderr
    assert not (root / "o").exists()
