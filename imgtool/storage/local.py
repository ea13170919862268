"""The local filesystem as a store."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import from_os_error


def write_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place.

    The temporary file (``.imgtool-*.tmp``, hidden, in the target folder so the
    rename stays on one filesystem) is created with mode 0o666 less the umask,
    like any new file.  A symlink at ``path`` is replaced by the rename, never
    followed.  The folder is created if missing.  ``fsync`` makes the data
    durable before the rename (about a millisecond a file), for callers that
    record the write as done elsewhere.  OS failures become named errors.
    """
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
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    except OSError as exc:
        raise from_os_error(exc, path, writing=True) from exc


def _create_temp(folder: Path) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, f".imgtool-{os.urandom(8).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # 64 random bits: practically never
            continue
