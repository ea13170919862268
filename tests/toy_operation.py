"""A toy operation added through the registry alone, as README's "Adding an operation" says.

``posterize``: the full-size image with each colour channel cut to
``levels`` evenly spaced values (a job option, ``--poster-levels`` on the
command line), written as ``<jobId>_posterize.webp``.  Importing this module
registers it and its cpu implementation; nothing in imgtool names it.
"""

from __future__ import annotations

from imgtool import ops

NAME = "posterize"

LEVELS = ops.IntParam(key="levels", setting="poster_levels", label="posterize levels", flag="--poster-levels",
                      help="Values per colour channel of the posterized image.", default=4, lo=2, hi=16)


class Posterize(ops.Operation):
    name = NAME
    default_quality = 90
    quality_flag = "--poster-quality"
    quality_help = "WebP quality of the posterized image."
    params = (LEVELS,)

    def output_size(self, width, height, settings):
        return width, height


def level_table(levels: int) -> list[int]:
    """What each 8-bit value becomes: the nearest of ``levels`` evenly spaced values."""
    step = 255 / (levels - 1)
    return [round(round(v / step) * step) for v in range(256)]


@ops.implement("cpu", NAME)
def posterize_cpu(frame, settings):
    table = level_table(LEVELS.of(settings))
    alpha = list(range(256)) if frame.channels == 4 else []
    return frame.image.point(table * 3 + alpha)


OPERATION = ops.register(Posterize())
