"""That every contestant made the same outputs: names, sizes, no metadata, and how close the pixels are."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

METADATA_KEYS = ("exif", "icc_profile", "xmp")


@dataclass
class Comparison:
    peer: str
    outputs: int = 0
    identical_bytes: int = 0
    min_psnr: dict[str, float] = field(default_factory=dict)  # per operation, against imgtool
    problems: list[str] = field(default_factory=list)


def _outputs(folder: Path, flat: bool = False) -> dict[str, Path]:
    return {(p.name if flat else str(p.relative_to(folder))): p for p in folder.rglob("*.webp")}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _op(name: str) -> str:
    return name.rsplit("_", 1)[-1].removesuffix(".webp")


def compare(reference: Path, peer: str, folder: Path, flat: bool = False) -> Comparison:
    """``folder``'s outputs against imgtool's in ``reference``.

    ``flat``: match by file name alone (queue jobs share one outputDir, where
    ``process -o`` mirrors sub-folders).
    """
    c = Comparison(peer)
    ref, got = _outputs(reference, flat), _outputs(folder, flat)
    for name in sorted(set(ref) ^ set(got)):
        where = "only imgtool" if name in ref else f"only {peer}"
        c.problems.append(f"{name}: {where} wrote it")
    for name in sorted(set(ref) & set(got)):
        c.outputs += 1
        a_bytes, b_bytes = ref[name].read_bytes(), got[name].read_bytes()
        if a_bytes == b_bytes:
            c.identical_bytes += 1
        with Image.open(ref[name]) as a, Image.open(got[name]) as b:
            for key in METADATA_KEYS:
                if b.info.get(key):
                    c.problems.append(f"{name}: {peer} kept {key}")
            if a.size != b.size or a.mode != b.mode:
                c.problems.append(f"{name}: imgtool {a.size} {a.mode}, {peer} {b.size} {b.mode}")
                continue
            p = _psnr(np.asarray(a), np.asarray(b))
        op = _op(name)
        c.min_psnr[op] = min(c.min_psnr.get(op, math.inf), p)
    return c


def metadata_problems(folder: Path) -> list[str]:
    """imgtool's own outputs must carry no metadata either."""
    out = []
    for name, p in sorted(_outputs(folder).items()):
        with Image.open(p) as im:
            out += [f"{name}: imgtool kept {k}" for k in METADATA_KEYS if im.info.get(k)]
    return out
