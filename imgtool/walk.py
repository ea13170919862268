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
# Up to this many images in one folder are ordered by their headers' pixel counts.
HEADER_ORDER_LIMIT = 256
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~", ".swp")


def is_ignored_name(name: str) -> bool:
    """Hidden, temporary or imgtool's own output: never an input."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES) or is_output_name(name)


def is_image_name(name: str) -> bool:
    """An image suffix, and not hidden, temporary or one of imgtool's outputs."""
    return not is_ignored_name(name) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_candidate(path: Path) -> bool:
    """True for a file name that looks like an image we should take."""
    return is_image_name(path.name) and PROCESSED_DIR not in path.parent.parts


def walk(root: Path, ordered: bool = True, on_error=None) -> Iterator[Path]:
    """Candidate images under ``root``, skipping processed/ and hidden folders.

    Folders go in name order; inside one, the largest images come first, so
    that with several workers the last image to finish is a small one (the
    longest-first rule) instead of a big one running alone at the end.
    "Largest" is the pixel count from the file's header where a folder holds
    few enough files for reading every header to cost nothing next to the
    work, else the file size.  ``ordered=False`` skips the headers (to count).
    A folder that cannot be read is passed to ``on_error(folder, exc)``.
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
                            if entry.name != PROCESSED_DIR and not entry.name.startswith("."):
                                subdirs.append(entry.name)
                        elif is_image_name(entry.name):
                            files.append((-entry.stat().st_size, entry.name))
                    except OSError:
                        files.append((0, entry.name))  # let the pipeline name the problem
        except OSError as exc:
            if on_error is not None:
                on_error(folder, exc)
            continue
        if ordered and len(files) <= HEADER_ORDER_LIMIT:
            files = [(-_pixels(folder / name, -size), name) for size, name in files]
        for _size, name in sorted(files):
            yield folder / name
        stack.extend(folder / d for d in sorted(subdirs, reverse=True))


def _pixels(path: Path, fallback: int) -> int:
    """The header's width x height, or ``fallback`` when the header is unreadable."""
    from . import imageio
    from .errors import ImgtoolError

    try:
        # probe parses only the accepted formats, and no pixel.
        info = imageio.probe(path, max_pixels=1 << 62)
    except (ImgtoolError, OSError):
        return fallback
    return info.width * info.height


def count(paths) -> int:
    """How many inputs ``paths`` (files and folders) hold, as process would take them."""
    n = 0
    for p in paths:
        p = Path(p)
        n += sum(1 for _ in walk(p, ordered=False)) if p.is_dir() else 1
    return n


def default_out_dir(src: Path) -> Path:
    """``processed/`` beside the input, as the upload server lays it out."""
    return src.parent / PROCESSED_DIR
