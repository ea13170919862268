"""The few named errors imgtool raises; each says whether trying again can help."""

from __future__ import annotations


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


class GPUError(RetryableError):
    code = "gpu_error"


class BackendUnavailable(PermanentError):
    """The requested backend cannot run on this machine (a usage problem)."""

    code = "backend_unavailable"


def from_os_error(exc: OSError, path: object) -> ImgtoolError:
    """Map an OSError met while reading or writing ``path`` to a named error."""
    import errno

    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOENT:
        return InputNotFound("no such file", path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return TransientIOError(f"permission denied ({reason})", path)
    if exc.errno == errno.EISDIR:
        return UnsupportedFormat("is a directory", path)
    return TransientIOError(reason, path)
