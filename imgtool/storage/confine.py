"""Confined paths: inputs opened and outputs written by walking from an allowed root by directory handle.

A check on a path's text (``realpath`` then a prefix test) says nothing
about the next open by name: a folder below the root swapped for a symlink
in between sends the open, the temporary file or the rename outside.  So a
confined location (``ConfinedPath``: a path that knows its root) is never
opened by name.  Its root is opened, then every component below it relative
to the folder before (``O_NOFOLLOW | O_DIRECTORY``; one ``openat2`` call
with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` where the kernel has it), and
folders are made, temporary files created, renamed and removed relative to
the handle of the folder they are in.  A symlink met below the root is
never followed.

A component that is a symlink, or that stops being a folder, while it is
walked was changed under us (or is a link put there to escape): that is a
retryable ``io_error`` (the job may succeed once the tree is quiet), never a
crash; a missing input is ``input_not_found`` as ever.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import threading
from pathlib import Path, PurePosixPath
from typing import Sequence

from ..errors import ImgtoolError, InputNotFound, PermanentError, TransientIOError, from_os_error
from .index import set_xattr

_PathBase = type(Path())


class ConfinedPath(_PathBase):
    """A local path below an allowed root: the store opens it from ``beneath``, by directory handle.

    ``beneath`` is the root (a real path, links resolved); the components of
    the path below it are walked without following links.  Paths made from
    it by the store (``join``, ``parent``) keep the root; anything else sees
    an ordinary path.
    """

    beneath: str | None = None


def confined(path, root: str) -> Path:
    """``path`` (at or below ``root``, both absolute) as a ConfinedPath."""
    p = ConfinedPath(os.fspath(path))
    p.beneath = root
    return p


def root_of(location) -> str | None:
    return getattr(location, "beneath", None)


def parts_below(location, root: str) -> tuple[str, ...]:
    rel = PurePosixPath(os.path.normpath(os.fspath(location))).relative_to(root)
    parts = rel.parts
    if any(p in ("..", "") for p in parts):
        raise PermanentError(f"is not below {root}", location)
    return parts


# ---- openat2 ---------------------------------------------------------------------------

# The syscall number is the same on x86-64 and on the generic table (arm64, riscv64).
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437, "riscv64": 437}.get(platform.machine())
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_state: dict = {}
_openat2_lock = threading.Lock()


def _libc():
    lib = _openat2_state.get("libc")
    if lib is None:
        lib = _openat2_state["libc"] = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
    return lib


def has_openat2() -> bool:
    """Whether this kernel (and any seccomp filter around us) lets openat2 through; probed once."""
    known = _openat2_state.get("ok")
    if known is not None:
        return known
    with _openat2_lock:
        if "ok" in _openat2_state:
            return _openat2_state["ok"]
        ok = False
        if _SYS_OPENAT2 is not None and os.environ.get("IMGTOOL_NO_OPENAT2") is None:
            try:
                fd = _openat2(os.open("/", os.O_RDONLY | os.O_DIRECTORY), ".", os.O_RDONLY | os.O_DIRECTORY,
                              close_dir=True)
                os.close(fd)
                ok = True
            except OSError:
                ok = False
        _openat2_state["ok"] = ok
        return ok


def _openat2(dir_fd: int, rel: str, flags: int, mode: int = 0, close_dir: bool = False) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    try:
        fd = _libc().syscall(_SYS_OPENAT2, dir_fd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how))
    finally:
        if close_dir:
            os.close(dir_fd)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return fd


# ---- walking ---------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHANGED = (errno.ELOOP, errno.ENOTDIR, errno.EXDEV, errno.EMLINK)


class _Changed(Exception):
    """A component below the root is a link or no longer a folder."""


def _open_root(root: str) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TransientIOError(f"allowed root {root} cannot be opened ({exc.strerror})", root) from exc


def _walk(root_fd: int, parts: Sequence[str], make: bool) -> int:
    """A handle on the folder ``parts`` below ``root_fd`` (made when missing and ``make``)."""
    if not parts:
        return os.dup(root_fd)
    if has_openat2():
        try:
            return _openat2(root_fd, os.path.join(*parts), os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not make:
                raise
    fd = os.dup(root_fd)
    try:
        for name in parts:
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not make:
                    raise
                try:
                    os.mkdir(name, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile by someone else: open what is there, without following
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def _changed_error(location, exc: OSError) -> ImgtoolError:
    return TransientIOError("a folder on its path is a symlink or changed while it was opened "
                            f"({exc.strerror}); links below the allowed root are not followed", location)


def _is_plain_file(location) -> bool:
    """Whether a regular file (not a link) is at ``location`` or a folder above it: for the message only."""
    p = Path(location)
    for q in (p, *p.parents):
        try:
            st = os.lstat(q)
        except OSError:
            continue
        return stat.S_ISREG(st.st_mode)
    return False


def open_file(location, flags: int) -> int:
    """A descriptor of the regular file ``location`` (a ConfinedPath), opened from its root."""
    root = root_of(location)
    parts = parts_below(location, root)
    if not parts:
        raise PermanentError("is the allowed root itself, not a file", location)
    root_fd = _open_root(root)
    try:
        if has_openat2():
            return _openat2(root_fd, os.path.join(*parts), flags | os.O_NOFOLLOW)
        dir_fd = _walk(root_fd, parts[:-1], make=False)
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        if exc.errno in _CHANGED:
            raise _changed_error(location, exc) from exc
        if exc.errno == errno.ENOENT:
            raise InputNotFound("no such file", location) from exc
        raise from_os_error(exc, location) from exc
    finally:
        os.close(root_fd)


class Folder:
    """An output folder opened from its root (made when missing): writes and removals relative to it."""

    def __init__(self, location):
        self.location = location
        root = root_of(location)
        root_fd = _open_root(root)
        try:
            self.fd = _walk(root_fd, parts_below(location, root), make=True)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR and _is_plain_file(location):
                raise PermanentError("cannot be written: it is a file, not a folder", location) from exc
            if exc.errno in _CHANGED:
                raise _changed_error(location, exc) from exc
            if exc.errno == errno.EEXIST:
                raise PermanentError("cannot be written: a file is in the way of this folder", location) from exc
            raise from_os_error(exc, location, writing=True) from exc
        finally:
            os.close(root_fd)

    def write_atomic(self, name: str, data: bytes, fingerprint: str | None = None) -> bool:
        """``name`` in this folder, written through a temporary file renamed into place (both by handle).

        ``fingerprint``: the settings that made it, set as its xattr before the rename; False when the
        filesystem keeps no xattrs.
        """
        recorded = True
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            tmp = f".imgtool-{os.urandom(8).hex()}.tmp"
            try:
                fd = os.open(tmp, flags, 0o666, dir_fd=self.fd)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise from_os_error(exc, Path(self.location) / name, writing=True) from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if fingerprint is not None:
                    recorded = set_xattr(f.fileno(), fingerprint)
            # rename(2) replaces a link at the target, never follows it.
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException as exc:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise from_os_error(exc, Path(self.location) / name, writing=True) from exc
            raise
        return recorded

    def remove(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except OSError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Folder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
