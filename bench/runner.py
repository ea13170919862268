"""Run processes side by side: wall time, peak RSS of the process tree, CPU time, foreign load."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

# How often the tree's RSS is read (/proc/PID/status: VmRSS for the sum over
# the tree, VmHWM for each process' own peak, which no sampling gap can miss).
# That costs well under 1% of a core at this rate; the children list (a scan
# of all of /proc) is refreshed less often since no contestant starts
# processes mid-run.
SAMPLE_INTERVAL_S = 0.01
CHILDREN_EVERY = 25


@dataclass
class Measured:
    wall_s: float
    peak_rss: int  # max over samples of the sum of RSS over every process of the tree
    max_rss_each: list[int]  # each process' own high-water mark (VmHWM): misses no spike
    cpu_s: float  # user + system time of every process started
    foreign_share: float  # share of all cores busy with work other than ours meanwhile
    series: list[tuple[float, int]] = field(default_factory=list)  # (t, tree RSS) when kept
    ready_s: float = 0.0  # with ``ready``: from the start to the moment it held (not in wall_s)


def _rss_hwm(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes from /proc; (0, 0) once the process is gone or a zombie."""
    rss = high = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"VmHWM:"):
                    high = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return rss, high


class Failed(RuntimeError):
    pass


def _busy(ct) -> float:
    return ct.user + ct.nice + ct.system + getattr(ct, "irq", 0) + getattr(ct, "softirq", 0)


def run(cmds: list[tuple[list[str], dict | None]], logs: Path, keep_series: bool = False,
        interval: float = SAMPLE_INTERVAL_S, stop_when: Callable[[], bool] | None = None,
        ready: Callable[[], bool] | None = None, go: Callable[[], None] | None = None) -> Measured:
    """Start every (argv, env) at once and wait for all; raise Failed on a non-zero exit.

    With ``stop_when`` (for a long-running worker), the wall time ends the first
    time it returns True; the processes are then sent SIGTERM and waited for.
    With ``ready`` as well, the wall time starts instead the first time
    ``ready()`` returns True, just before ``go()`` is called (to hand a
    running worker its work); ``stop_when`` is asked only after that.
    """
    logs.mkdir(parents=True, exist_ok=True)
    me = psutil.Process()
    my_cpu0 = sum(me.cpu_times()[:2])
    sys0 = psutil.cpu_times()
    procs, errs = [], []
    t0 = time.perf_counter()
    for i, (argv, env) in enumerate(cmds):
        err = open(logs / f"stderr-{i}.txt", "wb")
        errs.append(err)
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err))
    rusage: dict[int, tuple[float, int]] = {}

    def reap(p: subprocess.Popen) -> None:
        # wait4 rather than Popen.wait: it gives this process' own CPU time.  (Not
        # its ru_maxrss: that counts the harness' pages the child had between fork and exec.)
        _pid, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        rusage[p.pid] = (ru.ru_utime + ru.ru_stime, p.returncode)

    waiters = [threading.Thread(target=reap, args=(p,), daemon=True) for p in procs]
    for w in waiters:
        w.start()

    peak, series, tree, n = 0, [], [], 0
    hwm: dict[int, int] = {}
    roots = [psutil.Process(p.pid) for p in procs]
    stopped_at = None
    started_at = None if ready is not None else 0.0
    while any(w.is_alive() for w in waiters):
        if started_at is None and ready():
            started_at = time.perf_counter() - t0
            if go is not None:
                go()
        if stop_when is not None and started_at is not None and stopped_at is None and stop_when():
            stopped_at = time.perf_counter() - t0
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
        if n % CHILDREN_EVERY == 0:
            tree = [r.pid for r in roots]
            for r in roots:
                try:
                    tree += [c.pid for c in r.children(recursive=True)]
                except psutil.Error:
                    pass
        n += 1
        total = 0
        for pid in tree:
            rss, high = _rss_hwm(pid)
            total += rss
            hwm[pid] = max(hwm.get(pid, 0), high)
        peak = max(peak, total)
        if keep_series:
            series.append((time.perf_counter() - t0, total))
        time.sleep(interval)
    for w in waiters:
        w.join()
    elapsed = time.perf_counter() - t0
    wall = (elapsed if stopped_at is None else stopped_at) - (started_at or 0.0)
    for e in errs:
        e.close()
    sys1 = psutil.cpu_times()
    own = sum(cpu for cpu, _rc in rusage.values())
    mine = sum(me.cpu_times()[:2]) - my_cpu0
    busy = _busy(sys1) - _busy(sys0)
    ncpu = psutil.cpu_count() or 1
    foreign = max(0.0, (busy - own - mine) / (elapsed * ncpu))
    for i, p in enumerate(procs):
        if p.returncode != 0:
            tail = (logs / f"stderr-{i}.txt").read_text(errors="replace")[-2000:]
            raise Failed(f"{' '.join(cmds[i][0])} exited {p.returncode}:\n{tail}")
    if started_at is None:
        raise Failed(f"{' '.join(cmds[0][0])} exited before it was ready; see {logs}")
    if stop_when is not None and stopped_at is None:
        raise Failed(f"{' '.join(cmds[0][0])} exited before its work was done; see {logs}")
    return Measured(
        wall_s=wall,
        peak_rss=peak,
        max_rss_each=[hwm.get(p.pid, 0) for p in procs],
        cpu_s=own,
        foreign_share=foreign,
        series=series,
        ready_s=started_at,
    )
