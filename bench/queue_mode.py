"""Queue mode: the throughput of one running ``imgtool queue`` worker over the corpus.

A private redis-server (no persistence) on a free port serves the whole run.
Each round writes the corpus' jobs with ``imgtool enqueue`` (not timed) into
a staging list, starts one worker process (``-w`` = the harness' -j) on a
prefix of its own, and once the worker has registered with Redis (it is in
the workers set: connected, its pipeline made) hands it every job at once
(one RPUSH, as an upload server's producers would).  The wall time runs from
that RPUSH to the moment every job is in the done (or failed) list: a
worker's throughput, as it serves a queue for hours.  Its start-up, from the
process' start to its registration, is measured apart (``Measured.ready_s``).
The worker is then sent SIGTERM and drains.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import runner


def unavailable() -> str | None:
    """Why queue mode cannot be measured here, or None."""
    if not shutil.which("redis-server"):
        return "no redis-server on PATH"
    try:
        import redis  # noqa: F401

        from imgtool.queue.keys import Keys  # noqa: F401
    except ImportError as exc:
        return f"imgtool's queue is not importable ({exc})"
    probe = subprocess.run([sys.executable, "-m", "imgtool", "queue", "--help"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or "--redis" not in probe.stdout:
        return "imgtool has no queue command yet"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QueueRig:
    def __init__(self, work: Path):
        import redis

        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = work / f"redis-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.server = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=self.log, stderr=subprocess.STDOUT)
        self.client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        else:
            self.close()
            raise RuntimeError(f"redis-server on port {self.port} did not answer")
        self.rounds = 0

    def close(self) -> None:
        self.server.terminate()
        self.server.wait(timeout=10)
        self.log.close()
        self.log_path.unlink(missing_ok=True)

    def run(self, corpus: Path, out: Path, jobs: int, n_images: int, logs: Path, env: dict,
            extra: tuple[str, ...] = ()) -> runner.Measured:
        from imgtool.queue.keys import Keys

        self.rounds += 1
        prefix = f"bench{self.rounds}"
        keys = Keys(prefix)
        py = sys.executable
        staging = Keys(f"{prefix}staging")
        subprocess.run([py, "-m", "imgtool", "enqueue", str(corpus), "--redis", self.url,
                        "--prefix", staging.prefix, "-o", str(out)], env=env, check=True,
                       capture_output=True)
        payloads = self.client.lrange(staging.jobs, 0, -1)
        if len(payloads) != n_images:
            raise runner.Failed(f"queue mode: imgtool enqueue wrote {len(payloads)} jobs, not {n_images}")
        worker = [py, "-m", "imgtool", "-q", "queue", "--redis", self.url, "--prefix", prefix,
                  "-w", str(jobs), "--backend", "cpu", "--allow-root", str(corpus),
                  "--allow-root", str(out), *extra]

        def finished() -> bool:
            return self.client.llen(keys.done) + self.client.llen(keys.failed) >= n_images

        def registered() -> bool:
            return self.client.scard(keys.workers) > 0

        def hand_over() -> None:
            self.client.rpush(keys.jobs, *payloads)

        m = runner.run([(worker, env)], logs, stop_when=finished, ready=registered, go=hand_over)
        failed = self.client.llen(keys.failed)
        if failed:
            raise runner.Failed(f"queue mode: {failed} jobs failed: {self.client.lindex(keys.failed, 0)!r}")
        self.client.flushdb()
        return m
