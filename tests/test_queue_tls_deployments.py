"""rediss+sentinel:// and rediss+cluster:// end to end: a Sentinel set and a Cluster on TLS only.

Every node (sentinels too) listens on TLS alone (``--port 0 --tls-port``), asks
clients for a certificate signed by the test's CA (trustme), and replicates
(and, on the cluster, talks on its bus) over TLS; so the worker, enqueue and
status get anywhere only if --redis-ca/--redis-cert/--redis-key reach every
connection they open: to the sentinels, to the master they name, to each
cluster node.  One small topology each (one sentinel; three masters without
replicas), started once for the module.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imgtool.queue.keys import Keys
from redis_topologies import Cluster, SentinelSet, TLSFiles, free_port, start_or_fail
from test_queue_health import healthz
from test_queue_worker import Workers, make_image

CLI = [sys.executable, "-m", "imgtool"]


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tls-cluster")
    topo = start_or_fail(Cluster(workdir, tls=TLSFiles(workdir / "certs"), replicas=False), "TLS cluster")
    yield topo
    topo.stop()


@pytest.fixture(scope="module")
def tls_sentinels(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tls-sentinel")
    topo = start_or_fail(SentinelSet(workdir, tls=TLSFiles(workdir / "certs"), sentinels=1), "TLS Sentinel set")
    yield topo
    topo.stop()


@pytest.fixture(params=["sentinel", "cluster"])
def tls_deployment(request):
    """(topology, prefix args, a TLS client for looking) for each deployment on TLS only."""
    if request.param == "cluster":
        topo = request.getfixturevalue("tls_cluster")
        return topo, ["--prefix", Cluster.PREFIX], topo.client()
    topo = request.getfixturevalue("tls_sentinels")
    return topo, [], topo.client()


@pytest.fixture
def workers(tmp_path):
    ws = Workers(tmp_path)
    yield ws
    ws.stop_all()


def test_enqueue_status_and_a_worker_over_tls(tls_deployment, workers, tmp_path):
    topo, prefix_args, r = tls_deployment
    assert topo.url.startswith(("rediss+sentinel://", "rediss+cluster://"))
    tls_args = topo.tls.cli_args
    keys = Keys(prefix_args[1] if prefix_args else "image")
    for i in range(3):
        make_image(tmp_path / "up" / f"t{i}.png", seed=i)
    res = subprocess.run([*CLI, "enqueue", "--redis", topo.url, *tls_args, *prefix_args, "--ops", "thumbnail",
                          str(tmp_path / "up")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert r.llen(keys.jobs) == 3
    res = subprocess.run([*CLI, "status", "--redis", topo.url, *tls_args, *prefix_args, "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["lists"][keys.jobs] == 3

    w = workers.start(topo.url, *tls_args, *prefix_args, "-w", "1")
    workers.wait_for(lambda: r.llen(keys.done) == 3, 60, "three jobs done over TLS")
    done = [json.loads(x) for x in r.lrange(keys.done, 0, -1)]
    assert all(d["status"] == "done" for d in done)
    assert sorted(p.name for p in (tmp_path / "up" / "processed").glob("*_thumbnail.webp")) == \
        [f"t{i}_thumbnail.webp" for i in range(3)]
    assert r.llen(keys.jobs) == 0 and r.llen(keys.failed) == 0
    assert w.alive()


def test_without_the_client_certificate_it_is_one_line(tls_deployment, workers):
    """The servers ask for a client certificate: with only the CA, status says so in one line, exit 1;
    a worker says it cannot reach Redis, /healthz is 503 with that reason, and it keeps trying."""
    topo, prefix_args, _ = tls_deployment
    port = free_port()
    w = workers.start(topo.url, "--redis-ca", str(topo.tls.ca), *prefix_args, "--metrics-port", str(port))
    body = workers.wait_for(lambda: (lambda c, b: b if c == 503 else None)(*healthz(port)), 10, "/healthz 503")
    assert body.startswith("redis unreachable: cannot reach Redis"), body
    workers.wait_for(lambda: "cannot reach Redis" in w.text(), 10, "the worker to say it cannot reach Redis")
    res = subprocess.run([*CLI, "status", "--redis", topo.url, "--redis-ca", str(topo.tls.ca), *prefix_args],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.startswith("Error: cannot reach Redis") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "--redis-cert" in res.stderr  # what to check (redis-py does not always keep the server's alert)
    assert w.alive() and "Traceback" not in w.text() and "internal error" not in w.text()


def test_a_tls_cluster_nodes_plain_url_reaches_the_slots_owner(tls_cluster, tmp_path):
    """rediss:// of one node that does not own the queue's slot: detected as a cluster, and the
    owner (known only from CLUSTER SLOTS) reached over TLS with the same certificate."""
    topo, prefix_args, r = tls_cluster, ["--prefix", Cluster.PREFIX], tls_cluster.client()
    keys = Keys(Cluster.PREFIX)
    seed = next(n for n in topo.nodes if n.port != topo.owner().port)
    before = r.llen(keys.jobs)
    make_image(tmp_path / "one.png")
    res = subprocess.run([*CLI, "enqueue", "--redis", topo.plain_url(seed), *topo.tls.cli_args, *prefix_args,
                          "--ops", "thumbnail", str(tmp_path / "one.png")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert r.llen(keys.jobs) == before + 1
    r.delete(keys.jobs)
