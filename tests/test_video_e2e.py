"""End to end: video uploads through `imgtool process` (folders, s3://) and the queue's names.

The clips (tests/videoclips.py, made with PyAV) colour every frame by its
index, so the thumbnail says exactly which frame it was made from; corner
marks say which way is up.  Outputs are lossless so the check is exact.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgtool.watcher import is_watched_candidate
from imgtool.storage import is_image_name
from videoclips import FORMATS, GREEN, HEIGHT, RED, WIDTH, corner_colours, frame_index, make_audio, make_clip

CLI = [sys.executable, "-m", "imgtool"]
N = 36  # frames at 25 fps: 1.44 s, the frame at 1 s is frame 25
KINDS = ["h264-mp4", "h264-mov", "h264-m4v", "vp9-webm", "vp8-webm", "mpeg4-avi", "h264-mkv", "hevc-mp4"]


def process(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "process", *args, "--backend", "cpu", "--lossless", "--json"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def results(res) -> dict[str, dict]:
    return {Path(d["input"]).name: d for d in map(json.loads, res.stdout.splitlines())}


def near(colour, want, tolerance=60) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, want))


def test_videos_in_a_folder_give_the_frame_at_one_second_upright(tmp_path):
    up = tmp_path / "uploads"
    (up / "u1").mkdir(parents=True)
    names = {}
    for kind in KINDS:
        name = f"{kind}{FORMATS[kind][3]}"
        make_clip(up / "u1" / name, kind, n=N)
        names[name] = (25, N)
    make_clip(up / "u1" / "portrait.mp4", "h264-mp4", n=N, rotation=90)
    make_clip(up / "u1" / "mirrored.mov", "h264-mov", n=N, rotation=270, hflip=True)
    make_clip(up / "u1" / "short.webm", "vp9-webm", n=10)  # 0.4 s: its first frame
    names.update({"portrait.mp4": (25, N), "mirrored.mov": (25, N), "short.webm": (0, 10)})
    data = make_clip(up / "u1" / "whole.mp4", "h264-mp4", n=N).read_bytes()
    (up / "u1" / "whole.mp4").unlink()
    (up / "u1" / "cut.mp4").write_bytes(data[: len(data) // 2])
    make_audio(up / "u1" / "song.m4v", "mp4", "aac")
    (up / "u1" / "fake.avi").write_bytes(b"#EXTM3U\nfile:///etc/passwd\n")

    res = process(str(up), "--ops", "thumbnail,low-quality")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    got = results(res)
    assert set(got) == {*names, "cut.mp4", "song.m4v", "fake.avi"}
    for name, (index, n) in names.items():
        assert got[name]["status"] == "done", got[name]
        stem = name.rsplit(".", 1)[0]
        with Image.open(up / "u1" / "processed" / f"{stem}_thumbnail.webp") as im:
            assert im.format == "WEBP"
            # The rotated clips store 48x64 frames; shown as their display matrix says, 64x48.
            assert im.size == (WIDTH, HEIGHT), (name, im.size)
            assert frame_index(im, n) == index, name
            tl, tr, bl, br = corner_colours(im)
            assert near(tl, RED) and near(tr, GREEN), (name, tl, tr)  # upright, not mirrored
        with Image.open(up / "u1" / "processed" / f"{stem}_low-quality.webp") as im:
            assert im.size == (WIDTH // 2, HEIGHT // 2)
    errors = {name: got[name]["error"] for name in ("cut.mp4", "song.m4v", "fake.avi")}
    assert errors["cut.mp4"]["type"] == "corrupt_image" and "truncated" in errors["cut.mp4"]["message"]
    assert errors["song.m4v"]["type"] == "unsupported_format"
    assert "no video stream" in errors["song.m4v"]["message"]
    assert errors["fake.avi"]["type"] == "unsupported_format"
    for name, err in errors.items():
        assert str(up / "u1" / name) in err["message"] and not err["retryable"]
        assert f"Error: {up / 'u1' / name}:" in res.stderr
    # Nothing written for a failed input.
    assert not list((up / "u1" / "processed").glob("cut_*")) and not list((up / "u1" / "processed").glob("song_*"))


def test_the_pixel_limit_and_the_time_budget_apply_to_a_video(tmp_path):
    clip = make_clip(tmp_path / "clip.mkv", "h264-mkv", n=N)
    res = process(str(clip), "--max-pixels", str(WIDTH * HEIGHT - 1))
    [d] = results(res).values()
    assert res.returncode == 1 and d["error"]["type"] == "too_large", d
    res = process(str(clip), "--video-timeout", "0.000001")
    [d] = results(res).values()
    assert res.returncode == 1 and d["error"]["type"] == "timeout" and not d["error"]["retryable"], d
    res = process(str(clip), "--video-timeout", "30")
    assert res.returncode == 0 and results(res)["clip.mkv"]["width"] == WIDTH


def test_a_video_in_object_storage(seaweed, s3_bucket, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    c = seaweed.client()
    c.put_object(Bucket=s3_bucket, Key="v/clip.mp4", Body=make_clip(None, "h264-mp4", n=N, rotation=90))
    res = process(f"s3://{s3_bucket}/v/", "--ops", "thumbnail", env=seaweed.env())
    assert res.returncode == 0, res.stderr
    head = c.head_object(Bucket=s3_bucket, Key="v/processed/clip_thumbnail.webp")
    assert head["ContentType"] == "image/webp"
    data = c.get_object(Bucket=s3_bucket, Key="v/processed/clip_thumbnail.webp")["Body"].read()
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (WIDTH, HEIGHT) and frame_index(im, N) == 25
        tl, tr, _bl, _br = corner_colours(im)
        assert near(tl, RED) and near(tr, GREEN)


def test_videos_are_inputs_for_folders_watch_and_enqueue(tmp_path):
    for suffix in (".mp4", ".MOV", ".m4v", ".webm", ".mkv", ".avi"):
        assert is_image_name(f"clip{suffix}")
        assert is_watched_candidate(tmp_path / f"u1/clip{suffix}", tmp_path)
    assert not is_watched_candidate(tmp_path / "u1/processed/clip.mp4", tmp_path)
    assert not is_image_name(".clip.mp4") and not is_image_name("clip.mp4.part")
    (tmp_path / "u1").mkdir()
    make_clip(tmp_path / "u1" / "c.webm", "vp9-webm", n=4)
    res = subprocess.run([*CLI, "enqueue", "--dry-run", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    [job] = [json.loads(x) for x in res.stdout.splitlines()]
    assert job["jobId"] == "c" and job["inputPath"] == str(tmp_path / "u1" / "c.webm")
    assert job["outputDir"] == str(tmp_path / "u1" / "processed")


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_watch_takes_a_video_upload(mode, tmp_path):
    from test_watch_e2e import WatchProcess, wait_until

    root = tmp_path / "uploads"
    (root / "user1").mkdir(parents=True)
    w = WatchProcess(root, mode, "--lossless")
    try:
        clip = make_clip(None, "h264-mov", n=N, rotation=90)
        dst = root / "user1" / "9f3c-video.mov"
        dst.write_bytes(clip)
        outputs = [root / "user1" / "processed" / f"9f3c-video_{op}.webp" for op in ("thumbnail", "blur",
                                                                                      "low-quality")]
        assert wait_until(lambda: all(p.exists() for p in outputs) and w.records), w.stderr()
        [record] = w.records
        assert record["status"] == "done" and (record["width"], record["height"]) == (WIDTH, HEIGHT)
        with Image.open(outputs[0]) as im:
            assert frame_index(im, N) == 25
            tl, tr, _bl, _br = corner_colours(im)
            assert near(tl, RED) and near(tr, GREEN)
    finally:
        w.stop()
