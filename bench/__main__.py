"""python -m bench: imgtool against a Pillow loop and libvips, the codec limit, RSS, the GPU."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import (BLUR, BLURS, EFFORT, OPERATIONS, QUALITY, THUMB_WIDTH, check, corpus, gpu, limit, profiling,
               queue_mode, report, runner, sharp_peer)
from .report import MB, table

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORK = REPO / "bench" / "out"

# The targets, on the CPU backend.
TARGET_VS_SEQ = 2.0
TARGET_VS_PARALLEL = 1.15
TARGET_QUEUE = 0.95  # queue mode's throughput against process'
TARGET_LIMIT = 1.15
TARGET_BEFORE = 0.95  # imgtool against an earlier install of itself: the same within this VM's noise
TARGET_RSS = 600 * MB
TARGET_SMALL_GROWTH = 1.10  # "flat": last decile's RSS within 10% of the first's
QUIET_LOAD = 0.10  # a round counts as quiet when other work took at most this share of the cores

LOAD_NOTE = (
    "Other engineers' work may have been running on this machine at the same "
    "time: *other load* is the share of all cores busy with processes that were "
    "not this run's while each contestant ran (from /proc/stat, less the "
    "contestants' and the harness' own CPU time)."
)


CONTESTANTS = ("imgtool", "before", "queue", "pillow-seq", "pillow-par", "vips-par", "sharp-par")
# sharp (Node.js) only when asked for: the harness then installs it in bench/sharp with npm.
DEFAULT_CONTESTANTS = ("imgtool", "queue", "pillow-seq", "pillow-par", "vips-par")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark imgtool (CPU backend) against a sequential Pillow loop, the same "
        "loop as N processes and pyvips as N processes, all making the same outputs; "
        "report medians, ratios, peak RSS, the codec limit, and GPU figures where a GPU is.",
    )
    p.add_argument("--corpus", type=Path, help="folder of images (default: a generated corpus of "
                   "photo-like 0.3, 2 and 12 MP JPEGs, cached under --work)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("-j", "--jobs", type=int, default=len(os.sched_getaffinity(0)),
                   help="imgtool's -j and the peers' process count (default: the cores here)")
    p.add_argument("--contestants", default=",".join(DEFAULT_CONTESTANTS),
                   help="which to run, in round order (default: all; queue is left out, with "
                   "the reason, where there is no redis-server or imgtool queue)")
    p.add_argument("--blur", choices=BLURS, default=BLUR,
                   help=f"the blur every contestant makes (default {BLUR}, imgtool's default; 3x3: the old "
                   "worker's kernel, imgtool with --blur-sigma 3x3; its sections are kept apart)")
    p.add_argument("--before", metavar="PYTHON",
                   help="the Python of another install of imgtool (an earlier commit's venv): "
                   "adds the contestant 'before', which runs that imgtool with the same arguments, "
                   "so that a change is timed side by side with what it changed")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing the contestants' outputs after the first round")
    p.add_argument("--no-throughput", action="store_true", help="skip the rounds (run only "
                   "--profile / --small / --gpu)")
    p.add_argument("--profile", action="store_true",
                   help="also time imgtool's pipeline phase by phase in this process (one thread)")
    p.add_argument("--small", type=int, metavar="N",
                   help="also run imgtool over N generated tiny images and report RSS over time")
    p.add_argument("--gpu", action="store_true", help="also measure the GPU figures (needs PyCUDA "
                   "and a CUDA device; untested where this was written)")
    p.add_argument("--write-results", action="store_true",
                   help="write the figures into bench/RESULTS.md (its other sections are kept)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK,
                   help=f"scratch folder for corpora, outputs and logs (default {DEFAULT_WORK})")
    p.add_argument("--keep-outputs", action="store_true", help="keep every round's outputs")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.jobs < 1:
        p.error("--rounds and --jobs must be at least 1")
    args.contestants = [c.strip() for c in args.contestants.split(",") if c.strip()]
    unknown = set(args.contestants) - set(CONTESTANTS)
    if unknown:
        p.error(f"unknown contestants: {', '.join(sorted(unknown))}")
    if args.before and "before" not in args.contestants:
        args.contestants.insert(1 if "imgtool" in args.contestants else 0, "before")
    if "before" in args.contestants and not args.before:
        p.error("the contestant 'before' needs --before PYTHON")
    return args


def check_defaults() -> None:
    """The peers' settings must be imgtool's defaults, or the comparison means nothing."""
    from imgtool import ops

    s = ops.Settings()
    ours = (THUMB_WIDTH, dict(QUALITY), EFFORT, tuple(OPERATIONS), BLUR)
    theirs = (s.thumb_width, dict(s.quality), s.effort, tuple(s.ops), s.blur_sigma)
    if ours != theirs:
        sys.exit(f"bench settings {ours} differ from imgtool's defaults {theirs}: update bench/__init__.py")


def before_env() -> dict:
    """The --before install's environment: this checkout kept off its import path."""
    e = env()
    e["PYTHONPATH"] = os.pathsep.join(x for x in e["PYTHONPATH"].split(os.pathsep) if x != str(REPO))
    return e


def env(**extra) -> dict:
    e = dict(os.environ)
    # This sandbox sets it; a user's install has compiled modules cached, so
    # every contestant's imports should find them too.
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [x for x in [e.get("PYTHONPATH")] if x])
    e.update(extra)
    return e


@dataclass
class Contestant:
    name: str
    label: str
    walls: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    max_each: list[list[int]] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    foreign: list[float] = field(default_factory=list)
    timings: list[list[dict]] = field(default_factory=list)  # per round, all processes
    ready: list[float] = field(default_factory=list)  # queue: the worker's start-up, not in walls


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.work.resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.cores = len(os.sched_getaffinity(0))
        self.n = args.jobs
        if args.corpus:
            self.corpus = args.corpus.resolve()
            self.corpus_name = str(args.corpus)
        else:
            print("generating the default corpus (cached) ...", file=sys.stderr)
            self.corpus = corpus.default_corpus(self.work / "cache")
            self.corpus_name = "generated: " + ", ".join(
                f"{c} x {w}x{h}" for w, h, c in corpus.DEFAULT_MIX) + " (one with EXIF orientation 6)"
        self.files = corpus.list_images(self.corpus)
        if not self.files:
            sys.exit(f"no images in {self.corpus}")
        self.pixels = sum(corpus.pixels(f) for f in self.files)
        self.largest = max(corpus.pixels(f) for f in self.files)
        self.parts = corpus.balanced(self.files, self.n)
        self.queue_note = None
        self.before_has_sigma = None
        # imgtool's blur is its default unless another configuration is asked for.
        self.blur_flag = None if args.blur == BLUR else args.blur
        if "queue" in args.contestants and not args.no_throughput:
            reason = queue_mode.unavailable()
            if reason:
                args.contestants.remove("queue")
                self.queue_note = (f"Queue mode not measured: {reason} (target: one `imgtool queue` "
                                   f"worker >= {TARGET_QUEUE:.2f}x the throughput of `process`).")

    # -- commands ----------------------------------------------------------

    def _joblist(self, files, path: Path) -> Path:
        jobs = [[str(f), str(f.parent.relative_to(self.corpus))] for f in files]
        path.write_text(json.dumps(jobs))
        return path

    def commands(self, name: str, out: Path, scratch: Path) -> list[tuple[list[str], dict]]:
        py = sys.executable
        blur = self.args.blur
        if name == "imgtool":
            return [(gpu.imgtool_argv(self.corpus, out, self.n, "cpu", self.blur_flag), env())]
        if name == "before":
            return [(self.before_argv(out), before_env())]
        if name == "pillow-seq":
            lst = self._joblist(self.files, scratch / "seq.json")
            return [([py, "-m", "bench.peers", "pillow", str(lst), str(out), str(scratch / "t-seq.json"),
                      "--blur", blur], env())]
        kind = {"pillow-par": "pillow", "vips-par": "vips", "sharp-par": "sharp"}[name]
        extra = {"VIPS_CONCURRENCY": "1"} if kind == "vips" else {}
        cmds = []
        for i, part in enumerate(self.parts):
            lst = self._joblist(part, scratch / f"{kind}-{i}.json")
            timings = scratch / f"t-{kind}-{i}.json"
            if kind == "sharp":
                argv = sharp_peer.argv(lst, out, timings, blur)
            else:
                argv = [py, "-m", "bench.peers", kind, str(lst), str(out), str(timings), "--blur", blur]
            cmds.append((argv, env(**extra)))
        return cmds

    def before_argv(self, out: Path) -> list[str]:
        """``imgtool process`` of the --before install, as the imgtool contestant runs it.

        An install older than ``--blur-sigma`` has only the 3x3 blur: it runs the
        3x3 configuration without the flag, and cannot run any other.
        """
        argv = gpu.imgtool_argv(self.corpus, out, self.n, "cpu", self.blur_flag)
        argv[0] = self.args.before
        if self.before_has_sigma is None:
            probe = subprocess.run([self.args.before, "-m", "imgtool", "process", "--help"],
                                   env=before_env(), capture_output=True, text=True, check=False)
            self.before_has_sigma = "--blur-sigma" in probe.stdout
        if not self.before_has_sigma:
            if self.args.blur != "3x3":
                sys.exit(f"{self.args.before}'s imgtool has no --blur-sigma (only the 3x3 blur): "
                         "run with --blur 3x3")
            argv = argv[:-2] if self.blur_flag else argv
        return argv

    def label(self, name: str) -> str:
        return {
            "imgtool": f"imgtool -j {self.n}",
            "before": f"imgtool -j {self.n}, --before install",
            "queue": f"imgtool queue, 1 running worker -w {self.n}",
            "pillow-seq": "Pillow loop, 1 process",
            "pillow-par": f"Pillow loop, {len(self.parts)} processes",
            "vips-par": f"pyvips, {len(self.parts)} processes",
            "sharp-par": f"sharp (Node.js), {len(self.parts)} processes",
        }[name]

    # -- the rounds --------------------------------------------------------

    def warm_up(self) -> None:
        for f in self.files:  # inputs into the page cache
            f.read_bytes()
        for argv in ([sys.executable, "-m", "imgtool", "--version"],
                     [sys.executable, "-c", "import bench.peers, PIL.Image, pyvips"]):
            subprocess.run(argv, env=env(), capture_output=True, check=False)
        if "sharp-par" in self.args.contestants:
            subprocess.run([sharp_peer.node() or "node", "-e", "require('sharp')"], cwd=sharp_peer.HERE,
                           capture_output=True, check=False)

    def rounds(self) -> dict[str, Contestant]:
        self.warm_up()
        results = {n: Contestant(n, self.label(n)) for n in self.args.contestants}
        run_root = self.work / f"run-{os.getpid()}"
        self.comparisons, self.own_problems = None, []
        self.limit_timings: list[list[dict]] = []
        rig = queue_mode.QueueRig(self.work) if "queue" in self.args.contestants else None
        try:
            self._rounds(results, run_root, rig)
        finally:
            if rig is not None:
                rig.close()
        if not self.args.keep_outputs:
            shutil.rmtree(run_root, ignore_errors=True)
        return results

    def _rounds(self, results: dict[str, Contestant], run_root: Path, rig) -> None:
        for r in range(self.args.rounds):
            outs = {}
            for name in self.args.contestants:
                out = run_root / f"round{r}" / name
                scratch = run_root / f"round{r}" / f"{name}.scratch"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                scratch.mkdir(parents=True, exist_ok=True)
                if name == "queue":
                    m = rig.run(self.corpus, out, self.n, len(self.files), scratch, env(),
                                ("--blur-sigma", self.blur_flag) if self.blur_flag else ())
                else:
                    m = runner.run(self.commands(name, out, scratch), scratch)
                c = results[name]
                c.walls.append(m.wall_s)
                c.peaks.append(m.peak_rss)
                c.max_each.append(m.max_rss_each)
                c.cpu.append(m.cpu_s)
                c.foreign.append(m.foreign_share)
                c.timings.append([t for f in sorted(scratch.glob("t-*.json"))
                                  for t in json.loads(f.read_text())])
                c.ready.append(m.ready_s)
                outs[name] = out
                print(f"round {r + 1}/{self.args.rounds}  {c.label:<26} {m.wall_s:7.2f} s  "
                      f"peak {m.peak_rss / MB:6.0f} MB  other load {m.foreign_share:4.0%}",
                      file=sys.stderr)
                if name == "imgtool":
                    # Paired with imgtool's run: measured right after it, so that the
                    # machine's drift over a round does not enter their ratio.
                    self._limit_round(run_root / f"round{r}" / "limit.scratch")
            if "imgtool" not in self.args.contestants:
                self._limit_round(run_root / f"round{r}" / "limit.scratch")
            if r == 0 and not self.args.no_check and "imgtool" in outs:
                self.own_problems = check.metadata_problems(outs["imgtool"])
                self.comparisons = [check.compare(outs["imgtool"], n, o, flat=(n == "queue"))
                                    for n, o in outs.items() if n != "imgtool"]
            if not self.args.keep_outputs:
                shutil.rmtree(run_root / f"round{r}", ignore_errors=True)

    def _limit_round(self, scratch: Path) -> None:
        """The codec limit of this round, in a process of its own."""
        scratch.mkdir(parents=True, exist_ok=True)
        lst = self._joblist(self.files, scratch / "all.json")
        runner.run([([sys.executable, "-m", "bench.limit", str(lst), str(scratch / "t.json")], env())],
                   scratch)
        self.limit_timings.append(json.loads((scratch / "t.json").read_text()))

    # -- figures -----------------------------------------------------------

    def throughput_report(self, res: dict[str, Contestant]) -> tuple[str, list[tuple]]:
        n_img, mp = len(self.files), self.pixels / 1e6
        med = {k: statistics.median(c.walls) for k, c in res.items()}
        me = res.get("imgtool")
        quiet = self.quiet_rounds(res)
        rows = []
        for k, c in res.items():
            wall = med[k]
            ratio = paired = "—"
            if me and k != "imgtool":
                ratio = f"{wall / med['imgtool']:.2f}x"
                paired = f"{statistics.median(p / i for p, i in zip(c.walls, me.walls)):.2f}x"
            rows.append([
                c.label, f"{wall:.2f}",
                f"{statistics.median(c.walls[r] for r in quiet):.2f}" if quiet else "—",
                f"{min(c.walls):.2f}–{max(c.walls):.2f}",
                f"{n_img / wall:.2f}", f"{mp / wall:.1f}",
                f"{max(c.peaks) / MB:.0f}", f"{max(sum(e) for e in c.max_each) / MB:.0f}",
                f"{statistics.median(c.cpu):.2f}",
                f"{statistics.median(cp / (w * self.cores) for cp, w in zip(c.cpu, c.walls)):.0%}",
                f"{statistics.median(c.foreign):.0%}", ratio, paired,
            ])
        md = [table(
            ["contestant", "median wall s", "quiet rounds s", "range s", "images/s", "MP/s", "peak RSS MB (sampled tree)",
             "sum of per-process peaks MB", "CPU s", "cores busy", "other load",
             "imgtool speed-up (ratio of medians)", "(median of per-round ratios)"], rows)]

        targets = []
        lim_rounds = [limit.codec_limit(t, self.cores) for t in self.limit_timings] or None
        n_rounds = len(me.walls) if me else 0

        def both(per_round):
            """(median over all rounds, median over quiet rounds or None)."""
            vals = [per_round(r) for r in range(n_rounds)]
            return statistics.median(vals), (statistics.median(vals[r] for r in quiet) if quiet else None)

        if me:
            for peer, goal in (("before", TARGET_BEFORE), ("pillow-seq", TARGET_VS_SEQ), ("pillow-par", TARGET_VS_PARALLEL),
                               ("vips-par", TARGET_VS_PARALLEL), ("sharp-par", TARGET_VS_PARALLEL)):
                if peer in res:
                    allr, q = both(lambda r: res[peer].walls[r] / me.walls[r])
                    targets.append((f"imgtool throughput / {res[peer].label}", f">= {goal:.2f}x",
                                    allr, q, "x", lambda v, g=goal: v >= g))
            if "queue" in res:
                allr, q = both(lambda r: me.walls[r] / res["queue"].walls[r])
                targets.append(("queue mode throughput (running worker) / imgtool process",
                                f">= {TARGET_QUEUE:.2f}x",
                                allr, q, "x", lambda v: v >= TARGET_QUEUE))
            if lim_rounds:
                allr, q = both(lambda r: me.walls[r] / lim_rounds[r])
                targets.append(("imgtool wall / codec limit", f"<= {TARGET_LIMIT:.2f}x", allr, q, "x",
                                lambda v: v <= TARGET_LIMIT))
            peak = max(max(me.peaks), max(sum(e) for e in me.max_each))
            targets.append((f"imgtool peak RSS (largest image {self.largest / 1e6:.1f} MP)",
                            f"< {TARGET_RSS / MB:.0f} MB", peak / MB, None, " MB",
                            lambda v: v < TARGET_RSS / MB))
        if targets:
            rows = []
            for name, goal, allr, q, unit, ok in targets:
                fmt = (lambda v: f"{v:.0f}{unit}") if unit == " MB" else (lambda v: f"{v:.2f}{unit}")
                judged = q if q is not None else allr
                rows.append([name, goal, fmt(allr), fmt(q) if q is not None else "—",
                             "yes" if ok(judged) else "**no**"])
            md.append(
                "Targets of the issue (ratios are medians of per-round ratios; *quiet rounds* are "
                f"those where every contestant ran with other load <= {QUIET_LOAD:.0%} of the cores, "
                "or for the one-process Pillow loop, no more than the core it leaves free; "
                f"{len(quiet)} of {n_rounds} rounds here; *met* is judged on them when there are any):"
                "\n\n" + table(["target", "goal", "all rounds", "quiet rounds", "met"], rows))

        if lim_rounds:
            lt = self.limit_timings
            codec = [limit.codec_seconds(t) for t in lt]
            dec = statistics.median(sum(x["decode"] for x in t) for t in lt)
            enc = {op: statistics.median(sum(x[f"encode:{op}"] for x in t) for t in lt) for op in OPERATIONS}
            lim = statistics.median(lim_rounds)
            lines = [
                f"Codec limit: median {lim:.2f} s = (single-thread JPEG decode {dec:.2f} s + WebP "
                f"encodes {sum(enc.values()):.2f} s ({', '.join(f'{op} {v:.2f}' for op, v in enc.items())}; "
                f"{lt[0][0]['encoder']}) = {statistics.median(codec):.2f} s) / {self.cores} cores; "
                f"per round: {', '.join(f'{x:.2f}' for x in lim_rounds)} s."
            ]
            if "pillow-seq" in res:
                via_pillow = statistics.median(limit.codec_limit(t, self.cores) for t in res["pillow-seq"].timings)
                lines.append(f"The same sum through Pillow's save (its decode and save times in the "
                             f"sequential Pillow loop) gives {via_pillow:.2f} s.")
            if me:
                lines.append(f"imgtool's median wall is {med['imgtool'] / lim:.2f}x the limit "
                             f"({(med['imgtool'] - self.imgtool_start) / lim:.2f}x without its "
                             f"{self.imgtool_start * 1000:.0f} ms start-up, measured below).")
            md.append(" ".join(lines))
        if "pillow-seq" in res:
            seq = res["pillow-seq"]
            ph = {k: statistics.median(limit.phases(t)[k] for t in seq.timings)
                  for k in limit.phases(seq.timings[0])}
            md.append("Where the sequential Pillow loop's time goes (seconds over the corpus, "
                      "median of rounds):\n\n" + table(
                          ["phase", "s", "share"],
                          [[k, f"{v:.3f}", f"{v / sum(ph.values()):.0%}"]
                           for k, v in sorted(ph.items(), key=lambda kv: -kv[1])]))
        if "vips-par" in res:
            vt = res["vips-par"].timings
            ph = {k: statistics.median(limit.phases(t)[k] for t in vt) for k in limit.phases(vt[0])}
            md.append(f"pyvips' time summed over its {len(self.parts)} processes (CPU-side, run in "
                      "parallel; its operations run inside the saves):\n\n" + table(
                          ["phase", "s", "share"],
                          [[k, f"{v:.3f}", f"{v / sum(ph.values()):.0%}"]
                           for k, v in sorted(ph.items(), key=lambda kv: -kv[1])]))
        if self.comparisons is not None:
            rows = []
            for c in self.comparisons:
                rows.append([res[c.peer].label, c.outputs, c.identical_bytes] +
                            [f"{c.min_psnr.get(op, float('nan')):.1f}" for op in OPERATIONS] +
                            ["; ".join(c.problems[:3]) + (f" (+{len(c.problems) - 3})" if len(c.problems) > 3 else "")
                             or "none"])
            md.append("Same outputs (first round, each peer against imgtool; PSNR in dB of the decoded "
                      "WebP, inf = identical pixels):\n\n" + table(
                          ["peer", "outputs", "byte-identical", "min PSNR thumbnail", "min PSNR blur",
                           "min PSNR low-quality", "problems"], rows)
                      + ("\n\nimgtool's own outputs: " + ("; ".join(self.own_problems) or "no metadata") ))
        return "\n\n".join(md), targets

    def measure_startup(self) -> None:
        self.startup_rows = []
        empty = self.work / f"empty-{os.getpid()}"
        (empty / "in").mkdir(parents=True, exist_ok=True)
        for what, argv in (
            ("imgtool process over an empty folder (what every run of it pays)",
             gpu.imgtool_argv(empty / "in", empty / "out", self.n, "cpu")),
            ("python -m imgtool --version", [sys.executable, "-m", "imgtool", "--version"]),
            ("Pillow peer's imports", [sys.executable, "-c", "from PIL import Image, ImageFilter, ImageOps"]),
            ("pyvips peer's imports", [sys.executable, "-c", "import pyvips"]),
        ):
            walls = []
            for _ in range(5):
                t = time.perf_counter()
                subprocess.run(argv, env=env(), capture_output=True, check=False)
                walls.append(time.perf_counter() - t)
            self.startup_rows.append([what, statistics.median(walls)])
        shutil.rmtree(empty, ignore_errors=True)
        self.imgtool_start = self.startup_rows[0][1]

    def quiet_rounds(self, res: dict[str, Contestant]) -> list[int]:
        """Rounds where no contestant had to share its cores with other work."""
        def quiet(name: str, r: int) -> bool:
            threads = 1 if name == "pillow-seq" else self.n
            free = max(0.0, 1 - min(threads, self.cores) / self.cores)
            return res[name].foreign[r] <= max(QUIET_LOAD, free)

        rounds = len(next(iter(res.values())).walls)
        return [r for r in range(rounds) if all(quiet(n, r) for n in res)]

    def startup(self) -> str:
        return "Fixed start-up cost inside every wall time above but queue mode's (median of 5):\n\n" + table(
            ["process start", "ms"], [[w, f"{s * 1000:.0f}"] for w, s in self.startup_rows])

    def queue_line(self, res: dict[str, Contestant]) -> str:
        """How queue mode is timed, and what its start-up would change."""
        q, me = res.get("queue"), res.get("imgtool")
        if q is None:
            return ""
        ready = statistics.median(q.ready)
        line = ("Queue mode is timed as a running worker: its wall time runs from one RPUSH of "
                "all the corpus' jobs, made once the worker has registered with Redis, to the "
                "moment the last of them is in the done list. The worker's start-up, from its "
                "process' start to that registration (Python, imgtool, redis-py's import, the "
                f"connection), median {ready * 1000:.0f} ms, is paid once per worker and is not in it")
        if me:
            whole = statistics.median(m / (w + r) for m, w, r in zip(me.walls, q.walls, q.ready))
            line += (f"; counted in, as if a worker were started for each batch, queue mode would be "
                     f"{whole:.2f}x process")
        return line + "."


def small_report(b: Bench, count: int) -> str:
    folder = corpus.small_corpus(b.work / "cache", count)
    files = corpus.list_images(folder)
    out = b.work / f"small-out-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    m = runner.run([(gpu.imgtool_argv(folder, out, b.n, "cpu"), env())], out.with_suffix(".logs"),
                   keep_series=True, interval=0.05)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_suffix(".logs"), ignore_errors=True)
    series = m.series
    deciles = []
    for d in range(10):
        lo, hi = m.wall_s * d / 10, m.wall_s * (d + 1) / 10
        vals = [rss for t, rss in series if lo <= t < hi and rss > 0]
        deciles.append(statistics.median(vals) if vals else float("nan"))
    growth = deciles[-1] / deciles[0]
    # Decile medians sit at 5% and 95% of the run: 90% of the images lie between.
    per_1000 = (deciles[-1] - deciles[0]) / (0.9 * len(files)) * 1000
    ok = growth <= TARGET_SMALL_GROWTH
    w, h = 96, 64
    return (
        f"imgtool -j {b.n} over {len(files)} generated {w}x{h} JPEGs (1000 per folder): "
        f"{m.wall_s:.1f} s, {len(files) / m.wall_s:.0f} images/s, peak RSS {m.peak_rss / MB:.0f} MB "
        f"(sampled every 50 ms), other load {m.foreign_share:.0%}.\n\n"
        + table(["decile of the run"] + [str(d + 1) for d in range(10)],
                [["median RSS MB"] + [f"{x / MB:.0f}" for x in deciles]])
        + f"\n\nLast decile / first decile: {growth:.3f} (flat means <= {TARGET_SMALL_GROWTH:.2f}): "
        + ("met" if ok else "**not met**")
        + f"; growth {per_1000 / 1e3:.0f} kB per 1000 images."
    )


def profile_report(b: Bench) -> str:
    out = b.work / f"profile-out-{os.getpid()}"
    try:
        wall, top, rows, missing = profiling.phase_times(b.files, out)
        pwall, hot = profiling.hot_functions(b.files, out)
    except Exception as exc:  # the pipeline's API moved: say so, keep the rest of the run
        return f"Profile failed: {type(exc).__name__}: {exc} (update bench/profiling.py)"
    finally:
        shutil.rmtree(out, ignore_errors=True)
    table_rows = [[("&nbsp;&nbsp;" if level else "") + label, calls, f"{s:.3f}", f"{s / wall:.0%}"]
                  for label, level, s, calls in rows]
    table_rows.append(["other (pipeline, bookkeeping)", "", f"{wall - top:.3f}", f"{(wall - top) / wall:.0%}"])
    text = (
        f"imgtool's pipeline in one process, one thread (`Pipeline(jobs=1)`, cpu backend) over the "
        f"corpus: {wall:.2f} s.\n\n" + table(["phase", "calls", "s", "share"], table_rows)
    )
    if missing:
        text += f"\n\nNot found or not called (old or new names, see bench/profiling.py): {', '.join(missing)}."
    text += (f"\n\nTop functions by own time under cProfile ({pwall:.2f} s with the profiler on):\n\n"
             + table(["own s", "cumulative s", "calls", "function"],
                     [[f"{tt:.3f}", f"{ct:.3f}", nc, f"`{name}`"] for tt, ct, nc, name in hot]))
    return text


def gpu_report(b: Bench, asked: bool) -> str:
    reason = gpu.unavailable()
    if reason or not asked:
        why = reason or "not asked for (run with --gpu)"
        return ("GPU figures missing — " + why + ":\n\n" + "\n".join(f"- {m}" for m in gpu.MISSING))
    lines = []
    try:
        bw = gpu.copy_bandwidth()
        lines.append(f"Device copy bandwidth (device to device, read + written): {bw / 1e9:.0f} GB/s.")
        rows = gpu.kernel_bandwidth()
        lines.append(table(["kernel", "channels", "ms", "GB/s", "share of copy bandwidth", "timed"],
                           [[r["op"], r["channels"], f"{r['seconds'] * 1000:.2f}",
                             f"{r['bandwidth'] / 1e9:.0f}", f"{r['bandwidth'] / bw:.0%}", r["timed"]]
                            for r in rows]))
    except Exception as exc:  # untested code on hardware we have not seen: report, go on
        lines.append(f"Kernel figures failed: {type(exc).__name__}: {exc}")
    try:
        walls = {}
        for backend in ("cpu", "cuda"):
            out = b.work / f"gpu-out-{backend}"
            shutil.rmtree(out, ignore_errors=True)
            with gpu.BusySampler() as s:
                m = runner.run([(gpu.imgtool_argv(b.corpus, out, b.cores, backend), env())],
                               out.with_suffix(".logs"))
            walls[backend] = (m.wall_s, s)
            shutil.rmtree(out, ignore_errors=True)
        busy = walls["cuda"][1].busy_share
        lines.append(
            f"End to end, -j {b.cores}: --backend cuda {walls['cuda'][0]:.2f} s, --backend cpu "
            f"{walls['cpu'][0]:.2f} s (cuda/cpu throughput {walls['cpu'][0] / walls['cuda'][0]:.2f}x); "
            f"GPU busy {('%.0f%%' % (busy * 100)) if busy is not None else 'unknown (no nvidia-smi)'} of wall.")
    except Exception as exc:
        lines.append(f"End-to-end figures failed: {type(exc).__name__}: {exc}")
    return "\n\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    check_defaults()
    if "sharp-par" in args.contestants and not args.no_throughput:
        sharp_peer.ensure()  # npm install in bench/sharp, once, only when asked for
    b = Bench(args)
    info = report.machine()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()
    head = (f"{stamp}; `{report.command_line()}`; {report.revision()}\n\n"
            f"Machine: {report.machine_line(info)}.\n\n"
            f"Corpus: {b.corpus_name}: {len(b.files)} images, {b.pixels / 1e6:.1f} MP, largest "
            f"{b.largest / 1e6:.1f} MP; peers split it into {len(b.parts)} parts balanced by pixel "
            f"count ({', '.join(f'{sum(corpus.pixels(f) for f in p) / 1e6:.1f}' for p in b.parts)} MP).")
    sections = {}
    if not args.no_throughput:
        res = b.rounds()
        b.measure_startup()
        body, _targets = b.throughput_report(res)
        load1 = os.getloadavg()
        sections["throughput"] = (
            f"## CPU throughput: imgtool against Pillow and libvips ({'generated corpus' if not args.corpus else args.corpus})\n\n{head}\n\n"
            f"{args.rounds} interleaved rounds in the order "
            f"{', '.join(res[n].label + (' (then the codec limit)' if n == 'imgtool' else '') for n in res)}; "
            f"each a fresh subprocess tree, wall time around it, a fresh output folder. pyvips runs "
            f"with VIPS_CONCURRENCY=1 per process (its own threads would otherwise compete with the "
            f"other process). Load average at start {load0[0]:.2f}, at end {load1[0]:.2f}. "
            f"{LOAD_NOTE}\n\n{body}\n\n{b.startup()}"
            + (f"\n\n{b.queue_line(res)}" if "queue" in res else "")
            + (f"\n\n{b.queue_note}" if b.queue_note else ""))
    if args.profile:
        sections["profile"] = f"## Where imgtool's time goes ({'generated corpus' if not args.corpus else args.corpus})\n\n{head}\n\n{profile_report(b)}"
    if args.small:
        sections["small"] = f"## RSS on many small images\n\n{stamp}; `{report.command_line()}`; {report.revision()}\n\n" \
                            f"Machine: {report.machine_line(info)}.\n\n{small_report(b, args.small)}"
    sections["gpu"] = f"## GPU\n\n{stamp}; `{report.command_line()}`\n\n{gpu_report(b, args.gpu)}"
    if not args.corpus:  # the generated corpus' figures sit beside those of --corpus, not over them
        sections = {(f"{k}-generated" if k in ("throughput", "profile") else k): v
                    for k, v in sections.items()}
    if args.blur != BLUR:  # another blur's figures sit beside the default's, not over them
        sections = {(f"{k}-blur-{args.blur}" if k.startswith(("throughput", "profile")) else k):
                    v.replace("\n\n", f" (every contestant's blur: {args.blur})\n\n", 1)
                    if k.startswith(("throughput", "profile")) else v
                    for k, v in sections.items()}
    for key, text in sections.items():
        print(text + "\n")
        if args.write_results and (key != "gpu" or args.gpu or not report.RESULTS.exists()
                                   or "<!-- bench:gpu -->" not in report.RESULTS.read_text()):
            report.write_section(key, text)
    if args.write_results:
        report.write_section("usage", report.USAGE, top=True)
        print(f"updated {report.RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
