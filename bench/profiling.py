"""Where imgtool's time goes: its pipeline in this process, one thread, phase by phase.

Two passes over the corpus with ``Pipeline(jobs=1)`` and the cpu backend:
one with timers wrapped around the functions in PHASES (edit the table when
the pipeline's functions change: a name that is not there is skipped), one
under cProfile for the functions that take the most time themselves
(C functions included, so copies and conversions show up by name).
"""

from __future__ import annotations

import cProfile
import importlib
import pstats
import time
from collections import defaultdict
from pathlib import Path

# (module[:class], attribute, label, level): level 0 phases add up to the
# pipeline's time with "other"; level 1 phases are parts of the one above.
# Old and new names of the same step are both listed (the pipeline is being
# reworked): a name that is missing or never called is left out of the table.
PHASES = (
    ("imgtool.imageio", "open_image", "open (the header read and checked)", 0),
    ("imgtool.imageio.decode:Opened", "decode", "decode (orientation, colour, to a PIL image)", 0),
    ("imgtool.imageio", "decode_image", "decode (open, orientation, colour, to a PIL image)", 0),
    ("imgtool.imageio", "decode", "decode (open, orientation, colour, to an array)", 0),
    ("imgtool.backends.cpu:CpuBackend", "apply_image", "operations (backend.apply_image)", 0),
    ("imgtool.backends.cpu:CpuBackend", "apply", "operations (backend.apply)", 0),
    ("imgtool.backends.cpu", "thumbnail_image", "thumbnail", 1),
    ("imgtool.backends.cpu:CpuBackend", "thumbnail", "thumbnail (array)", 1),
    ("imgtool.backends.cpu", "blur_image", "blur", 1),
    ("imgtool.backends.cpu", "blur_raw", "blur (C)", 1),
    ("imgtool.backends.cpu", "boxes_raw", "blur: the box cascade, sigma auto (C)", 1),
    ("imgtool.backends.cpu", "boxes_image", "blur: the box cascade, sigma auto", 1),
    ("imgtool.backends.cpu:CpuBackend", "blur", "blur (array)", 1),
    ("imgtool.backends.cpu", "halfsize_image", "halfsize", 1),
    ("imgtool.backends.cpu", "halfsize_raw", "halfsize (C)", 1),
    ("imgtool.backends.cpu:CpuBackend", "halfsize", "halfsize (array)", 1),
    ("imgtool.placeholders", "of_image", "placeholders (ThumbHash + BlurHash from the thumbnail)", 0),
    ("imgtool.imageio", "encode", "encode (WebP or AVIF, one per output)", 0),
    ("imgtool.imageio.encode", "encode_webp", "WebP encode", 1),
    ("imgtool.imageio", "encode_webp", "WebP encode (3 per image)", 0),
    ("imgtool.webp", "encode_simple", "libwebp called directly", 1),
    ("imgtool.imageio.libwebp", "encode_simple", "libwebp called directly", 1),
    ("imgtool.imageio", "write_atomic", "atomic writes (3 per image)", 0),
    ("imgtool.storage.local", "write_atomic", "atomic writes (3 per image)", 0),
)


def _owner(spec: str):
    mod, _, cls = spec.partition(":")
    obj = importlib.import_module(mod)
    return getattr(obj, cls) if cls else obj


def _wrap(fn, label, level, totals, calls, depth):
    def timed(*a, **kw):
        t = time.perf_counter()
        depth[level] += 1
        try:
            return fn(*a, **kw)
        finally:
            depth[level] -= 1
            spent = time.perf_counter() - t
            totals[label] += spent
            calls[label] += 1
            if level == 0 and depth[0] == 0:  # outermost: counts once towards "other"
                totals[None] += spent

    return timed


def _run_pipeline(files: list[Path], out: Path) -> float:
    from imgtool.ops import Settings
    from imgtool.pipeline import Pipeline, Task

    pipe = Pipeline(Settings(), backend="cpu", jobs=1)
    tasks = [Task(f, out) for f in files]
    t = time.perf_counter()
    results = list(pipe.map(tasks, force=True))
    wall = time.perf_counter() - t
    pipe.close()
    bad = [r for r in results if r.status != "done"]
    if bad:
        raise RuntimeError(f"{bad[0].task.src}: {bad[0].error}")
    return wall


def phase_times(files: list[Path], out: Path):
    """(pipeline s, level-0 s without double counting, [(label, level, s, calls)], not found)."""
    totals: dict = defaultdict(float)
    calls: dict = defaultdict(int)
    depth = defaultdict(int)
    patched, missing = [], []
    for spec, attr, label, level in PHASES:
        try:
            owner = _owner(spec)
            fn = getattr(owner, attr)  # on a class: the function, inherited or its own
        except (ImportError, AttributeError):
            missing.append(f"{spec}.{attr}")
            continue
        had_own = not isinstance(owner, type) or attr in owner.__dict__
        patched.append((owner, attr, fn, had_own))
        setattr(owner, attr, _wrap(fn, label, level, totals, calls, depth))
    try:
        wall = _run_pipeline(files, out)
    finally:
        for owner, attr, fn, had_own in reversed(patched):
            if had_own:
                setattr(owner, attr, fn)
            else:
                delattr(owner, attr)
    rows = [(label, level, totals[label], calls[label])  # a label listed under old and new names: once
            for label, level in dict.fromkeys((label, level) for _s, _a, label, level in PHASES)
            if calls.get(label)]
    missing += [f"{s}.{a}" for s, a, label, _l in PHASES
                if not calls.get(label) and f"{s}.{a}" not in missing]
    return wall, totals[None], rows, missing


def hot_functions(files: list[Path], out: Path, top: int = 20) -> tuple[float, list[tuple]]:
    """(seconds, [(tottime, cumtime, calls, name)]) of the ``top`` functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    t = time.perf_counter()
    try:
        _run_pipeline(files, out)
    finally:
        prof.disable()
    wall = time.perf_counter() - t
    stats = pstats.Stats(prof)
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():
        if filename == "~":
            name = func
        else:
            parts = Path(filename).parts
            short = "/".join(parts[parts.index("imgtool"):]) if "imgtool" in parts else Path(filename).name
            name = f"{short}:{line}({func})"
        rows.append((tt, ct, nc, name))
    rows.sort(reverse=True)
    return wall, rows[:top]
