"""low-quality: a half-size placeholder (nearest neighbour), recompressed at a low quality."""

from __future__ import annotations

from .base import Operation, register

LOW_QUALITY = "low-quality"


def half_size(width: int, height: int) -> tuple[int, int]:
    """``floor(w/2) x floor(h/2)``, at least 1x1: the placeholder's size, here and in every kernel."""
    return max(1, width // 2), max(1, height // 2)


class LowQuality(Operation):
    name = LOW_QUALITY
    default_quality = 30
    quality_flag = "--lq-quality"
    quality_help = "WebP quality of the low-quality placeholder."

    def output_size(self, width: int, height: int, settings) -> tuple[int, int]:
        return half_size(width, height)


OPERATION = register(LowQuality())
