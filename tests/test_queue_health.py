"""/healthz and the log tell why a worker cannot work; /metrics has what operators look at first.

Each refusal on real Redis: a wrong password, a user who may not BLMOVE, a
cluster redirect the client cannot follow: /healthz 503 within 10 s with the
reason, and one log line naming the cause.  Also: the metrics' fixed names and
values, and `imgtool status` showing a state change long before the next heartbeat.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import ACL_USER, RedisServer, free_port
from imgtool import __version__
from imgtool.queue.acl import acl_rules
from imgtool.queue.keys import Keys
from test_queue_worker import Workers, make_image, metrics_of

K = Keys()


@pytest.fixture
def workers(tmp_path):
    ws = Workers(tmp_path)
    yield ws
    ws.stop_all()


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _unhealthy(workers, port, what):
    def check():
        code, body = healthz(port)
        return body if code == 503 else None
    return workers.wait_for(check, 10, f"/healthz 503 ({what})")


def _job(job_id, src, out) -> str:
    return json.dumps({"jobId": job_id, "inputPath": str(src), "outputDir": str(out), "operations": ["thumbnail"],
                       "timestamp": int(time.time() * 1000), "retryCount": 0})


def test_a_wrong_password_is_an_authentication_error(redis_server, workers):
    port = free_port()
    url = f"redis://{ACL_USER}:wrong-password@127.0.0.1:{redis_server.port}/0"
    w = workers.start(url, "--metrics-port", str(port))
    body = _unhealthy(workers, port, "wrong password")
    assert body.startswith("authentication refused") and f"user '{ACL_USER}'" in body
    workers.wait_for(lambda: "refused the password" in w.text(), 10, "the log line")
    time.sleep(2)  # several retries later: still one line
    lines = [x for x in w.text().splitlines() if "refused the password" in x]
    assert len(lines) == 1 and f"user '{ACL_USER}'" in lines[0] and "unreachable" not in lines[0]
    assert w.alive()  # it keeps trying: the password may be fixed on the server's side
    redis_server.client().execute_command("ACL", "SETUSER", ACL_USER, ">wrong-password")
    workers.wait_for(lambda: healthz(port)[0] == 200, 20, "/healthz 200 once the password is accepted")
    assert "working again" in w.text()


def test_a_user_who_may_not_blmove_is_a_permission_error(redis_server, workers, tmp_path):
    r = redis_server.client()
    r.execute_command("ACL", "SETUSER", "noblmove", "reset", "on", ">pw", *acl_rules("image"), "-blmove")
    r.rpush(K.jobs, _job("j1", make_image(tmp_path / "a.png"), tmp_path / "out"))
    port = free_port()
    w = workers.start(f"redis://noblmove:pw@127.0.0.1:{redis_server.port}/0", "--metrics-port", str(port))
    body = _unhealthy(workers, port, "no BLMOVE")
    assert body.startswith("permission refused") and "blmove" in body.lower()
    workers.wait_for(lambda: "lacks a permission" in w.text(), 10, "the log line")
    time.sleep(2)
    lines = [x for x in w.text().splitlines() if "lacks a permission" in x]
    assert len(lines) == 1 and "'noblmove'" in lines[0] and "blmove" in lines[0].lower()
    assert r.llen(K.jobs) == 1  # nothing taken, nothing lost
    r.execute_command("ACL", "SETUSER", "noblmove", "+blmove")
    workers.wait_for(lambda: r.llen(K.done) == 1, 30, "the job done once BLMOVE is allowed")
    workers.wait_for(lambda: healthz(port)[0] == 200, 10, "/healthz 200 again")


def test_a_redirect_the_client_cannot_follow(cluster, workers):
    """A user who may not ask the node what it is (no INFO, no CLUSTER) gets a plain client: MOVED."""
    not_owner = next(m for m in cluster.masters() if m.port != cluster.owner().port)
    for node in cluster.nodes:
        node.client().execute_command("ACL", "SETUSER", "blind", "reset", "on", ">pw",
                                      *acl_rules(cluster.PREFIX), "-info", "-cluster")
    port = free_port()
    w = workers.start(f"redis://blind:pw@{not_owner.address}/0", "--prefix", cluster.PREFIX,
                      "--metrics-port", str(port))
    body = _unhealthy(workers, port, "MOVED")
    assert body.startswith("redirect not followed") and "MOVED" in body and "redis+cluster://" in body
    workers.wait_for(lambda: "cannot follow" in w.text(), 10, "the log line")
    lines = [x for x in w.text().splitlines() if "cannot follow" in x]
    assert len(lines) == 1 and "MOVED" in lines[0]


def test_a_take_loop_failing_turns_healthz_503(redis_server, workers, tmp_path):
    """An error that is no refusal (a master turned replica: READONLY) is 503 after a few seconds."""
    other = RedisServer(tmp_path / "other").start()
    try:
        port = free_port()
        r = redis_server.client()
        w = workers.start(redis_server, "--metrics-port", str(port))
        workers.wait_for(lambda: healthz(port)[0] == 200, 20, "/healthz 200")
        r.replicaof("127.0.0.1", other.port)
        body = _unhealthy(workers, port, "READONLY")
        assert body.startswith("redis commands failing for") and "read only replica" in body
        assert "replica" in w.text()  # the first error logged (UNBLOCKED or READONLY), once
        r.replicaof("NO", "ONE")
        workers.wait_for(lambda: healthz(port)[0] == 200, 20, "/healthz 200 again")
        assert w.alive()
    finally:
        other.kill()


def test_metrics_operators_look_at_first(redis_server, workers, tmp_path):
    r = redis_server.client()
    src = make_image(tmp_path / "a.png")
    old = int(time.time() * 1000) - 120_000  # pushed two minutes ago
    for i in range(3):
        r.rpush(K.jobs, json.dumps({"jobId": f"m{i}", "inputPath": str(src), "outputDir": str(tmp_path / "out"),
                                    "operations": ["thumbnail"], "timestamp": old, "retryCount": 0}))
    # Another worker holding two jobs, alive while this one starts: the worker's first recovery
    # pass leaves it alone, and the next comes a beat interval (10 s) later.
    r.sadd(K.workers, "ghost")
    r.rpush(K.inflight("ghost"), b"g1", b"g2")
    r.set(K.heartbeat("ghost"), b"1")
    port = free_port()
    workers.start(redis_server, "-w", "1", "--metrics-port", str(port), "--heartbeat-ttl", "30",
                  env={"IMGTOOL_TEST_JOB_DELAY": "60"})

    def metrics_when(condition):
        def read():
            try:
                m = metrics_of(port)
            except OSError:
                return None
            return m if condition(m) else None
        return read

    workers.wait_for(metrics_when(lambda m: m.get(("imgtool_queue_workers", (("state", "live"),))) == 2),
                     15, "the metrics to count both workers live")
    r.delete(K.heartbeat("ghost"))  # now it is dead, its jobs not yet recovered
    # The gauges are read from Redis on the worker's 1 s tick, the histogram at the take: wait for a
    # tick after both (within 8 s, or the test fails: the in-flight total must reach 3).
    m = workers.wait_for(metrics_when(lambda m: m.get(("imgtool_queue_workers", (("state", "dead"),))) == 1
                                      and m.get(("imgtool_queue_job_wait_seconds_count", ())) == 1
                                      and m.get(("imgtool_queue_in_flight_total", ())) == 3),
                         8, "the metrics to show the dead worker, the job taken and 3 jobs in flight")
    assert m[("imgtool_queue_workers", (("state", "live"),))] == 1
    assert m[("imgtool_queue_in_flight_total", ())] == 3  # one here, two on the ghost
    assert m[("imgtool_queue_oldest_job_age_seconds", ())] >= 119  # the head job's timestamp
    assert m[("imgtool_queue_job_wait_seconds_count", ())] == 1  # the one taken
    assert m[("imgtool_queue_job_wait_seconds_sum", ())] >= 119
    assert m[("imgtool_queue_retry_scheduled", ())] == 0
    assert m[("imgtool_build_info", (("backend", "cpu"), ("version", __version__)))] == 1
    assert m[("imgtool_queue_worker_state", (("state", "busy"),))] == 1
    assert m[("process_resident_memory_bytes", ())] > 0 and ("process_cpu_seconds_total", ()) in m
    r.delete(K.jobs)
    workers.wait_for(lambda: metrics_of(port)[("imgtool_queue_oldest_job_age_seconds", ())] == 0, 10,
                     "no oldest job once the queue is empty")


def test_status_shows_a_state_change_before_the_next_heartbeat(redis_server, workers, tmp_path):
    """Heartbeats every 20 s here; status must show busy, then idle, each within a few seconds
    (the bounds leave room for a slow `imgtool status` start; the worker writes within 0.1 s)."""
    r = redis_server.client()
    cli = [sys.executable, "-m", "imgtool", "status", "--redis", redis_server.address, "--json"]
    w = workers.start(redis_server, "-w", "1", "--heartbeat-ttl", "60", env={"IMGTOOL_TEST_JOB_DELAY": "8"})

    def state():
        res = subprocess.run(cli, capture_output=True, text=True, timeout=30)
        rows = json.loads(res.stdout)["workers"]
        return rows[0]["state"] if rows else None

    workers.wait_for(lambda: state() == "idle", 20, "the worker idle")
    r.rpush(K.jobs, _job("st", make_image(tmp_path / "a.png"), tmp_path / "out"))
    workers.wait_for(lambda: state() == "busy", 6, "status to show busy")  # the job runs 8 s
    workers.wait_for(lambda: r.llen(K.done) == 1, 20, "the job done")
    workers.wait_for(lambda: state() == "idle", 6, "status to show idle again")
    assert w.alive()
