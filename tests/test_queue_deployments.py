"""imgtool queue on Redis beyond one server: a real Cluster (3 masters + 3 replicas) and a real
Sentinel set (master, replica, 3 sentinels), started by tests/redis_topologies.py.

On each: FIFO, invalid jobs, retries, a SIGKILLed worker's jobs recovered;
on the cluster 200 jobs exactly once while the queue's slot is migrated live
and its new master then fails over to its replica; on Sentinel 200 jobs
across SENTINEL FAILOVER and across a SIGKILL of the master (at-least-once:
none missing, the ones run twice counted).  Every worker, enqueue and status
runs as the ACL user of imgtool.queue.acl.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from imgtool.queue.keys import Keys
from test_queue_worker import Workers, make_image

OPS = ["thumbnail"]
SLOW = {"IMGTOOL_TEST_JOB_DELAY": "0.3"}


@pytest.fixture
def workers(tmp_path):
    ws = Workers(tmp_path)
    yield ws
    ws.stop_all()


@pytest.fixture(params=["cluster", "sentinel"])
def deployment(request):
    """(url, prefix args, a client for looking, the topology) for each deployment."""
    if request.param == "cluster":
        topo = request.getfixturevalue("cluster")
        return topo.url, ["--prefix", topo.PREFIX], topo.client(), topo
    topo = request.getfixturevalue("sentinel")
    return topo.url, [], _SentinelLook(topo), topo


class _SentinelLook:
    """The current master, found again after each failover (for the test's own reads)."""

    def __init__(self, topo):
        self.topo = topo

    def __getattr__(self, name):
        return getattr(self.topo.client(), name)


def _job(job_id, src, out, operations=OPS, **extra) -> dict:
    d = {"jobId": job_id, "inputPath": str(src), "outputDir": str(out), "operations": list(operations),
         "timestamp": int(time.time() * 1000), "retryCount": 0}
    d.update(extra)
    return d


def _ids(r, key) -> list[str]:
    return [json.loads(x)["jobId"] for x in r.lrange(key, 0, -1)]


def _inflight_total(r, keys: Keys) -> int:
    return sum(r.llen(keys.inflight(w.decode())) for w in r.smembers(keys.workers))


def _start(workers, url, prefix_args, *args, env=None, ttl="3"):
    return workers.start(url, *prefix_args, "--heartbeat-ttl", ttl, *args, env=env)


# ----------------------------------------------------------------------------- on each deployment


def test_fifo_invalid_jobs_and_retries(deployment, workers, tmp_path):
    url, prefix_args, r, _ = deployment
    keys = Keys(prefix_args[1] if prefix_args else "image")
    out = tmp_path / "out"
    srcs = [make_image(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(5)]
    late = tmp_path / "in" / "late.png"
    r.rpush(keys.jobs, *[json.dumps(_job(f"f{i}", s, out)) for i, s in enumerate(srcs)],
            b"{not json", json.dumps(_job("badop", srcs[0], out, ["sharpen"])),
            json.dumps(_job("late", late, out)))
    w = _start(workers, url, prefix_args, "-w", "1", "--max-retries", "20")
    workers.wait_for(lambda: r.llen(keys.done) == 5 and r.llen(keys.failed) == 2, 60, "five done, two failed")
    assert _ids(r, keys.done) == [f"f{i}" for i in range(5)]  # FIFO
    failed = [json.loads(x) for x in r.lrange(keys.failed, 0, -1)]
    assert failed[0]["error"]["type"] == "invalid_job" and "JSON" in failed[0]["error"]["message"]
    assert failed[1]["jobId"] == "badop" and "sharpen" in failed[1]["error"]["message"]
    workers.wait_for(lambda: r.zcard(keys.retry_schedule) or r.llen(keys.retry), 30, "the missing input retried")
    make_image(late)
    workers.wait_for(lambda: r.llen(keys.done) == 6, 60, "the late job done after its retries")
    [late_done] = [json.loads(x) for x in r.lrange(keys.done, 5, 5)]
    assert late_done["jobId"] == "late" and late_done["retryCount"] >= 1
    assert (out / "late_thumbnail.webp").exists()
    w.signal(signal.SIGTERM)
    assert w.wait(20) == 0
    assert r.llen(keys.jobs) == 0 and r.scard(keys.workers) == 0


def test_a_sigkilled_workers_jobs_are_recovered(deployment, workers, tmp_path):
    url, prefix_args, r, _ = deployment
    keys = Keys(prefix_args[1] if prefix_args else "image")
    src = make_image(tmp_path / "in" / "a.png")
    n = 10
    r.rpush(keys.jobs, *[json.dumps(_job(f"k{i}", src, tmp_path / "out")) for i in range(n)])
    a = _start(workers, url, prefix_args, "-w", "4", env={"IMGTOOL_TEST_JOB_DELAY": "60"}, ttl="2")
    workers.wait_for(lambda: _inflight_total(r, keys) == 4, 30, "four jobs in flight on the first worker")
    a.signal(signal.SIGKILL)
    a.wait(10)
    _start(workers, url, prefix_args, "-w", "2", ttl="2")
    workers.wait_for(lambda: r.llen(keys.done) == n, 60, "every job done by the second worker")
    assert sorted(_ids(r, keys.done)) == sorted(f"k{i}" for i in range(n))  # each once
    assert r.llen(keys.failed) == 0 and r.llen(keys.jobs) == 0


def test_sentinels_password_is_their_own(sentinel):
    """The sentinels ask for a password apart from the master's: without it, one line naming them."""
    url = sentinel.url.split("?")[0]
    res = subprocess.run([sys.executable, "-m", "imgtool", "status", "--redis", url],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("Error: the sentinels of ") and "refused their password" in res.stderr
    assert "sentinel_password" in res.stderr and len(res.stderr.splitlines()) == 1
    ok = subprocess.run([sys.executable, "-m", "imgtool", "status", "--redis", sentinel.url],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_enqueue_and_status(deployment, workers, tmp_path):
    url, prefix_args, r, _ = deployment
    keys = Keys(prefix_args[1] if prefix_args else "image")
    cli = [sys.executable, "-m", "imgtool"]
    for i in range(3):
        make_image(tmp_path / "up" / f"e{i}.png", seed=i)
    res = subprocess.run([*cli, "enqueue", "--redis", url, *prefix_args, "--ops", "thumbnail",
                          str(tmp_path / "up")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert r.llen(keys.jobs) == 3
    res = subprocess.run([*cli, "status", "--redis", url, *prefix_args, "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["lists"][keys.jobs] == 3


def test_min_replicas_ack_waits_for_a_replica(deployment, workers, tmp_path):
    url, prefix_args, r, _ = deployment
    keys = Keys(prefix_args[1] if prefix_args else "image")
    src = make_image(tmp_path / "in" / "a.png")
    r.rpush(keys.jobs, *[json.dumps(_job(f"a{i}", src, tmp_path / "out")) for i in range(5)])
    w = _start(workers, url, prefix_args, "-w", "2", "--min-replicas-ack", "1")
    workers.wait_for(lambda: r.llen(keys.done) == 5, 60, "the jobs done, each result on a replica")
    assert "replica(s) acknowledged" not in w.text()  # each WAIT saw its replica


def test_min_replicas_ack_without_replicas_warns_and_records(redis_server, workers, tmp_path):
    r = redis_server.client()
    keys = Keys()
    src = make_image(tmp_path / "a.png")
    r.rpush(keys.jobs, *[json.dumps(_job(f"lonely{i}", src, tmp_path / "out")) for i in range(3)])
    w = workers.start(redis_server, "--min-replicas-ack", "1")
    workers.wait_for(lambda: r.llen(keys.done) == 3, 30, "the jobs recorded all the same")
    workers.wait_for(lambda: "only 0 of 1 replica(s) acknowledged" in w.text(), 10, "the warning")
    assert w.text().count("replica(s) acknowledged") == 1  # once, not once per job


# ----------------------------------------------------------------------------- the cluster


def test_cluster_slot_migrated_live_then_failed_over_200_jobs_once(cluster, workers, tmp_path):
    r = cluster.client()
    keys = Keys(cluster.PREFIX)
    src = make_image(tmp_path / "in" / "a.png")
    n = 200
    r.rpush(keys.jobs, *[json.dumps(_job(f"c{i:03d}", src, tmp_path / "out")) for i in range(n)])
    env = {"IMGTOOL_TEST_JOB_DELAY": "0.2"}  # 200 jobs take about 5 s: long enough to break things meanwhile
    for _ in range(2):
        _start(workers, cluster.url, ["--prefix", cluster.PREFIX], "-w", "4", env=env)
    workers.wait_for(lambda: r.llen(keys.done) >= 20, 60, "some jobs done before the migration")
    src_node = cluster.owner()
    dest = next(m for m in cluster.masters() if m.port != src_node.port)
    cluster.migrate_slot(dest, between_keys=lambda: time.sleep(0.05))  # workers run between the keys' moves
    assert cluster.owner().port == dest.port
    done_after_migration = r.llen(keys.done)
    assert done_after_migration < n, "the migration ran after the jobs were done: nothing was tested"
    workers.wait_for(lambda: r.llen(keys.done) >= done_after_migration + 10, 60, "jobs done after the migration")
    new_master = cluster.failover(dest)
    assert cluster.owner().port == new_master.port
    assert r.llen(keys.done) < n, "the failover ran after the jobs were done"
    workers.wait_for(lambda: r.llen(keys.done) >= n and r.llen(keys.jobs) == 0
                     and _inflight_total(r, keys) == 0, 120, "every job recorded")
    ids = _ids(r, keys.done)
    counts = collections.Counter(ids)
    assert sorted(counts) == [f"c{i:03d}" for i in range(n)]  # none missing
    assert [i for i, c in counts.items() if c > 1] == []  # exactly once
    assert r.llen(keys.failed) == 0
    logs = workers.logs()
    assert "Traceback" not in logs


def test_a_cluster_nodes_plain_url_is_detected(cluster, workers, tmp_path):
    r = cluster.client()
    keys = Keys(cluster.PREFIX)
    src = make_image(tmp_path / "in" / "a.png")
    r.rpush(keys.jobs, *[json.dumps(_job(f"d{i}", src, tmp_path / "out")) for i in range(3)])
    not_owner = next(m for m in cluster.masters() if m.port != cluster.owner().port)
    w = _start(workers, cluster.plain_url(not_owner), ["--prefix", cluster.PREFIX], "-w", "1")
    workers.wait_for(lambda: r.llen(keys.done) == 3, 60, "the jobs done through a non-owner's plain URL")
    assert "is a cluster node" in w.text()


@pytest.mark.parametrize("how", ["cluster-url", "plain-url"])
def test_a_prefix_without_a_hash_tag_is_refused_on_a_cluster(cluster, how, tmp_path):
    url = cluster.url if how == "cluster-url" else cluster.plain_url(cluster.nodes[0])
    res = subprocess.run([sys.executable, "-m", "imgtool", "queue", "--redis", url, "--backend", "cpu"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    [line] = [x for x in res.stderr.splitlines() if x.startswith("Error: ")]  # one line says it
    assert "--prefix '{image}'" in line and "{image}:jobs" in line and "Traceback" not in res.stderr
    assert cluster.client().dbsize() == 0  # refused before writing anything


# ----------------------------------------------------------------------------- Sentinel


def _sentinel_200(sentinel, workers, tmp_path, disrupt, label):
    r = _SentinelLook(sentinel)
    keys = Keys()
    src = make_image(tmp_path / "in" / "a.png")
    n = 200
    payloads = [json.dumps(_job(f"s{i:03d}", src, tmp_path / "out")) for i in range(n)]
    master = sentinel.client()
    master.rpush(keys.jobs, *payloads)
    assert master.wait(1, 5000) == 1  # the producer's jobs are on the replica before anything breaks
    env = {"IMGTOOL_TEST_JOB_DELAY": "0.2"}  # about 5 s for the 200: the failover happens meanwhile
    for _ in range(2):
        _start(workers, sentinel.url, [], "-w", "4", env=env)
    workers.wait_for(lambda: r.llen(keys.done) >= 40, 60, "some jobs done before the failover")
    disrupt()
    before = r.llen(keys.done)
    assert before < n, "the failover ran after the jobs were done: nothing was tested"
    # working on the new master within seconds (jobs take 0.2 s, 8 at a time)
    workers.wait_for(lambda: r.llen(keys.done) >= before + 8, 15, "jobs done on the new master")

    def settled():
        try:
            return (len(set(_ids(r, keys.done))) >= n and r.llen(keys.jobs) == 0
                    and _inflight_total(r, keys) == 0)
        except Exception:  # noqa: BLE001 - the master may be changing
            return False

    workers.wait_for(settled, 120, "every job recorded on the new master")
    counts = collections.Counter(_ids(r, keys.done))
    assert sorted(counts) == [f"s{i:03d}" for i in range(n)]  # none missing
    # A result lost with the old master is in image:done once but was recorded twice:
    # the workers' logs tell.
    runs = collections.Counter(m.group(1) for w in workers.started
                               for m in re.finditer(r"queue: done (\S+) \(", w.text()))
    twice = sum(1 for c in runs.values() if c > 1)
    print(f"sentinel {label}: {n} jobs, none missing, {sum(c > 1 for c in counts.values())} in "
          f"{keys.done} twice, {twice} run twice")
    assert r.llen(keys.failed) == 0
    return twice


def test_sentinel_failover_200_jobs_none_missing(sentinel, workers, tmp_path):
    _sentinel_200(sentinel, workers, tmp_path, sentinel.failover, "SENTINEL FAILOVER")


def test_sentinel_master_sigkilled_200_jobs_none_missing(sentinel, workers, tmp_path):
    _sentinel_200(sentinel, workers, tmp_path, sentinel.kill_master, "master SIGKILLed")


def test_a_sentinels_address_given_as_a_server_is_refused(sentinel):
    """Not `unknown command` forever: one line saying what to write instead."""
    res = subprocess.run([sys.executable, "-m", "imgtool", "status", "--redis",
                          f"redis://:{sentinel.SENTINEL_PASSWORD}@{sentinel.sentinels[0].address}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    [line] = [x for x in res.stderr.splitlines() if x.startswith("Error: ")]
    assert "is a Redis Sentinel" in line and "redis+sentinel://" in line and "<master-name>" in line
