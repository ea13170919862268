"""The errors of the CPU build of the kernels, named as pycuda.driver names them."""

from __future__ import annotations


class Error(Exception):
    """Base of every hostcuda error (pycuda.driver.Error)."""


class LogicError(Error):
    """A call that can never succeed: bad arguments, bad launch configuration."""


class LaunchError(Error):
    """A kernel failed while it ran (a trap, an out-of-bounds access, a race the check mode found)."""


class MemoryError(Error):  # noqa: A001 - mirrors pycuda.driver.MemoryError
    """Out of (emulated) device memory."""


class RuntimeError(Error):  # noqa: A001 - mirrors pycuda.driver.RuntimeError
    """The runtime cannot work here (no host compiler)."""


class CompileError(Error):
    """The host compiler rejected a kernel source."""

    def __init__(self, msg: str, command_line=None, stdout: str = "", stderr: str = ""):
        super().__init__(msg)
        self.msg = msg
        self.command_line = command_line
        self.stdout = stdout
        self.stderr = stderr

    def __str__(self) -> str:
        text = self.msg
        if self.stderr:
            text += "\n" + self.stderr.strip()
        return text
