"""imgtool.storage: the local store's listing, reading, atomic all-or-nothing writes and freshness."""

import os
import stat
from pathlib import Path

import pytest

from imgtool.errors import PermanentError
from imgtool.storage.local import write_atomic


# --- atomic writes ------------------------------------------------------------------------


def _temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".imgtool-") or p.name.endswith(".tmp")]


def test_write_atomic_creates_the_folder_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "x.webp"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two" and _temp_files(tmp_path) == []


def test_write_atomic_replaces_a_symlink_never_follows_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "out.webp"
    link.symlink_to(victim)
    write_atomic(link, b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_write_atomic_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "x.webp", b"data")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.webp").stat().st_mode) == 0o666 & ~umask


def test_write_atomic_failure_leaves_nothing(tmp_path):
    (tmp_path / "x.webp").mkdir()
    with pytest.raises(PermanentError, match="directory"):
        write_atomic(tmp_path / "x.webp", b"data", fsync=True)
    assert _temp_files(tmp_path) == []
