"""The few named errors imgtool raises; each says whether trying again can help."""

from __future__ import annotations

import errno


class ImgtoolError(Exception):
    """Base of every error a user or a job can cause.

    ``retryable`` tells the queue worker whether the same job may succeed
    later (a file not there yet, a transient I/O or GPU failure) or never will
    (a bad job, an unsupported or corrupt image).  ``code`` is the short,
    stable name written into ``image:failed`` entries and ``--json`` lines.
    """

    retryable = False
    code = "error"

    def __init__(self, message: str, path: object | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def __reduce__(self):
        # Keep message and path apart through pickling (process pools).
        return type(self), (self.message, self.path)

    def to_dict(self) -> dict:
        return {"type": self.code, "message": str(self), "retryable": self.retryable}


class PermanentError(ImgtoolError):
    """Trying again cannot help."""

    code = "permanent"


class RetryableError(ImgtoolError):
    """Trying again later may help."""

    retryable = True
    code = "retryable"


class UnsupportedFormat(PermanentError):
    code = "unsupported_format"


class CorruptImage(PermanentError):
    code = "corrupt_image"


class ImageTooLarge(PermanentError):
    code = "too_large"


class InvalidJob(PermanentError):
    code = "invalid_job"


class PathNotAllowed(PermanentError):
    code = "path_not_allowed"


class InputNotFound(RetryableError):
    code = "input_not_found"


class TransientIOError(RetryableError):
    code = "io_error"


class NoSpace(TransientIOError):
    """The filesystem (or the user's quota) filled up while an output was being written: ENOSPC, EDQUOT.

    Retryable (an operator frees space and the same job succeeds), with a
    code of its own so that ``image:failed`` and ``--json`` say what it was.
    """

    code = "no_space"


class GPUError(RetryableError):
    code = "gpu_error"


class ResourceExhausted(RetryableError):
    """The machine ran short of memory (or another resource) for this one image."""

    code = "resource_exhausted"


class JobTimeout(PermanentError):
    """The image took longer than its time budget (--job-timeout); the same file would again."""

    code = "timeout"


class BackendUnavailable(PermanentError):
    """The requested backend cannot run on this machine (a usage problem)."""

    code = "backend_unavailable"


def from_os_error(exc: OSError, path: object, writing: bool = False) -> ImgtoolError:
    """Map an OSError met while reading (or, with ``writing``, writing) ``path`` to a named error.

    A missing input is retryable (a queued upload may not have landed yet);
    so are permission and I/O failures, which an operator can mend.  A path
    that can never be a file (a directory, a name too long) is permanent.
    """
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EISDIR:
        if writing:
            return PermanentError("cannot be written: it is a directory", path)
        return UnsupportedFormat("is a directory", path)
    if exc.errno == errno.ENAMETOOLONG:
        return PermanentError("file name too long", path)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        what = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return NoSpace(f"cannot be written: {what} ({errno.errorcode[exc.errno]})", path)
    if writing:
        return TransientIOError(f"cannot be written ({reason})", path)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return InputNotFound("no such file", path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return TransientIOError(f"permission denied ({reason})", path)
    return TransientIOError(reason, path)
