"""The machine a run was on, Markdown tables, and updating bench/RESULTS.md section by section."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).with_name("RESULTS.md")
MB = 1e6


def machine() -> dict[str, str]:
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        info["cpu"] = m.group(1).strip() if m else platform.processor()
    except (OSError, subprocess.SubprocessError):
        info["cpu"] = platform.processor() or "unknown"
    info["cores"] = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    info["memory"] = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    info["os"] = f"{platform.system()} {platform.release()}"
    info["python"] = platform.python_version()
    from PIL import __version__ as pil, features

    info["Pillow"] = f"{pil} (libjpeg-turbo {features.version('jpg')}, libwebp {features.version('webp')})"
    try:
        import pyvips

        info["libvips"] = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} (pyvips {pyvips.__version__})"
    except Exception as exc:  # pyvips missing or its library not loadable
        info["libvips"] = f"not available ({exc})"
    info["numpy"] = __import__("numpy").__version__
    return info


def machine_line(info: dict[str, str]) -> str:
    return "; ".join(f"{k} {v}" for k, v in info.items())


def revision() -> str:
    """The imgtool being measured: its commit, and whether imgtool/ had uncommitted changes."""
    root = RESULTS.parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "imgtool", "kernels"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "imgtool revision unknown"
    if not head:
        return "imgtool revision unknown"
    return f"imgtool at {head}" + (" with uncommitted changes to imgtool/" if dirty else "")


def best_of(fn, repeat: int) -> float:
    """The shortest of ``repeat`` timed calls of ``fn``, after one untimed call (caches warm)."""
    fn()
    out = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def command_line() -> str:
    return "python -m bench " + " ".join(_quote(a) for a in sys.argv[1:])


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[\w./:=,+-]+", a) else "'" + a.replace("'", "'\\''") + "'"


HEADER = "# Benchmark results\n"

USAGE = """## How to run `python -m bench`

The sections between `<!-- bench:... -->` markers are written by
`python -m bench --write-results` and replaced each time their part is run
again; the other sections (watch latency, queue soak) come from their own
scripts and are kept.  To refresh them all after a pipeline change (about 2
minutes on 2 cores), from the repository root with the `bench` extra installed:

    python -m bench --corpus ../shared/corpus/photos --rounds 5 --profile --small 10000 --write-results

`--gpu` adds the GPU figures where PyCUDA and a CUDA device are at hand;
without `--corpus` the harness makes its own (photo-like 0.3, 2 and 12 MP
JPEGs, one with EXIF orientation 6) and files its figures under their own
headings.  `python -m bench --help` lists the rest.
"""


def write_section(key: str, body: str, path: Path = RESULTS, top: bool = False) -> None:
    """Replace (or append) the section marked ``<!-- bench:key -->``, keeping the rest.

    ``body`` starts with its ``## `` heading; the markers go after it, so that
    tools which replace a section from its heading to the next ``## `` line
    (bench/watch_latency.py does) never cut into this one's markers.  A new
    section goes at the end, or with ``top`` just under the file's title.
    """
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    heading, _, rest = body.strip().partition("\n")
    if not heading.startswith("## "):
        heading, rest = "", body.strip()
    block = (heading + "\n" if heading else "") + f"{start}\n{rest.strip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(r"(^## [^\n]*\n)?" + re.escape(start) + r".*?" + re.escape(end), re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    elif top and text.startswith("# "):
        title, _, rest_of_file = text.partition("\n")
        text = f"{title}\n\n{block}\n\n{rest_of_file.lstrip()}"
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
