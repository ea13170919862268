"""imgtool.storage: the local store's listing, reading, atomic all-or-nothing writes and freshness."""

import os
import stat
from pathlib import Path

import pytest

from imgtool import storage
from imgtool.errors import CorruptImage, InputNotFound, PermanentError, TransientIOError, UnsupportedFormat
from imgtool.storage import Output
from imgtool.storage import index
from imgtool.storage.local import LocalStore, write_atomic


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


# --- the local store ------------------------------------------------------------------------

STORE = LocalStore()


def test_write_outputs_is_all_or_nothing(tmp_path):
    out = tmp_path / "processed"
    (out / "b.webp").mkdir(parents=True)  # a folder where the second output must go
    outputs = [Output(out / "a.webp", b"A", "image/webp"), Output(out / "b.webp", b"B", "image/webp")]
    with pytest.raises(PermanentError, match="directory"):
        STORE.write_outputs(outputs)
    assert sorted(p.name for p in out.iterdir()) == ["b.webp"] and (out / "b.webp").is_dir()
    (out / "b.webp").rmdir()
    assert STORE.write_outputs(outputs) == [out / "a.webp", out / "b.webp"]
    assert (out / "a.webp").read_bytes() == b"A" and (out / "b.webp").read_bytes() == b"B"
    assert _temp_files(tmp_path) == []


@pytest.fixture(params=["xattr", "index"])
def records(request, monkeypatch):
    """Each freshness test twice: settings kept in xattrs, and in the index file (as where xattrs are refused)."""
    if request.param == "index":
        monkeypatch.setenv(index.FORCE_INDEX_ENV, "1")
    else:
        monkeypatch.delenv(index.FORCE_INDEX_ENV, raising=False)
    return request.param


def _put(out: Path, fingerprint: str, data: bytes = b"y") -> None:
    STORE.write_outputs([Output(out, data, "image/webp", fingerprint)])


def test_fresh_compares_mtimes_and_refuses_links(tmp_path, records):
    src = tmp_path / "a.jpg"
    src.write_bytes(b"x")
    earlier = src.stat().st_mtime_ns - 10**9
    os.utime(src, ns=(earlier, earlier))
    out = tmp_path / "a_blur.webp"
    assert not STORE.fresh(src, {out: "any"})  # missing
    _put(out, "any")
    assert STORE.fresh(src, {out: "any"})
    later = out.stat().st_mtime_ns + 10**9
    os.utime(src, ns=(later, later))
    assert not STORE.fresh(src, {out: "any"})  # the input is newer
    os.utime(src, ns=(earlier, earlier))
    out.unlink()
    target = tmp_path / "elsewhere.webp"
    _put(target, "any")
    out.symlink_to(target)
    assert not STORE.fresh(src, {out: "any"})  # a link is never one of our outputs


def test_stale_names_the_outputs_made_with_other_settings(tmp_path, records):
    src = tmp_path / "a.jpg"
    src.write_bytes(b"x")
    os.utime(src, ns=(10**9, 10**9))
    outs = {tmp_path / "p" / f"a_{op}.webp": f"{op};q=80" for op in ("thumbnail", "blur", "low-quality")}
    STORE.write_outputs([Output(loc, b"w", "image/webp", fp) for loc, fp in outs.items()])
    assert STORE.stale(src, outs) == []
    changed = dict(outs)
    changed[tmp_path / "p" / "a_blur.webp"] = "blur;q=81"
    assert STORE.stale(src, changed) == [tmp_path / "p" / "a_blur.webp"]
    # No record at all (made by something else, or before records were kept): stale.
    bare = tmp_path / "p" / "b_thumbnail.webp"
    bare.write_bytes(b"w")
    assert STORE.stale(src, {bare: "thumbnail;q=80"}) == [bare]
    # Written over in place by anything else: the record no longer vouches for it.
    if records == "index":
        first = tmp_path / "p" / "a_thumbnail.webp"
        os.unlink(first)
        first.write_bytes(b"someone else's")
        assert STORE.stale(src, outs) == [first]


def test_records_never_go_inside_the_output(tmp_path, records):
    out = tmp_path / "a_thumbnail.webp"
    _put(out, "thumbnail;q=80;width=256", b"RIFF....WEBP")
    assert out.read_bytes() == b"RIFF....WEBP"
    names = sorted(p.name for p in tmp_path.iterdir())
    if records == "xattr":
        assert os.getxattr(out, index.XATTR) == b"thumbnail;q=80;width=256"
        assert names == ["a_thumbnail.webp"]
    else:
        assert index.XATTR not in os.listxattr(out)
        assert names == [index.INDEX_NAME, "a_thumbnail.webp"]
        assert not storage.is_image_name(index.INDEX_NAME)  # no listing takes it


def test_the_index_is_compacted_and_read_on_as_it_grows(tmp_path, monkeypatch):
    monkeypatch.setenv(index.FORCE_INDEX_ENV, "1")
    src = tmp_path / "a.jpg"
    src.write_bytes(b"x")
    os.utime(src, ns=(10**9, 10**9))
    out = tmp_path / "p" / "a_blur.webp"
    for i in range(2 * index.COMPACT_SLACK):
        _put(out, f"blur;q={i % 7}")
        assert STORE.fresh(src, {out: f"blur;q={i % 7}"})  # each read picks up the line just appended
    lines = (tmp_path / "p" / index.INDEX_NAME).read_text().splitlines()
    assert len(lines) <= index.COMPACT_SLACK + 2  # rewritten whole: only the live record and what came since
    assert STORE.fresh(src, {out: f"blur;q={(2 * index.COMPACT_SLACK - 1) % 7}"})
    # A torn last line (a crash mid-append) costs that record only.
    with open(tmp_path / "p" / index.INDEX_NAME, "ab") as f:
        f.write(b'{"name": "a_blur.webp", "sett')
    assert STORE.fresh(src, {out: f"blur;q={(2 * index.COMPACT_SLACK - 1) % 7}"})


def test_open_input_refuses_what_is_not_a_regular_non_empty_file(tmp_path):
    with pytest.raises(InputNotFound):
        STORE.open_input(tmp_path / "nope.jpg")
    with pytest.raises(UnsupportedFormat, match="directory"):
        STORE.open_input(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(CorruptImage, match="empty"):
        STORE.open_input(tmp_path / "empty.jpg")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(UnsupportedFormat, match="regular file"):
        STORE.open_input(fifo)
    (tmp_path / "a.jpg").write_bytes(b"12345")
    with STORE.open_input(tmp_path / "a.jpg") as f:
        assert f.size == 5 and f.file.read() == b"12345" and f.name == tmp_path / "a.jpg"


def test_check_writable(tmp_path):
    STORE.check_writable(tmp_path)
    STORE.check_writable(tmp_path / "not" / "yet")  # made when the first output is written
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(PermanentError, match="not a folder"):
        STORE.check_writable(tmp_path / "file" / "processed")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root may write anywhere
            with pytest.raises(TransientIOError, match="cannot be written"):
                STORE.check_writable(locked / "processed")
    finally:
        locked.chmod(0o700)


class _Prefixed(LocalStore):
    """A store for ``mem://PATH`` locations, to show the factory picks stores by scheme alone."""

    def location(self, text):
        return "mem://" + os.fspath(text).removeprefix("mem://")


def test_the_factory_picks_the_store_from_the_location(monkeypatch):
    assert isinstance(storage.for_location("/srv/uploads/a.jpg"), LocalStore)
    assert isinstance(storage.for_location(Path("relative/a.jpg")), LocalStore)
    assert storage.location("uploads/a.jpg") == Path("uploads/a.jpg")
    assert storage.for_location("mem://x") is storage.for_location("/x")  # no such scheme: a path
    monkeypatch.setitem(storage.SCHEMES, "mem", f"{__name__}:_Prefixed")
    monkeypatch.setattr(storage, "_stores", {})
    assert type(storage.for_location("mem://bucket/a.jpg")) is _Prefixed
    assert storage.location("mem://bucket/a.jpg") == "mem://bucket/a.jpg"
    assert type(storage.for_location("/bucket/a.jpg")) is LocalStore


def test_an_index_that_cannot_be_written_costs_a_redo_not_the_outputs(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(index.FORCE_INDEX_ENV, "1")
    src = tmp_path / "a.jpg"
    src.write_bytes(b"x")
    os.utime(src, ns=(10**9, 10**9))
    out = tmp_path / "p" / "a_blur.webp"
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / index.INDEX_NAME).mkdir()  # in the way: the append fails (EISDIR), as a foreign file would
    with caplog.at_level("WARNING", logger="imgtool"):
        _put(out, "blur;q=80")
    assert out.read_bytes() == b"y"  # written and kept
    assert "not recorded" in caplog.text
    assert not STORE.fresh(src, {out: "blur;q=80"})  # so the next run redoes it


def test_an_oversized_index_is_not_read_and_is_started_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv(index.FORCE_INDEX_ENV, "1")
    monkeypatch.setattr(index, "MAX_INDEX_BYTES", 4096)
    src = tmp_path / "a.jpg"
    src.write_bytes(b"x")
    os.utime(src, ns=(10**9, 10**9))
    out = tmp_path / "p" / "a_blur.webp"
    _put(out, "blur;q=80")
    with open(tmp_path / "p" / index.INDEX_NAME, "ab") as f:
        f.write(b"\n" * 5000)  # past the bound: a hostile or broken index
    assert not STORE.fresh(src, {out: "blur;q=80"})
    _put(out, "blur;q=80")
    assert (tmp_path / "p" / index.INDEX_NAME).stat().st_size < 4096
    assert STORE.fresh(src, {out: "blur;q=80"})
