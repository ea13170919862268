"""The CUDA kernel sources, shipped inside the package as ``imgtool.kernels``."""

from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def source(name: str) -> str:
    """The text of ``kernels/<name>``."""
    return (KERNEL_DIR / name).read_text()
