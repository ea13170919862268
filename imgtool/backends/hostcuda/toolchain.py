"""The host C++ compiler that builds the kernels: which one, and what it is (for the build cache's key)."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess

from .errors import RuntimeError


def find_compiler() -> list[str]:
    """The host C++ compiler's argv: IMGTOOL_HOSTCUDA_CXX, else CXX, else g++."""
    spec = os.environ.get("IMGTOOL_HOSTCUDA_CXX") or os.environ.get("CXX") or "g++"
    argv = shlex.split(spec)
    if not argv or shutil.which(argv[0]) is None:
        raise RuntimeError(
            f"no host C++ compiler for the CPU build of the kernels: {spec!r} not found "
            "(install g++ or set CXX)"
        )
    return argv


@functools.lru_cache(maxsize=8)
def compiler_identity(argv: tuple[str, ...]) -> str:
    """The compiler's path and ``--version`` text: a different compiler is a different build."""
    try:
        out = subprocess.run(
            [*argv, "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run the host C++ compiler {argv[0]!r}: {exc}") from None
    return f"{shutil.which(argv[0])}\n{out}"
