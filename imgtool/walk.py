"""Which files are inputs, and where their outputs go: shared by process and watch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from .ops import is_output_name

IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .webp .bmp .dib .tif .tiff .heic .heif .avif .svg .svgz".split()
)
PROCESSED_DIR = "processed"
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~", ".swp")


def is_ignored_name(name: str) -> bool:
    """Hidden, temporary or imgtool's own output: never an input."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES) or is_output_name(name)


def is_candidate(path: Path) -> bool:
    """True for a file name that looks like an image we should take."""
    return (
        not is_ignored_name(path.name)
        and path.suffix.lower() in IMAGE_SUFFIXES
        and PROCESSED_DIR not in path.parent.parts
    )


def walk(root: Path) -> Iterator[Path]:
    """Candidate images under ``root``, sorted, skipping processed/ and hidden folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d != PROCESSED_DIR and not d.startswith(".")
        )
        for name in sorted(filenames):
            if not is_ignored_name(name) and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(dirpath) / name


def default_out_dir(src: Path) -> Path:
    """``processed/`` beside the input, as the upload server lays it out."""
    return src.parent / PROCESSED_DIR
