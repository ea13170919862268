"""Soak test of `imgtool queue`: many jobs, workers SIGKILLed every few seconds, Redis killed once.

Starts its own redis-server (appendonly on, appendfsync everysec: the usual
production setting) on a free port in a temporary folder, pushes JOBS jobs as
the upload server does, runs WORKERS worker processes, SIGKILLs a random
one every KILL_EVERY seconds (and starts a replacement), SIGKILLs Redis once
when about 40% of the jobs are done and restarts it on the same data, then
waits until every job is accounted for.  Reports:

- lost: jobs in neither image:done nor image:failed at the end (must be 0);
- duplicates: jobIds recorded more than once (at-least-once allows them;
  the atomic FINISH script is meant to keep them at 0);
- poison pills: jobs sent to image:failed for having been in flight on more
  than --max-recoveries dead workers (the kills are unrelated to the jobs,
  so these are false positives of the poison-pill rule under this much
  killing);
- whether every done job's outputs exist and decode.

Not part of CI (it takes minutes).  Usage:

    python -m bench.soak                       # 10,000 jobs, figures into bench/RESULTS.md
    python -m bench.soak --jobs 2000 --no-write
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "queue-soak"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, workdir: Path):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.dir = workdir
        self.port = free_port()
        self.proc = None

    def start(self):
        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=10)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                client.ping()
                return client
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def make_inputs(folder: Path, n: int = 8) -> list[tuple[Path, tuple[int, int]]]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        w, h = 48 + 8 * i, 32 + 6 * i
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * 255 // w), (y * 255 // h), rng.integers(0, 255, (h, w))], -1).astype(np.uint8)
        p = folder / f"in{i}.png"
        Image.fromarray(img).save(p)
        out.append((p, (w, h)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=3, help="worker processes")
    ap.add_argument("-w", "--threads", type=int, default=4, help="imgtool queue -w of each")
    ap.add_argument("--kill-every", default="3,1",
                    help="seconds between worker SIGKILLs; comma-separated for several runs")
    ap.add_argument("--heartbeat-ttl", type=float, default=2.0)
    ap.add_argument("--max-recoveries", type=int, default=3)
    ap.add_argument("--ops", default="thumbnail,blur,low-quality")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="the RESULTS.md to update")
    args = ap.parse_args(argv)
    results = []
    for every in (float(x) for x in args.kill_every.split(",")):
        print(f"--- run: {args.jobs} jobs, a worker SIGKILLed every {every:g} s", flush=True)
        results.append(soak(args, every))
        print(json.dumps(results[-1], indent=2), flush=True)
    if not args.no_write:
        write_results(args, results)
    ok = all(r["finished"] and not r["lost"] and not r["bad_outputs"] for r in results)
    return 0 if ok else 1


def soak(args, kill_every: float) -> dict:
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="imgtool-soak-"))
    server = Redis(tmp)
    r = server.start()
    inputs = make_inputs(tmp / "uploads")
    ops = args.ops.split(",")
    out_dir = tmp / "uploads" / "processed"
    ids = [f"soak-{i:05d}" for i in range(args.jobs)]
    sizes = {}
    payloads = []
    for i, job_id in enumerate(ids):
        src, size = inputs[i % len(inputs)]
        sizes[job_id] = size
        payloads.append(json.dumps({"jobId": job_id, "inputPath": str(src), "outputDir": str(out_dir),
                                    "operations": ops, "timestamp": int(time.time() * 1000),
                                    "retryCount": 0}, separators=(",", ":")))
    for i in range(0, len(payloads), 1000):
        r.rpush("image:jobs", *payloads[i:i + 1000])
    time.sleep(1.5)  # past appendfsync everysec: the pushes are on disk before any kill

    logs = tmp / "logs"
    logs.mkdir()
    cmd = [sys.executable, "-m", "imgtool", "queue", "--redis", f"127.0.0.1:{server.port}",
           "--backend", "cpu", "-w", str(args.threads), "--heartbeat-ttl", str(args.heartbeat_ttl),
           "--max-recoveries", str(args.max_recoveries), "--retry-base", "0.2", "--retry-cap", "2",
           "--done-cap", str(args.jobs * 2), "--allow-root", str(tmp), "--ops", args.ops]
    started = 0

    def spawn():
        nonlocal started
        started += 1
        f = open(logs / f"worker-{started}.log", "wb")
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f)

    procs = [spawn() for _ in range(args.workers)]
    kills = 0
    stranded = 0  # jobs in the in-flight lists of the workers killed
    redis_restarted = False
    t0 = time.monotonic()
    next_kill = t0 + kill_every
    finished = False
    last_report = 0.0
    while time.monotonic() - t0 < args.timeout:
        now = time.monotonic()
        try:
            done = r.llen("image:done")
            failed = r.llen("image:failed")
            inflight = sum(r.llen(k) for k in r.scan_iter(match="image:worker:*:inflight"))
            pending = r.llen("image:jobs") + r.llen("image:retry")
        except Exception:  # noqa: BLE001 - Redis restarting
            time.sleep(0.2)
            continue
        if now - last_report > 5:
            print(f"{now - t0:6.1f} s  done {done}  failed {failed}  pending {pending}  in flight {inflight}  "
                  f"kills {kills}", flush=True)
            last_report = now
        if done + failed >= args.jobs and pending == 0 and inflight == 0:
            finished = True
            break
        if not redis_restarted and done >= 0.4 * args.jobs:
            print(f"{now - t0:6.1f} s  SIGKILL redis-server, restart in 1 s", flush=True)
            server.kill()
            time.sleep(1.0)
            r = server.start()
            redis_restarted = True
            continue
        if now >= next_kill and done + failed < 0.95 * args.jobs:
            victim = rng.randrange(len(procs))
            wid = worker_id_of(r, procs[victim].pid)
            procs[victim].kill()
            procs[victim].wait()
            if wid:
                stranded += r.llen(f"image:worker:{wid}:inflight")
            procs[victim] = spawn()
            kills += 1
            next_kill = now + kill_every
        time.sleep(0.1)
    seconds = time.monotonic() - t0
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()

    done_entries = [json.loads(x) for x in r.lrange("image:done", 0, -1)]
    failed_entries = [json.loads(x) for x in r.lrange("image:failed", 0, -1)]
    counts = collections.Counter(d["jobId"] for d in done_entries)
    failed_ids = collections.Counter(f.get("jobId") for f in failed_entries)
    accounted = set(counts) | set(failed_ids)
    lost = [i for i in ids if i not in accounted]
    duplicates = sum(n - 1 for n in counts.values() if n > 1) + sum(
        1 for i in failed_ids if i in counts) + sum(n - 1 for n in failed_ids.values() if n > 1)
    poison = sum(1 for f in failed_entries if f["error"]["type"] == "poison_pill")
    other_failed = len(failed_entries) - poison
    bad_outputs = 0
    from PIL import Image

    for d in done_entries:
        for op, path in d["outputs"].items():
            try:
                with Image.open(path) as im:
                    im.load()
            except Exception:  # noqa: BLE001 - counted
                bad_outputs += 1
    server.kill()
    result = {
        "kill_every": kill_every,
        "jobs": args.jobs, "finished": finished, "seconds": round(seconds, 1),
        "jobs_per_s": round(args.jobs / seconds, 1), "worker_kills": kills, "workers_started": started,
        "redis_restarts": int(redis_restarted), "stranded_jobs": stranded,
        "done": len(done_entries), "failed": len(failed_entries), "lost": len(lost),
        "duplicates": duplicates, "poison_pills": poison, "other_failed": other_failed,
        "bad_outputs": bad_outputs,
    }
    if lost:
        print("lost:", lost[:20], file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def worker_id_of(r, pid: int) -> str | None:
    """The id of the worker process ``pid``, from the heartbeat hashes."""
    for raw in r.smembers("image:workers"):
        wid = raw.decode()
        if r.hget(f"image:worker:{wid}:heartbeat", "pid") == str(pid).encode():
            return wid
    return None


def write_results(args, results) -> None:
    from bench.report import machine, machine_line, table, write_section

    shown = list(sys.argv[1:])
    if "--results" in shown:  # where the figures went is no part of how they were made
        i = shown.index("--results")
        del shown[i:i + 2]
    shown = [a for a in shown if not a.startswith("--results=")]
    command = "python -m bench.soak " + " ".join(shown)
    body = f"""## Queue soak

`{command.strip()}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine_line(machine())};
redis-server {subprocess.run([shutil.which('redis-server') or '/usr/bin/redis-server', '--version'],
                             capture_output=True, text=True).stdout.split()[2][2:]} with appendonly yes,
appendfsync everysec; {args.workers} worker processes x `-w {args.threads}`, `--heartbeat-ttl
{args.heartbeat_ttl}`, `--max-recoveries {args.max_recoveries}`, ops `{args.ops}` on small PNGs (48x32
to 104x74), backend cpu.  In each run a random worker is SIGKILLed every few seconds (column 1)
and replaced, and redis-server is SIGKILLed once at 40% done and restarted on its AOF.

{table(["SIGKILL every", "jobs", "seconds", "jobs/s", "worker SIGKILLs", "jobs in flight at the kills",
        "Redis restarts", "done", "failed", "lost", "duplicates", "poison pills", "outputs not decodable"],
       [[f"{res['kill_every']:g} s", res["jobs"], res["seconds"], res["jobs_per_s"], res["worker_kills"],
         res["stranded_jobs"], res["redis_restarts"], res["done"], res["failed"], res["lost"],
         res["duplicates"], res["poison_pills"], res["bad_outputs"]] for res in results])}

lost = jobs in neither image:done nor image:failed at the end; duplicates = jobs recorded more
than once; jobs in flight at the kills = what the killed workers' in-flight lists held, each put
back by the surviving workers once its heartbeat expired.  Poison pills are jobs that happened to be in flight on more than
`--max-recoveries` of the killed workers (false positives of that rule under this rate of
killing, not lost: they are in image:failed with `error.type` `poison_pill`).
"""
    write_section(SECTION, body, args.results)
    print(f"written to {args.results}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
