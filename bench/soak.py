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

With ``--topology cluster`` it runs on a real 3-master + 3-replica Redis
Cluster instead (prefix ``{image}``), and at 40% done migrates the queue's
slot live to another master and then fails that master over to its replica
(CLUSTER FAILOVER, or with ``--disrupt kill`` a SIGKILL of it);
with ``--topology sentinel``, on a master + replica + 3 sentinels, and at 40%
done asks the sentinels for a failover (``--disrupt failover``) or SIGKILLs
the master (``--disrupt kill``).  Both come from tests/redis_topologies.py,
the deployments the tests start, and run the workers as the ACL user of
imgtool.queue.acl.  There a failover can make a job run twice (a result the
old master acknowledged but had not passed on): those are the duplicates,
and ``--min-replicas-ack 1`` narrows their window.

Not part of CI (it takes minutes).  Usage:

    python -m bench.soak                       # 10,000 jobs, figures into bench/RESULTS.md
    python -m bench.soak --jobs 2000 --no-write
    python -m bench.soak --topology cluster [--disrupt kill] --jobs 2000 --kill-every 3
    python -m bench.soak --topology sentinel --disrupt kill --jobs 2000 --kill-every 3 [--min-replicas-ack 1]
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


class Single:
    """One redis-server with its AOF: SIGKILLed once and restarted on it."""

    prefix = "image"
    label = "redis-server SIGKILLed at 40% done and restarted on its AOF (appendfsync everysec)"

    def __init__(self, tmp: Path, args):
        self.server = Redis(tmp)

    def start(self):
        self.r = self.server.start()
        self.url = f"127.0.0.1:{self.server.port}"
        return self

    def client(self):
        return self.r

    def push(self, key, payloads):
        for i in range(0, len(payloads), 1000):
            self.r.rpush(key, *payloads[i:i + 1000])
        time.sleep(1.5)  # past appendfsync everysec: the pushes are on disk before any kill

    def disrupt(self):
        self.server.kill()
        time.sleep(1.0)
        self.r = self.server.start()

    def stop(self):
        self.server.kill()


def _topologies():
    tests = str(HERE.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import redis_topologies

    return redis_topologies


class ClusterDeployment:
    prefix = "{image}"
    label = ("3 masters + 3 replicas; at 40% done the queue's slot migrated live to another master "
             "(SETSLOT IMPORTING/MIGRATING + MIGRATE), then that master failed over to its replica "
             "(CLUSTER FAILOVER)")

    def __init__(self, tmp: Path, args):
        self.topo = _topologies().Cluster(tmp / "cluster")
        self.how = args.disrupt
        if self.how == "kill":
            self.label = self.label.replace("failed over to its replica (CLUSTER FAILOVER)",
                                            "SIGKILLed (its replica promoted after cluster-node-timeout 2 s)")

    def start(self):
        self.topo.start()
        self.url = self.topo.url
        self.r = self.topo.client()
        return self

    def client(self):
        return self.r

    def push(self, key, payloads):
        node = self.topo.owner().client()
        for i in range(0, len(payloads), 1000):
            node.rpush(key, *payloads[i:i + 1000])
        node.wait(1, 10_000)  # on the replica before anything breaks

    def disrupt(self):
        src = self.topo.owner()
        dest = next(m for m in self.topo.masters() if m.port != src.port)
        self.topo.migrate_slot(dest, between_keys=lambda: time.sleep(0.05))
        time.sleep(2.0)
        if self.how == "kill":
            self.topo.kill_master(dest)
        else:
            self.topo.failover(dest)

    def stop(self):
        self.topo.stop()


class SentinelDeployment:
    prefix = "image"

    def __init__(self, tmp: Path, args):
        self.topo = _topologies().SentinelSet(tmp / "sentinel")
        self.how = args.disrupt
        self.label = ("a master, a replica and 3 sentinels (down-after 1 s); at 40% done "
                      + ("SENTINEL FAILOVER" if self.how == "failover" else "the master SIGKILLed "
                         "(no persistence: it comes back empty as the new master's replica)"))

    def start(self):
        self.topo.start()
        self.url = self.topo.url
        return self

    def client(self):
        return self.topo.client()  # the master of the moment

    def push(self, key, payloads):
        m = self.topo.client()
        for i in range(0, len(payloads), 1000):
            m.rpush(key, *payloads[i:i + 1000])
        m.wait(1, 10_000)

    def disrupt(self):
        if self.how == "failover":
            self.topo.failover()
        else:
            self.topo.kill_master()

    def stop(self):
        self.topo.stop()


DEPLOYMENTS = {"single": Single, "cluster": ClusterDeployment, "sentinel": SentinelDeployment}


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
    ap.add_argument("--topology", choices=sorted(DEPLOYMENTS), default="single",
                    help="one redis-server (killed once), a Cluster or a Sentinel set (failed over once)")
    ap.add_argument("--disrupt", choices=["failover", "kill"], default="failover",
                    help="on a cluster or Sentinel: a failover (CLUSTER FAILOVER, SENTINEL FAILOVER) or a "
                         "SIGKILL of the master")
    ap.add_argument("--min-replicas-ack", type=int, default=0, help="imgtool queue --min-replicas-ack")
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
    from imgtool.queue.keys import Keys

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="imgtool-soak-"))
    deployment = DEPLOYMENTS[args.topology](tmp, args).start()
    keys = Keys(deployment.prefix)
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
    deployment.push(keys.jobs, payloads)

    logs = tmp / "logs"
    logs.mkdir()
    cmd = [sys.executable, "-m", "imgtool", "queue", "--redis", deployment.url, "--prefix", keys.prefix,
           "--min-replicas-ack", str(args.min_replicas_ack),
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
    disrupted = False
    t0 = time.monotonic()
    next_kill = t0 + kill_every
    finished = False
    last_report = 0.0
    while time.monotonic() - t0 < args.timeout:
        now = time.monotonic()
        try:
            r = deployment.client()
            done = r.llen(keys.done)
            failed = r.llen(keys.failed)
            inflight = sum(r.llen(keys.inflight(w.decode())) for w in r.smembers(keys.workers))
            pending = r.llen(keys.jobs) + r.llen(keys.retry)
        except Exception:  # noqa: BLE001 - Redis restarting or failing over
            time.sleep(0.2)
            continue
        if now - last_report > 5:
            print(f"{now - t0:6.1f} s  done {done}  failed {failed}  pending {pending}  in flight {inflight}  "
                  f"kills {kills}", flush=True)
            last_report = now
        if done + failed >= args.jobs and pending == 0 and inflight == 0:
            finished = True
            break
        if not disrupted and done >= 0.4 * args.jobs:
            print(f"{now - t0:6.1f} s  {deployment.label.split('; ')[-1]}", flush=True)
            deployment.disrupt()
            disrupted = True
            continue
        if now >= next_kill and done + failed < 0.95 * args.jobs:
            victim = rng.randrange(len(procs))
            try:
                wid = worker_id_of(r, keys, procs[victim].pid)
            except Exception:  # noqa: BLE001 - failing over
                wid = None
            procs[victim].kill()
            procs[victim].wait()
            if wid:
                try:
                    stranded += r.llen(keys.inflight(wid))
                except Exception:  # noqa: BLE001
                    pass
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

    r = deployment.client()
    done_entries = [json.loads(x) for x in r.lrange(keys.done, 0, -1)]
    failed_entries = [json.loads(x) for x in r.lrange(keys.failed, 0, -1)]
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
    deployment.stop()
    ran_twice, outage = runs_from_logs(logs)
    result = {
        "topology": args.topology, "disruption": deployment.label, "min_replicas_ack": args.min_replicas_ack,
        "kill_every": kill_every,
        "jobs": args.jobs, "finished": finished, "seconds": round(seconds, 1),
        "jobs_per_s": round(args.jobs / seconds, 1), "worker_kills": kills, "workers_started": started,
        "redis_disruptions": int(disrupted), "stranded_jobs": stranded,
        "done": len(done_entries), "failed": len(failed_entries), "lost": len(lost),
        "duplicates": duplicates, "ran_twice": ran_twice, "longest_outage_s": outage, "poison_pills": poison, "other_failed": other_failed,
        "bad_outputs": bad_outputs,
    }
    if lost:
        print("lost:", lost[:20], file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def runs_from_logs(logs: Path) -> tuple[int, float]:
    """(jobs whose result was recorded more than once, longest Redis outage a worker logged).

    A result recorded on a master that failed before passing it on is gone
    from the new master, so that job runs (and is recorded) again but is in
    image:done once: only the workers' logs ("queue: done <jobId>") show it.
    The outage is the worker's own "working again ... after N s".
    """
    import re

    done = collections.Counter()
    outage = 0.0
    for f in logs.glob("worker-*.log"):
        for line in f.read_text(errors="replace").splitlines():
            m = re.search(r"queue: done (\S+) \(", line)
            if m:
                done[m.group(1)] += 1
            m = re.search(r"redis: working again at .* after ([0-9.]+) s", line)
            if m:
                outage = max(outage, float(m.group(1)))
    return sum(1 for n in done.values() if n > 1), outage


def worker_id_of(r, keys, pid: int) -> str | None:
    """The id of the worker process ``pid``, from the heartbeat hashes."""
    for raw in r.smembers(keys.workers):
        wid = raw.decode()
        if r.hget(keys.heartbeat(wid), "pid") == str(pid).encode():
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
    version = subprocess.run([shutil.which('redis-server') or '/usr/bin/redis-server', '--version'],
                             capture_output=True, text=True).stdout.split()[2][2:]
    when = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    rows = [[f"{res['kill_every']:g} s", res["jobs"], res["seconds"], res["jobs_per_s"], res["worker_kills"],
             res["stranded_jobs"], res["redis_disruptions"], res["longest_outage_s"], res["done"], res["failed"],
             res["lost"], res["duplicates"], res["ran_twice"], res["poison_pills"], res["bad_outputs"]]
            for res in results]
    head = ["SIGKILL every", "jobs", "seconds", "jobs/s", "worker SIGKILLs", "jobs in flight at the kills",
            "Redis restarts" if args.topology == "single" else "failovers", "longest outage a worker saw (s)",
            "done", "failed", "lost", "duplicates", "ran twice", "poison pills", "outputs not decodable"]
    common = f"""{args.workers} worker processes x `-w {args.threads}`, `--heartbeat-ttl
{args.heartbeat_ttl}`, `--max-recoveries {args.max_recoveries}`, ops `{args.ops}` on small PNGs (48x32
to 104x74), backend cpu.  In each run a random worker is SIGKILLed every few seconds (column 1)
and replaced"""
    legend = """lost = jobs in neither image:done nor image:failed at the end; duplicates = jobs in image:done
more than once; ran twice = jobs run to the end more than once (the workers' `queue: done`
lines): a result lost with a master, or a job put back from a worker that an outage longer than
`--heartbeat-ttl` made look dead, runs again and is in image:done once; jobs in flight at the kills = what the killed workers' in-flight lists held, each put
back by the surviving workers once its heartbeat expired.  Poison pills are jobs that happened to be in flight on more than
`--max-recoveries` of the killed workers (false positives of that rule under this rate of
killing, not lost: they are in image:failed with `error.type` `poison_pill`)."""
    if args.topology == "single":
        section = SECTION
        body = f"""## Queue soak

`{command.strip()}` on {when}; {machine_line(machine())};
redis-server {version} with appendonly yes,
appendfsync everysec; {common}, and redis-server is SIGKILLed once at 40% done and restarted on its AOF.

{table(head, rows)}

{legend}
"""
    else:
        section = f"{SECTION}-{args.topology}" + ("-kill" if args.disrupt == "kill" else "")
        if args.min_replicas_ack:
            section += f"-ack{args.min_replicas_ack}"
        name = {"cluster": "Cluster", "sentinel": "Sentinel"}[args.topology]
        title = name + (" (master SIGKILLed)" if "-kill" in section else "") + (
            f", --min-replicas-ack {args.min_replicas_ack}" if args.min_replicas_ack else "")
        body = f"""## Queue soak on {title}

`{command.strip()}` on {when}; {machine_line(machine())}; redis-server {version}
(tests/redis_topologies.py: no persistence, loopback), {results[0]["disruption"]};
`--min-replicas-ack {args.min_replicas_ack}`; {common}.  A correctness count, not a timing:
the jobs/s are those of this shared machine.

{table(head, rows)}

{legend}  On a failover, jobs run twice when their result was acknowledged by the old master
and not yet passed on to its replica when it stopped being master: the new master still
has them in flight (the worker puts them back) or pending, so they run again and are
recorded once there. The longest outage is the longest "working again after N s" a worker
logged: how long it took to work on the new master.
"""
    write_section(section, body, args.results)
    print(f"written to {args.results}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
