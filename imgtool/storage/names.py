"""Which names are inputs, whatever store holds them: image suffixes, and what is never an input."""

from __future__ import annotations

import os
from pathlib import PurePath

from ..ops import is_output_name

IMAGE_SUFFIXES = frozenset(
    (".jpg .jpeg .jpe .jfif .mpo .png .apng .gif .webp .bmp .dib .tif .tiff .heic .heif .hif .avif .avifs "
     ".ppm .pgm .pbm .pnm .svg .svgz").split()
)
#: Video uploads: their frame at 1 s is the image (imgtool.imageio.video).
VIDEO_SUFFIXES = frozenset(".mp4 .mov .m4v .webm .mkv .avi".split())
INPUT_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
#: The output folder beside each input, as the upload server lays it out; never walked.
PROCESSED_DIR = "processed"
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~", ".swp")


def is_ignored_name(name: str) -> bool:
    """Hidden, temporary or imgtool's own output: never an input."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES) or is_output_name(name)


def is_image_name(name: str) -> bool:
    """An image (or video) suffix, and not hidden, temporary or one of imgtool's outputs."""
    return not is_ignored_name(name) and os.path.splitext(name)[1].lower() in INPUT_SUFFIXES


def is_video_name(name: str) -> bool:
    """A video suffix (the container's bytes decide in the end)."""
    return os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


def is_walked_folder(name: str) -> bool:
    """Whether a listing goes into a sub-folder of this name (not processed/, not hidden)."""
    return name != PROCESSED_DIR and not name.startswith(".")


def is_candidate(path: PurePath) -> bool:
    """True for a file name that looks like an image we should take."""
    return is_image_name(path.name) and PROCESSED_DIR not in path.parent.parts
