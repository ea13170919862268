"""Where the local store keeps the settings each output was made with: an extended attribute, else an index file.

The record of an output is the fingerprint of the settings that made it
(``Operation.fingerprint``).  It goes, in order of preference:

1. into the extended attribute ``user.imgtool.settings`` of the output
   file itself, set on the temporary file before it is renamed into place,
   so the output and its record appear together and a copy that keeps
   xattrs (``cp -a``, ``rsync -X``) keeps it;
2. where the filesystem refuses user xattrs (some network and FAT-like
   filesystems, or ``IMGTOOL_SETTINGS_INDEX=1``), into ``.imgtool-index`` in
   the output folder: a hidden file (every listing skips hidden names, and it
   is no image) of one JSON line per output written, appended in one
   ``write`` under an exclusive lock of the folder, the last line for a
   name winning.  Each line names the output file it is about (inode, mtime,
   size), so a record never vouches for a file written over by anything else.
   When most of its lines are out of date it is rewritten whole, through a
   temporary file renamed into place.

Never inside the WebP or AVIF: the outputs carry no metadata at all.
A lost or unreadable record only ever makes an output stale (it is redone);
it can never make a stale output look up to date.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: the index is then guarded by this process's lock only
    fcntl = None

XATTR = "user.imgtool.settings"
INDEX_NAME = ".imgtool-index"
#: Set (to anything but "" or "0") to keep every record in the index file, xattrs or not
#: (for filesystems that accept xattrs and then lose them, such as some network mounts).
FORCE_INDEX_ENV = "IMGTOOL_SETTINGS_INDEX"
# Rewrite the index once it holds this many more lines than live records.
COMPACT_SLACK = 256
# Folders whose index this process keeps parsed.
CACHED_FOLDERS = 64
# An index larger than this is not read (its records count as missing: outputs are redone) and is
# started afresh by the next record; a folder's real index stays far below it (~100 bytes an output).
MAX_INDEX_BYTES = 64 << 20

# errnos that mean "this filesystem (or this file) keeps no user xattrs".  Not ENOSPC:
# a full disk is the output's failure, named as such.
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.E2BIG,
             getattr(errno, "ENODATA", errno.ENOENT)}


def force_index() -> bool:
    return os.environ.get(FORCE_INDEX_ENV, "") not in ("", "0")


def _key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def set_xattr(fd: int, fingerprint: str) -> bool:
    """Record ``fingerprint`` on the open file ``fd``; False when the filesystem refuses (use the index)."""
    if force_index() or not hasattr(os, "setxattr"):
        return False
    try:
        os.setxattr(fd, XATTR, fingerprint.encode("utf-8", "surrogatepass"))
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return False
        raise
    return True


def get_xattr(path: Path) -> str | None:
    """The fingerprint in the output's xattr, or None when it has none (or the filesystem keeps none)."""
    if force_index() or not hasattr(os, "getxattr"):
        return None
    try:
        return os.getxattr(path, XATTR, follow_symlinks=False).decode("utf-8", "surrogatepass")
    except OSError:
        return None


class SettingsIndex:
    """The ``.imgtool-index`` files of output folders, parsed once per process and read on as they grow."""

    def __init__(self):
        self._lock = threading.Lock()
        # folder -> (index file's (dev, ino), bytes parsed, {name: (fingerprint, file key)}, lines parsed)
        self._cache: OrderedDict[str, tuple] = OrderedDict()

    def lookup(self, path: Path, st: os.stat_result) -> str | None:
        """The fingerprint recorded for the output at ``path`` (``st`` its stat), if the record is about that file."""
        entries = self._entries(path.parent)
        entry = entries.get(path.name)
        if entry is None or entry[1] != _key(st):
            return None
        return entry[0]

    def record(self, folder: Path, written: list[tuple[str, str, os.stat_result]]) -> None:
        """Append a record per ``(name, fingerprint, stat)`` of outputs just written into ``folder``."""
        lines = b"".join(
            json.dumps({"name": name, "settings": fp, "file": list(_key(st))}, ensure_ascii=True).encode() + b"\n"
            for name, fp, st in written)
        index = folder / INDEX_NAME
        with _FolderLock(folder):
            try:
                oversized = os.stat(index).st_size > MAX_INDEX_BYTES
            except FileNotFoundError:
                oversized = False
            if oversized:  # not ours to read: start afresh
                from .local import write_atomic

                write_atomic(index, b"")
            fd = os.open(index, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            try:
                os.write(fd, lines)  # one write with O_APPEND: never interleaved with another's
            finally:
                os.close(fd)
            entries, count = self._read(folder)
            if count > 2 * len(entries) + COMPACT_SLACK:
                self._compact(folder, entries)

    # -- reading --

    def _entries(self, folder: Path) -> dict:
        return self._read(folder)[0]

    def _read(self, folder: Path) -> tuple[dict, int]:
        """The folder's records by name, and how many lines hold them; read on from where the last read ended."""
        index = folder / INDEX_NAME
        try:
            st = os.stat(index)
        except OSError:
            return {}, 0
        if st.st_size > MAX_INDEX_BYTES:
            return {}, 0
        ident = (st.st_dev, st.st_ino)
        with self._lock:
            cached = self._cache.get(str(folder))
            if cached is not None and cached[0] == ident and cached[1] == st.st_size:
                self._cache.move_to_end(str(folder))
                return cached[2], cached[3]
            if cached is not None and cached[0] == ident and cached[1] < st.st_size:
                offset, entries, count = cached[1], dict(cached[2]), cached[3]
            else:
                offset, entries, count = 0, {}, 0
            try:
                with open(index, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                return {}, 0
            # Only whole lines: a line being appended right now is read next time.
            end = data.rfind(b"\n") + 1
            count += _parse(data[:end], entries)
            self._cache[str(folder)] = (ident, offset + end, entries, count)
            self._cache.move_to_end(str(folder))
            while len(self._cache) > CACHED_FOLDERS:
                self._cache.popitem(last=False)
            return entries, count

    # -- compaction --

    def _compact(self, folder: Path, entries: dict) -> None:
        """Rewrite the index with the records still about the files there (atomically: a reader sees old or new)."""
        live = []
        for name, (fp, key) in entries.items():
            try:
                if _key(os.lstat(folder / name)) == tuple(key):
                    live.append(json.dumps({"name": name, "settings": fp, "file": list(key)}) + "\n")
            except OSError:
                continue
        from .local import write_atomic  # the one way a file is put in place

        write_atomic(folder / INDEX_NAME, "".join(live).encode())
        with self._lock:
            self._cache.pop(str(folder), None)


def _parse(data: bytes, entries: dict) -> int:
    """Add the well-formed records in ``data`` to ``entries`` (later lines win); return the lines seen."""
    lines = data.split(b"\n")
    n = 0
    for line in lines:
        if not line.strip():
            continue
        n += 1
        try:
            rec = json.loads(line)
            name, fp, key = rec["name"], rec["settings"], rec["file"]
            if isinstance(name, str) and isinstance(fp, str) and len(key) == 3 and all(
                    isinstance(k, int) for k in key):
                entries[name] = (fp, tuple(key))
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line: its output is stale, nothing worse
    return n


class _FolderLock:
    """An exclusive flock of the folder itself (no lock file), against other imgtool processes."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.fd = -1

    def __enter__(self):
        if fcntl is not None:
            self.fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1


INDEX = SettingsIndex()
