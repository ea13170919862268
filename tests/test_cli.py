"""End-to-end tests of `imgtool process` run as a real subprocess."""

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

from imgtool.ops import DEFAULT_QUALITY, OPERATIONS, Settings, output_size



def run(*args, cwd=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imgtool", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, **kw,
    )


def photo(path: Path, w: int, h: int, seed: int = 0, exif=None) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1)
    img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **({"exif": exif} if exif is not None else {}))
    return path


def test_process_writes_three_outputs_per_image_with_spec_sizes(tmp_path):
    sizes = [(640, 480), (300, 500), (200, 100), (1, 1), (257, 3)]
    for i, (w, h) in enumerate(sizes):
        photo(tmp_path / "up" / f"img{i}.jpg", w, h, seed=i)
    r = run("process", tmp_path / "up", "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "up" / "processed"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"img{i}_{op}.webp" for i in range(len(sizes)) for op in OPERATIONS)
    settings = Settings()
    for i, (w, h) in enumerate(sizes):
        for op in OPERATIONS:
            with Image.open(out / f"img{i}_{op}.webp") as im:
                assert im.format == "WEBP"
                assert im.size == output_size(op, w, h, settings)
                assert "exif" not in im.info and "icc_profile" not in im.info and "xmp" not in im.info
    assert "5 done, 0 skipped, 0 failed" in r.stderr


def test_second_run_rewrites_nothing_and_force_redoes_all(tmp_path):
    for i in range(3):
        photo(tmp_path / f"p{i}.png", 300, 200, seed=i)
    assert run("process", tmp_path, "--backend", "cpu").returncode == 0
    out = tmp_path / "processed"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}
    r = run("process", tmp_path, "--backend", "cpu")
    assert r.returncode == 0 and "0 done, 3 skipped" in r.stderr
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()} == before
    r = run("process", tmp_path, "--backend", "cpu", "--force")
    assert r.returncode == 0 and "3 done, 0 skipped" in r.stderr
    after = {p.name: p.stat().st_ino for p in out.iterdir()}
    assert all(after[n] != before[n][0] for n in before)


def test_touched_input_is_redone(tmp_path):
    src = photo(tmp_path / "a.jpg", 120, 80)
    assert run("process", src, "--backend", "cpu").returncode == 0
    later = time.time() + 5
    os.utime(src, (later, later))
    r = run("process", src, "--backend", "cpu")
    assert "1 done, 0 skipped" in r.stderr


def test_json_lines_and_output_dir_mirrors_subfolders(tmp_path):
    photo(tmp_path / "in" / "u1" / "a.jpg", 400, 300)
    photo(tmp_path / "in" / "u2" / "b.jpg", 100, 100)
    r = run("process", tmp_path / "in", "-o", tmp_path / "out", "--json", "--ops", "thumbnail,low-quality",
            "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(d["jobId"] for d in lines) == ["a", "b"]
    assert all(d["status"] == "done" and set(d["outputs"]) == {"thumbnail", "low-quality"} for d in lines)
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.webp")) == [
        "u1/a_low-quality.webp", "u1/a_thumbnail.webp", "u2/b_low-quality.webp", "u2/b_thumbnail.webp"]
    assert not (tmp_path / "in" / "u1" / "processed").exists()


def test_options_change_the_outputs(tmp_path):
    src = photo(tmp_path / "a.png", 500, 250)
    r = run("process", src, "--backend", "cpu", "--thumb-width", "100", "--lossless", "--effort", "0",
            "--blur-sigma", "2")
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "processed" / "a_thumbnail.webp") as im:
        assert im.size == (100, 50)
    with Image.open(tmp_path / "processed" / "a_blur.webp") as im:
        assert im.size == (500, 250)


def test_dry_run_writes_nothing(tmp_path):
    photo(tmp_path / "a.jpg", 64, 64)
    r = run("process", tmp_path, "--dry-run", "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    assert "would write" in r.stdout and "a_thumbnail.webp" in r.stdout
    assert not (tmp_path / "processed").exists()


@pytest.mark.parametrize("args, needle", [
    (["process"], "Missing argument"),
    (["process", "{tmp}", "--ops", "thumbnail,sparkle"], "unknown operation 'sparkle'"),
    (["process", "{tmp}", "--effort", "9"], "--effort"),
    (["process", "{tmp}", "--blur-sigma", "51"], "--blur-sigma"),
    (["process", "{tmp}", "--thumb-width", "0"], "--thumb-width"),
    (["process", "{tmp}", "--thumb-width", "256,640,256"], "256 is given twice"),
    (["process", "{tmp}", "--thumb-width", "256,x"], "--thumb-width"),
    (["process", "{tmp}", "--blur-sigma", "soft"], "--blur-sigma"),
    (["process", "{tmp}", "--format", "gif"], "--format"),
    (["process", "{tmp}", "--avif-speed", "11"], "--avif-speed"),
    (["process", "{tmp}", "--format", "avif", "--lossless"], "cannot be lossless"),
    (["process", "{tmp}", "--backend", "tpu"], "--backend"),
    (["process", "{tmp}", "--no-such-option"], "No such option"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, args, needle):
    r = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_bad_inputs_fail_one_line_each_and_others_succeed(tmp_path):
    photo(tmp_path / "good.jpg", 50, 40)
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    locked = photo(tmp_path / "locked.png", 20, 20)
    locked.chmod(0)
    r = run("process", tmp_path, "--backend", "cpu")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    named = {Path(line.split(": ")[1]).name for line in errors}
    expected = {"text.jpg", "empty.png"} | (set() if os.geteuid() == 0 else {"locked.png"})
    assert expected <= named
    assert (tmp_path / "processed" / "good_thumbnail.webp").exists()
    assert not (tmp_path / "processed" / "text_thumbnail.webp").exists()


def test_each_bad_path_is_its_own_failure_and_the_rest_are_processed(tmp_path):
    good = photo(tmp_path / "photo.jpg", 50, 40)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    r = run("process", tmp_path / "nope.jpg", good, tmp_path / "empty", "--backend", "cpu")
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: {tmp_path / 'nope.jpg'}: no such file or directory",
                      f"Error: no images found in {tmp_path / 'empty'}"], r.stderr
    assert "1 done, 0 skipped, 2 failed" in r.stderr
    assert (tmp_path / "processed" / "photo_thumbnail.webp").exists()
    r = run("process", tmp_path / "empty", "--json", "--backend", "cpu")
    assert r.returncode == 1
    assert [json.loads(line)["status"] for line in r.stdout.splitlines()] == ["failed"]
    assert r.stderr.splitlines()[0] == f"Error: no images found in {tmp_path / 'empty'}"


def test_an_unwritable_output_folder_is_one_error_before_any_decode(tmp_path):
    for i in range(5):
        photo(tmp_path / "in" / f"p{i}.png", 64, 48, seed=i)
    # Corrupt: decoding it would be an error line of its own, so its absence shows nothing was decoded.
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "file").write_text("a file where a folder should be")
    r = run("process", tmp_path / "in", "-o", tmp_path / "file" / "out", "--backend", "cpu")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and str(tmp_path / "file" / "out") in errors[0] and "not a folder" in errors[0], r.stderr
    assert "0 done, 0 skipped, 6 failed" in r.stderr
    r = run("process", tmp_path / "in", "-o", tmp_path / "file" / "out", "--backend", "cpu", "--json")
    assert len(r.stdout.splitlines()) == 6 and "broken" not in r.stderr


def _in_user_namespace(script: str) -> subprocess.CompletedProcess:
    """``script`` in a new user and mount namespace (no root needed), where it may mount a small tmpfs."""
    import shutil

    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        # A kernel or container setting, not a package the project can install:
        # skipped with the reason, on CI too (where this was written they are on).
        pytest.skip("no user namespaces here (unshare -Urm): the read-only and full-disk tests need them")
    return subprocess.run(["unshare", "-Urm", "sh", "-ec", script], capture_output=True, text=True, timeout=120)


def test_a_read_only_output_folder_is_one_error(tmp_path):
    for i in range(4):
        photo(tmp_path / "in" / f"p{i}.png", 64, 48, seed=i)
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = _in_user_namespace(f"mount -t tmpfs -o ro tmpfs {mnt}; "
                           f"{sys.executable} -m imgtool process {tmp_path / 'in'} -o {mnt} --backend cpu || "
                           "echo rc=$?")
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: {mnt}: cannot be written (Read-only file system)"], r.stderr
    assert "0 done, 0 skipped, 4 failed" in r.stderr and "rc=1" in r.stdout


def test_a_full_disk_is_named_with_the_file_that_hit_it(tmp_path):
    """A real full filesystem (a 48 KiB tmpfs): the error says ENOSPC and names the output being written."""
    big = tmp_path / "in" / "big.png"
    big.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)).save(big)  # noise: large outputs
    photo(tmp_path / "in" / "small.png", 40, 30)
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = _in_user_namespace(f"mount -t tmpfs -o size=48k tmpfs {mnt}; "
                           f"{sys.executable} -m imgtool process {tmp_path / 'in'} -o {mnt} --backend cpu -j 1 "
                           f"--json > {tmp_path / 'out.json'} || echo rc=$?; ls -a {mnt}")
    assert "rc=1" in r.stdout, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "no space left on device (ENOSPC)" in errors[0], r.stderr
    lines = {json.loads(line)["jobId"]: json.loads(line) for line in (tmp_path / "out.json").read_text().splitlines()}
    assert lines["small"]["status"] == "done"
    failed = lines["big"]
    # The file named is the one whose write failed: not written, while every earlier output of the job was.
    named = Path(errors[0].split(": ")[1])
    assert named.parent == mnt and named.name.startswith("big_") and failed["error"]["type"] == "no_space"
    assert failed["error"]["retryable"] is True
    # All or nothing: nothing of big's is left, and no temporary file.
    assert [n for n in r.stdout.split() if n.startswith(("big_", ".imgtool-"))] == []


def test_bare_imgtool_prints_the_usage_and_commands_without_an_error_line():
    r = run()
    assert r.returncode == 2
    assert r.stderr.startswith("Usage: imgtool [OPTIONS] COMMAND") and "Error" not in r.stderr
    assert all(cmd in r.stderr for cmd in ("process", "watch", "queue", "enqueue", "status", "completion"))


def test_colliding_job_ids_are_reported_not_overwritten(tmp_path):
    photo(tmp_path / "same.jpg", 40, 40, seed=1)
    photo(tmp_path / "same.png", 60, 60, seed=2)
    r = run("process", tmp_path, "--backend", "cpu")
    assert r.returncode == 1
    assert "would overwrite" in r.stderr


def test_two_folders_mirrored_into_one_output_collide_once(tmp_path):
    photo(tmp_path / "a" / "x.jpg", 40, 40, seed=1)
    photo(tmp_path / "b" / "x.jpg", 60, 60, seed=2)
    photo(tmp_path / "b" / "y.jpg", 60, 60, seed=3)
    r = run("process", tmp_path / "a", tmp_path / "b", tmp_path / "a", "-o", tmp_path / "out", "--backend", "cpu")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "b/x.jpg" in errors[0] and "would overwrite" in errors[0]
    assert "2 done" in r.stderr
    with Image.open(tmp_path / "out" / "x_blur.webp") as im:
        assert im.size == (40, 40)


def test_ctrl_c_stops_and_leaves_no_partial_file(tmp_path):
    # How soon it stops is bench/stop_latency.py's to measure, on a quiet machine.
    for i in range(40):
        photo(tmp_path / f"big{i}.png", 1600, 1200, seed=i)
    proc = subprocess.Popen([sys.executable, "-m", "imgtool", "process", str(tmp_path), "--backend", "cpu",
                             "-j", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "processed"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and len(list(out.glob("*.webp"))) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)  # stops (40 big images left would take far longer), never hangs
    assert proc.returncode == 130, err
    assert "Interrupted" in err
    assert len(list(out.glob("*.webp"))) < 3 * 40  # stopped before the end
    assert "Traceback" not in err
    leftovers = [p.name for p in out.iterdir() if not p.name.endswith(".webp")]
    assert leftovers == []
    # Outputs come in whole sets: every image with any output has all three.
    by_job: dict[str, int] = {}
    for p in out.glob("*.webp"):
        by_job[p.name.rsplit("_", 1)[0]] = by_job.get(p.name.rsplit("_", 1)[0], 0) + 1
    assert all(n == 3 for n in by_job.values()), by_job
    for p in out.glob("*.webp"):
        with Image.open(p) as im:
            im.load()


def test_version_and_help_on_every_command():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("imgtool, version ")
    import click

    from imgtool.cli import cli

    commands = cli.list_commands(click.Context(cli))
    assert {"process", "watch", "queue", "enqueue", "status", "completion"} <= set(commands)
    for cmd in commands:
        r = run(cmd, "--help")
        assert r.returncode == 0 and "Usage: imgtool " + cmd in r.stdout, cmd
        assert "-h, --help" in r.stdout and r.stderr == "", cmd


def test_default_qualities_are_the_spec_ones():
    assert DEFAULT_QUALITY == {"thumbnail": 80, "blur": 80, "low-quality": 30}


def _run_on_a_terminal(args) -> str:
    """Run imgtool with stdin/stdout/stderr on a pseudo-terminal (100 columns); its output."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "imgtool", *map(str, args)],
                            stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(leader)
    return out.decode(errors="replace")


def test_progress_bar_on_a_terminal_only(tmp_path):
    for i in range(6):
        photo(tmp_path / f"p{i}.png", 400, 300, seed=i)
    shown = _run_on_a_terminal(["process", tmp_path, "--backend", "cpu", "-j", "1"])
    assert "img/s" in shown and "/6 [" in shown  # tqdm's bar, with the total counted
    r = run("process", tmp_path, "--backend", "cpu", "--force")
    assert "img/s" not in r.stderr and "%|" not in r.stderr
    quiet = _run_on_a_terminal(["-q", "process", tmp_path, "--backend", "cpu", "--force"])
    assert "img/s]" not in quiet and "6 done" in quiet


def test_widths_a_format_and_freshness(tmp_path):
    """Several widths and AVIF: a width the image does not get never makes it stale; a new one does."""
    photo(tmp_path / "a.png", 700, 350)
    args = ("--backend", "cpu", "--effort", "0", "--thumb-width", "256,640,1024")
    r = run("process", tmp_path, *args, "--json")
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)
    assert sorted(line["outputs"]) == ["blur", "low-quality", "thumbnail", "thumbnail-640"]
    assert line["skippedOutputs"] == {"thumbnail-1024": "1024 is wider than the image (700 pixels)"}
    with Image.open(tmp_path / "processed" / "a_thumbnail-640.webp") as im:
        assert im.size == (640, 320)
    r = run("process", tmp_path, *args)
    assert "0 done, 1 skipped" in r.stderr, r.stderr  # thumbnail-1024 is not missing: it is not made
    r = run("process", tmp_path, *args[:-1], "256,640,512", "--json")
    assert "1 done, 0 skipped" in r.stderr and "thumbnail-512" in json.loads(r.stdout)["outputs"]
    r = run("process", tmp_path, "--backend", "cpu", "--format", "avif", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(Path(p).name for p in json.loads(r.stdout)["outputs"].values()) == [
        "a_blur.avif", "a_low-quality.avif", "a_thumbnail.avif"]


@pytest.mark.parametrize("records", ["xattr", "index"])
def test_a_changed_option_redoes_exactly_the_outputs_it_changes(tmp_path, records):
    """Up to date means made from this input with these settings: each option redoes what it decides, no more."""
    env = {**os.environ, "IMGTOOL_SETTINGS_INDEX": "1" if records == "index" else ""}
    photo(tmp_path / "a.png", 600, 300)
    photo(tmp_path / "b.png", 200, 100, seed=1)
    out = tmp_path / "processed"

    def files():
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.webp")}

    def rerun(*opts, redone):
        before = files()
        r = run("process", tmp_path, "--backend", "cpu", "--effort", "0", *opts, env=env)
        assert r.returncode == 0, r.stderr
        after = files()
        assert sorted(n for n in after if after[n] != before.get(n)) == sorted(redone), r.stderr
        return r

    rerun(redone=[f"{j}_{op}.webp" for j in "ab" for op in OPERATIONS])
    r = rerun(redone=[])
    assert "0 done, 2 skipped" in r.stderr  # an unchanged run rewrites nothing
    r = rerun("--thumb-width", "128", redone=["a_thumbnail.webp", "b_thumbnail.webp"])
    assert "2 done, 0 skipped" in r.stderr
    with Image.open(out / "a_thumbnail.webp") as im:
        assert im.size == (128, 64)
    rerun("--thumb-width", "128", redone=[])
    rerun("--thumb-width", "128", "--blur-sigma", "3", redone=["a_blur.webp", "b_blur.webp"])
    rerun("--thumb-width", "128", "--blur-sigma", "3", "--lq-quality", "20",
          redone=["a_low-quality.webp", "b_low-quality.webp"])
    everything = [f"{j}_{op}.webp" for j in "ab" for op in OPERATIONS]
    rerun("--thumb-width", "128", "--blur-sigma", "3", "--lq-quality", "20", "--lossless",
          redone=everything)
    # Back to the defaults: everything was made with other settings, so everything is redone.
    rerun(redone=everything)
    # The format changes the names: AVIF outputs are new files, the WebP ones are left alone.
    r = run("process", tmp_path, "--backend", "cpu", "--format", "avif", "--ops", "low-quality", env=env)
    assert r.returncode == 0 and "2 done" in r.stderr, r.stderr
    assert sorted(p.name for p in out.glob("*.avif")) == ["a_low-quality.avif", "b_low-quality.avif"]
    assert (out / ".imgtool-index").exists() == (records == "index")


def test_a_short_option_means_the_same_in_every_command(tmp_path):
    """-o is --output wherever it is (--output-dir stays enqueue's older name), -j --jobs, -n --dry-run..."""
    import click

    from imgtool.cli import cli

    ctx = click.Context(cli)
    meanings: dict[str, list[set[str]]] = {}
    for name in cli.list_commands(ctx):
        for p in cli.get_command(ctx, name).params:
            if isinstance(p, click.Option):
                longs = {o for o in p.opts if o.startswith("--")}
                for short in (o for o in p.opts if len(o) == 2):
                    meanings.setdefault(short, []).append(longs)
    for short, sets in meanings.items():
        assert set.intersection(*sets), f"{short} means {sets}"
    assert len(meanings["-o"]) >= 2 and len(meanings["-j"]) >= 3  # process and enqueue; process, watch, queue
    src = photo(tmp_path / "a.jpg", 20, 20)
    lines = [run("enqueue", "--dry-run", flag, tmp_path / "out", src) for flag in ("-o", "--output", "--output-dir")]
    assert all(r.returncode == 0 for r in lines), lines[0].stderr
    assert {json.loads(r.stdout)["outputDir"] for r in lines} == {str(tmp_path / "out")}


def test_dry_run_names_only_the_outputs_a_changed_option_would_redo(tmp_path):
    photo(tmp_path / "a.png", 300, 200)
    assert run("process", tmp_path, "--backend", "cpu", "--effort", "0").returncode == 0
    r = run("process", tmp_path, "--backend", "cpu", "--effort", "0", "--thumb-width", "100", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{tmp_path / 'a.png'}: would write {tmp_path / 'processed' / 'a_thumbnail.webp'}"
    r = run("process", tmp_path, "--backend", "cpu", "--effort", "0", "--dry-run")
    assert "up to date" in r.stdout and "0 to process" in r.stderr
