"""The local filesystem as a store: paths, regular-file reads, atomic all-or-nothing writes, mtimes.

Every open, stat, listing, rename and unlink of an input or an output is
here.  Confinement (``confine``) resolves a path and compares it with the
allowed roots; it returns a ``confine.ConfinedPath``, which reading and
writing then open from its root by directory handle, never by name (see
confine.py), so a folder swapped for a link after the check is never followed.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as statmod
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping, Sequence

from ..errors import (
    CorruptImage,
    ImgtoolError,
    PathNotAllowed,
    PermanentError,
    TransientIOError,
    UnsupportedFormat,
    from_os_error,
)
from . import confine as _confine
from .base import Input, Location, OnListError, Output, Rank, Store
from .index import INDEX, INDEX_NAME, get_xattr, set_xattr
from .names import is_image_name, is_walked_folder

log = logging.getLogger("imgtool")

# Up to this many images in one folder are ordered by their headers' pixel counts
# (reading every header then costs nothing next to the work); past it, by size.
HEADER_ORDER_LIMIT = 256


class LocalInput(Input):
    def __init__(self, path: Path, file: BinaryIO, st: os.stat_result):
        self.name = path
        self.file = file
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns


class LocalStore(Store):
    """Paths on this machine's filesystems."""

    # -- locations ------------------------------------------------------------------

    def location(self, text) -> Path:
        if _confine.root_of(text) is not None:
            return text
        return Path(text)

    def name(self, location) -> str:
        return Path(location).name

    def parent(self, location) -> Path:
        return _keep_root(location, Path(location).parent)

    def join(self, folder, *names: str) -> Path:
        return _keep_root(folder, Path(folder).joinpath(*names))

    def relative(self, location, base) -> tuple[str, ...]:
        return Path(location).relative_to(base).parts

    def absolute(self, location) -> Path:
        return Path(os.path.abspath(location))

    # -- inputs -------------------------------------------------------------------------

    def kind(self, location) -> str:
        path = Path(location)
        if not path.exists() and not path.is_symlink():
            return "missing"
        if path.is_dir():
            return "folder"
        return "file" if path.is_file() else "other"

    def identity(self, location) -> str:
        return str(Path(location).resolve())

    def open_input(self, location) -> LocalInput:
        """Open ``location`` for reading, refusing anything but a regular file.

        O_NONBLOCK keeps a FIFO from blocking the open forever; it changes
        nothing for a regular file.
        """
        path = Path(location)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        if _confine.root_of(location) is not None:
            fd = _confine.open_file(location, flags)  # named errors already
        else:
            try:
                fd = os.open(path, flags)
            except OSError as exc:
                raise from_os_error(exc, path) from exc
        try:
            st = os.fstat(fd)
            if statmod.S_ISDIR(st.st_mode):
                raise UnsupportedFormat("is a directory, not an image file", path)
            if not statmod.S_ISREG(st.st_mode):
                raise UnsupportedFormat("is not a regular file", path)
            if st.st_size == 0:
                raise CorruptImage("empty file (0 bytes)", path)
            return LocalInput(path, os.fdopen(fd, "rb"), st)
        except BaseException:
            os.close(fd)
            raise

    def list_images(self, root, *, ordered: bool = True, rank: Rank | None = None,
                    on_error: OnListError | None = None) -> Iterator[Path]:
        """Candidate images under ``root``, skipping processed/ and hidden folders.

        Folders go in name order; inside one, the largest images come first, so
        that with several workers the last image to finish is a small one (the
        longest-first rule) instead of a big one running alone at the end.
        "Largest" is ``rank`` (the header's pixel count) where a folder holds
        few enough files for reading every header to cost nothing next to the
        work, else the file size.  Symlinked folders are not followed (no loops).
        """
        stack = [Path(root)]
        while stack:
            folder = stack.pop()
            files, subdirs = [], []
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        try:
                            if entry.is_dir(follow_symlinks=False):  # as os.walk: no loops
                                if is_walked_folder(entry.name):
                                    subdirs.append(entry.name)
                            elif is_image_name(entry.name):
                                files.append((-entry.stat().st_size, entry.name))
                        except OSError:
                            files.append((0, entry.name))  # let the pipeline name the problem
            except OSError as exc:
                if on_error is not None:
                    on_error(folder, exc)
                continue
            if ordered and rank is not None and len(files) <= HEADER_ORDER_LIMIT:
                files = [(-_ranked(rank, folder / name, -size), name) for size, name in files]
            for _size, name in sorted(files):
                yield folder / name
            stack.extend(folder / d for d in sorted(subdirs, reverse=True))

    # -- outputs ----------------------------------------------------------------------

    def check_writable(self, folder) -> None:
        """The folder, or the nearest folder above it that exists (where it would be made), is writable."""
        path = Path(folder)
        probe = path
        while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise PermanentError(f"cannot be written: {probe} is not a folder", path)
        if not os.access(probe, os.W_OK | os.X_OK):
            try:
                read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
            except (OSError, AttributeError):
                read_only = False
            reason = os.strerror(errno.EROFS if read_only else errno.EACCES)
            raise TransientIOError(f"cannot be written ({reason})", path)

    def write_outputs(self, outputs: Sequence[Output]) -> list[Path]:
        """Each output's settings go into its xattr, else into its folder's index (``storage.index``)."""
        if any(_confine.root_of(out.location) is not None for out in outputs):
            return _write_confined(outputs)
        written: list[Path] = []
        unrecorded: dict[Path, list] = {}  # folder -> (name, fingerprint, stat) for the index
        try:
            for out in outputs:
                path = Path(out.location)
                if not write_atomic(path, out.data, fingerprint=out.fingerprint):
                    unrecorded.setdefault(path.parent, []).append((path.name, out.fingerprint, path))
                written.append(path)
            for folder, entries in unrecorded.items():
                try:
                    INDEX.record(folder, [(name, fp, os.lstat(p)) for name, fp, p in entries])
                except OSError as exc:
                    # The outputs are whole and in place; without their record they are only
                    # redone by the next run.  Not worth failing the job for.
                    log.warning("%s: the settings of %d outputs not recorded (%s): the next run redoes them",
                                folder / INDEX_NAME, len(entries), exc.strerror or exc)
        except BaseException:
            # write_atomic names OS failures itself; here only undo this attempt.
            self.remove(written)
            raise
        return written

    def remove(self, locations: Sequence[Location]) -> None:
        for p in locations:
            if _confine.root_of(p) is not None:
                try:
                    with _confine.Folder(self.parent(p)) as folder:
                        folder.remove(Path(p).name)
                except ImgtoolError:
                    pass
                continue
            try:
                os.unlink(p)
            except OSError:
                pass

    def fresh(self, src, outputs: Mapping[Location, str]) -> bool:
        return not self.stale(src, outputs)

    def stale(self, src, outputs: Mapping[Location, str]) -> list[Location]:
        """Outputs missing, a link, older than ``src`` (its mtime), or recorded with another fingerprint."""
        try:
            src_mtime = os.stat(src).st_mtime_ns
        except OSError:
            return list(outputs)
        stale = []
        for p, fingerprint in outputs.items():
            try:
                st = os.lstat(p)
            except OSError:
                stale.append(p)
                continue
            if not statmod.S_ISREG(st.st_mode) or st.st_mtime_ns < src_mtime:
                stale.append(p)
                continue
            recorded = get_xattr(Path(p))
            if recorded is None:
                recorded = INDEX.lookup(Path(p), st)
            if recorded != fingerprint:
                stale.append(p)
        return stale

    # -- what the watcher asks (it watches local folders only) ------------------------------

    def version(self, location) -> tuple[int, int, int] | None:
        """(size, mtime_ns, inode) of a regular file: what tells one version of it from the next."""
        try:
            st = os.stat(location)
        except OSError:
            return None
        if not statmod.S_ISREG(st.st_mode):
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    def changed_since(self, src, outputs: Sequence[Location]) -> bool:
        """True when ``src`` changed (its ctime, which no one can set) after the oldest output was made.

        An mtime can be set back (cp -p, rsync -t, an older file renamed over
        the input); a ctime cannot.  False when an output is missing.
        """
        try:
            changed = os.stat(src).st_ctime_ns
            made = min(os.stat(p).st_mtime_ns for p in outputs)
        except (OSError, ValueError):
            return False
        return changed > made

    def exists(self, location) -> bool:
        """Whether anything is at ``location`` (links followed)."""
        return os.path.exists(location)

    def resolve_folder(self, location) -> Path:
        """``location`` with links and ``..`` resolved (the folder a watch is about)."""
        return Path(location).resolve()

    # -- confinement --------------------------------------------------------------------

    def root(self, text) -> str:
        real = os.path.realpath(os.fspath(text))
        if not os.path.isdir(real):
            raise ValueError(f"allowed root {real} is not a folder")
        return real

    def confine(self, location, roots: Sequence[Location], field: str) -> Path:
        """``location`` with symlinks resolved; PathNotAllowed when it lands outside every root."""
        try:
            real = os.path.realpath(location)
        except OSError as exc:
            # A link read while it was being replaced (EINVAL from readlink): the tree is changing.
            raise TransientIOError(f"{field} changed while its links were resolved ({exc.strerror})",
                                   location) from exc
        local = [os.fspath(r) for r in roots]
        if not local:
            return Path(real)
        inside = [r for r in local if real == r or real.startswith(r.rstrip(os.sep) + os.sep)]
        if not inside:
            raise PathNotAllowed(f"{field} resolves to {real}, outside the allowed roots "
                                 f"({os.pathsep.join(local)})", location)
        # Opened from the innermost root by handle: the check holds at the open too.
        return _confine.confined(real, max(inside, key=len))

    def beneath(self, location, root) -> Path:
        """``location`` (lexically below ``root``, a real path) to be opened from ``root`` without
        following any link below it: what ``watch`` confines its folder's files with."""
        return _confine.confined(os.path.normpath(os.path.abspath(location)), os.fspath(root))


def _keep_root(base, path: Path) -> Path:
    root = _confine.root_of(base)
    if root is None:
        return path
    if os.path.normpath(path) != root and not os.fspath(path).startswith(root.rstrip(os.sep) + os.sep):
        return Path(path)  # above the root: an ordinary path again
    return _confine.confined(path, root)


def _write_confined(outputs: Sequence[Output]) -> list[Path]:
    """write_outputs for outputs below an allowed root: each folder opened once from the root, every
    temporary file, rename and (on failure) removal relative to its handle."""
    folders: dict[str, _confine.Folder] = {}
    written: list[tuple[_confine.Folder, str, Path]] = []
    try:
        for out in outputs:
            path = Path(out.location)
            parent = os.fspath(path.parent)
            folder = folders.get(parent)
            if folder is None:
                folder = folders[parent] = _confine.Folder(_keep_root(out.location, path.parent))
            # The settings go into the output's xattr.  Where the filesystem keeps none, the folder's
            # index (written by name) is not used below an allowed root: such outputs are redone.
            folder.write_atomic(path.name, out.data, fingerprint=out.fingerprint)
            written.append((folder, path.name, out.location))
    except BaseException:
        for folder, name, _loc in written:
            folder.remove(name)
        raise
    finally:
        for folder in folders.values():
            folder.close()
    return [loc for _f, _n, loc in written]


def _ranked(rank: Rank, path: Path, fallback: int) -> int:
    try:
        value = rank(path)
    except OSError:
        value = None
    return fallback if value is None else value


def write_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = False,
                 fingerprint: str | None = None) -> bool:
    """Write ``data`` to ``path`` through a temporary file renamed into place.

    The temporary file (``.imgtool-*.tmp``, hidden, in the target folder so the
    rename stays on one filesystem) is created with mode 0o666 less the umask,
    like any new file.  A symlink at ``path`` is replaced by the rename, never
    followed.  The folder is created if missing.  ``fsync`` makes the data
    durable before the rename (about a millisecond a file), for callers that
    record the write as done elsewhere.  ``fingerprint``: the settings that
    made it, set as its xattr before the rename (``storage.index``); returns
    False when the filesystem keeps no xattrs (the caller records it in the
    index), True otherwise.  OS failures become named errors.
    """
    recorded = True
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
                if fingerprint is not None:
                    recorded = set_xattr(f.fileno(), fingerprint)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    except OSError as exc:
        raise from_os_error(exc, path, writing=True) from exc
    return recorded


def _create_temp(folder: Path) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, f".imgtool-{os.urandom(8).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # 64 random bits: practically never
            continue
