"""Real Redis deployments beyond one server, started by the tests on free loopback ports.

- ``Cluster``: 3 masters + 3 replicas (``redis-server --cluster-enabled yes``),
  formed with CLUSTER ADDSLOTSRANGE / MEET / REPLICATE, in a second or two;
  it can migrate a slot live (SETSLOT IMPORTING/MIGRATING + MIGRATE, the steps
  ``redis-cli --cluster reshard`` takes) and fail a master over to its replica
  (CLUSTER FAILOVER on the replica).
- ``SentinelSet``: a master, a replica and 3 sentinels (``redis-server --sentinel``),
  down-after 1 s, formed in a few seconds; ``failover()`` asks the sentinels
  (SENTINEL FAILOVER), ``kill_master()`` SIGKILLs the master and waits for
  the promotion, then starts the old master again (the sentinels make it a replica).

``tls=TLSFiles(dir)`` runs either on TLS only (``--port 0 --tls-port``, client
certificates asked for, replication and the cluster bus on TLS too), with a
CA and certificates made by trustme; ``url`` is then ``rediss+...`` and
``tls.cli_args`` the worker's ``--redis-ca/--redis-cert/--redis-key``.

Every data node has the ACL user ``imgtool`` (imgtool.queue.acl's rules for
the topology's prefix); ``url`` names it.  Used by the tests (conftest's
fixtures) and by ``python -m bench.soak --topology``.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

# The user the queue runs as, with exactly imgtool.queue.acl's rules (tests and bench alike).
ACL_USER = "imgtool"
ACL_PASSWORD = "imgtool-test-pw"


def create_acl_user(client, prefix: str = "image") -> None:
    from imgtool.queue.acl import acl_rules

    client.execute_command("ACL", "SETUSER", ACL_USER, "reset", "on", f">{ACL_PASSWORD}", *acl_rules(prefix))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server_binary() -> str:
    import os
    import shutil

    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError("redis-server is not installed: the queue tests need it "
                         "(bash scripts/test.sh installs it from the system's packages)")

FORM_TIMEOUT = 30.0
SLOTS = 16384
MASTER_NAME = "mymaster"


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except redis.exceptions.RedisError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last})")


class TLSFiles:
    """A CA (trustme), a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    def __init__(self, workdir: Path):
        import trustme

        workdir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        self.ca, self.server, self.client = workdir / "ca.pem", workdir / "server.pem", workdir / "client.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(self.server))
        ca.issue_cert("imgtool-worker").private_key_and_cert_chain_pem.write_to_path(str(self.client))

    def server_args(self) -> list[str]:
        """A node's TLS settings (its outgoing links, replication and sentinel's, use the same pair)."""
        return ["--tls-cert-file", str(self.server), "--tls-key-file", str(self.server),
                "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "yes", "--tls-replication", "yes"]

    def client_kwargs(self) -> dict:
        return dict(ssl=True, ssl_ca_certs=str(self.ca), ssl_certfile=str(self.client),
                    ssl_keyfile=str(self.client))

    @property
    def cli_args(self) -> list[str]:
        return ["--redis-ca", str(self.ca), "--redis-cert", str(self.client), "--redis-key", str(self.client)]


class Node:
    """One redis-server process (data node or sentinel) on a fixed port (TLS only with ``tls``)."""

    def __init__(self, workdir: Path, args: list[str], port: int | None = None, conf: str | None = None,
                 password: str | None = None, tls: TLSFiles | None = None):
        self.tls = tls
        self.password = password  # the default user's, where the node asks for one (the sentinels)
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.args = args
        self.conf = conf
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Node":
        cmd = [_redis_server_binary()]
        if self.conf is not None:
            path = self.dir / "sentinel.conf"
            if not path.exists():
                path.write_text(self.conf)
            cmd += [str(path), "--sentinel"]
        ports = ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()] if self.tls else \
            ["--port", str(self.port)]
        cmd += [*ports, "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), "--daemonize", "no", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: self.client().ping(), 10, f"redis-server on port {self.port}")
        except AssertionError:
            self.kill()  # never left running behind a failed start
            raise
        return self

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self, **kw) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=2,
                           password=self.password, **(self.tls.client_kwargs() if self.tls else {}), **kw)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        p = self.dir / "redis.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""


def _data_args() -> list[str]:
    return ["--save", "", "--appendonly", "no", "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0"]


# ------------------------------------------------------------------------------------- cluster


class Cluster:
    PREFIX = "{image}"

    def __init__(self, workdir: Path, tls: TLSFiles | None = None, replicas: bool = True):
        """3 masters, each with a replica unless ``replicas`` is false; on TLS only with ``tls``."""
        args = _data_args() + ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                               "--cluster-config-file", "nodes.conf"]
        if tls:
            args += ["--tls-cluster", "yes"]
        self.tls = tls
        self.nodes = [Node(workdir / f"node{i}", args, port=free_cluster_port(), tls=tls)
                      for i in range(6 if replicas else 3)]

    @property
    def _scheme(self) -> str:
        return "rediss" if self.tls else "redis"

    @property
    def url(self) -> str:
        """A redis+cluster:// URL (rediss+cluster:// on TLS) as the ACL user, seeded with every node."""
        hosts = ",".join(n.address for n in self.nodes)
        return f"{self._scheme}+cluster://{ACL_USER}:{ACL_PASSWORD}@{hosts}"

    def plain_url(self, node: Node) -> str:
        return f"{self._scheme}://{ACL_USER}:{ACL_PASSWORD}@{node.address}/0"

    def start(self) -> "Cluster":
        for n in self.nodes:
            n.start()
            create_acl_user(n.client(), self.PREFIX)
        masters, replicas = self.nodes[:3], self.nodes[3:]
        bounds = [0, 5461, 10923, SLOTS]
        for i, m in enumerate(masters):
            m.client().execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        first = masters[0].client()
        for n in self.nodes[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)
        _wait(lambda: all(len(self._nodes_of(n)) == len(self.nodes) for n in self.nodes), FORM_TIMEOUT,
              "every node to know all the others")
        for m, rep in zip(masters, replicas):
            master_id = m.client().execute_command("CLUSTER", "MYID").decode()
            _wait(lambda: rep.client().execute_command("CLUSTER", "REPLICATE", master_id), FORM_TIMEOUT,
                  "a replica to follow its master")
        self.wait_healthy()
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()

    @staticmethod
    def _nodes_of(node: Node) -> list[list[str]]:
        text = node.client().execute_command("CLUSTER", "NODES").decode()
        return [line.split() for line in text.splitlines() if line.strip()]

    def wait_healthy(self) -> None:
        """Every node says ok, three masters own all slots, the replicas are in sync."""
        def healthy():
            for n in self.nodes:
                info = n.client().execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info or f"cluster_slots_ok:{SLOTS}" not in info:
                    return False
            for n in self.nodes:
                role = n.client().info("replication")
                if role["role"] == "slave" and role.get("master_link_status") != "up":
                    return False
            views = [sorted(line[2].replace("myself,", "") for line in self._nodes_of(n)) for n in self.nodes]
            return all(v == views[0] for v in views) and sum("master" in f for f in views[0]) == 3
        _wait(healthy, FORM_TIMEOUT, "the cluster to be healthy")

    def slot(self) -> int:
        return int(self.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", f"{self.PREFIX}:jobs"))

    def node_id(self, node: Node) -> str:
        return node.client().execute_command("CLUSTER", "MYID").decode()

    def by_id(self, node_id: str) -> Node:
        return next(n for n in self.nodes if self.node_id(n) == node_id)

    def owner(self) -> Node:
        """The master that owns the queue's slot now."""
        slot = self.slot()
        for line in self._nodes_of(self.nodes[0]):
            if "master" not in line[2]:
                continue
            for rng in line[8:]:
                if rng.startswith("["):
                    continue
                lo, _, hi = rng.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return self.by_id(line[0])
        raise AssertionError("nobody owns the slot")

    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.client().info("replication")["role"] == "master"]

    def replica_of(self, master: Node) -> Node:
        mid = self.node_id(master)
        for line in self._nodes_of(self.nodes[0]):
            if line[3] == mid:
                return self.by_id(line[0])
        raise AssertionError("the master has no replica")

    def flush(self) -> None:
        for m in self.masters():
            m.client().flushall()

    def client(self) -> redis.RedisCluster:
        from redis.cluster import ClusterNode

        return redis.RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes],
                                  socket_timeout=5, **(self.tls.client_kwargs() if self.tls else {}))

    def migrate_slot(self, dest: Node, between_keys=None) -> None:
        """Move the queue's slot from its owner to ``dest``, key by key, while clients run.

        ``between_keys()`` is called after each key moved (the test can look then).
        """
        src = self.owner()
        slot = self.slot()
        src_id, dest_id = self.node_id(src), self.node_id(dest)
        s, d = src.client(), dest.client()
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dest_id)
        while True:
            keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1)
            if not keys:
                break
            try:
                s.execute_command("MIGRATE", "127.0.0.1", dest.port, "", 0, 5000, "KEYS", *keys)
            except redis.exceptions.ResponseError as exc:
                if "NOKEY" not in str(exc):
                    raise
            if between_keys:
                between_keys()
        for n in self.masters():
            n.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dest_id)
        _wait(lambda: self.owner().port == dest.port, FORM_TIMEOUT, "the slot's new owner to be known")

    def failover(self, master: Node) -> Node:
        """Promote ``master``'s replica (CLUSTER FAILOVER on it); returns the new master."""
        rep = self.replica_of(master)
        rep.client().execute_command("CLUSTER", "FAILOVER")
        _wait(lambda: rep.client().info("replication")["role"] == "master", FORM_TIMEOUT, "the replica promoted")
        self.wait_healthy()
        return rep


    def kill_master(self, master: Node) -> Node:
        """SIGKILL ``master``; its replica takes over (after cluster-node-timeout); the old one comes
        back empty and rejoins as the new master's replica.  Returns the new master."""
        rep = self.replica_of(master)
        master.kill(signal.SIGKILL)
        _wait(lambda: rep.client().info("replication")["role"] == "master", FORM_TIMEOUT,
              "the replica promoted after its master's death")
        master.start()
        create_acl_user(master.client(), self.PREFIX)
        self.wait_healthy()
        return rep


# ------------------------------------------------------------------------------------ sentinel


def _fields(reply) -> dict:
    """SENTINEL REPLICAS' entry as {str: str}, whichever way redis-py parsed it."""
    if isinstance(reply, dict):
        items = reply.items()
    else:
        items = zip(reply[::2], reply[1::2])
    out = {}
    for k, v in items:
        k = k.decode() if isinstance(k, bytes) else str(k)
        out[k] = v.decode() if isinstance(v, bytes) else v
    if out.get("master_link_status") is not None and "master-link-status" not in out:
        out["master-link-status"] = out["master_link_status"]
    return out


class SentinelSet:
    PREFIX = "image"
    # The sentinels ask for a password of their own (the URL's sentinel_password),
    # apart from the master's user and password.
    SENTINEL_PASSWORD = "sentinel-test-pw"

    def __init__(self, workdir: Path, tls: TLSFiles | None = None, sentinels: int = 3):
        """A master, a replica and ``sentinels`` sentinels; on TLS only with ``tls``."""
        self.tls = tls
        self.data = [Node(workdir / "master", _data_args(), tls=tls), Node(workdir / "replica", _data_args(), tls=tls)]
        self.sentinels = []
        for i in range(sentinels):
            port = free_port()
            conf = (f"port {port}\nbind 127.0.0.1\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.data[0].port} {min(2, sentinels)}\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                    f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                    f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                    f"requirepass {self.SENTINEL_PASSWORD}\n"
                    f"sentinel sentinel-pass {self.SENTINEL_PASSWORD}\n")
            self.sentinels.append(Node(workdir / f"sentinel{i}", [], port=port, conf=conf,
                                       password=self.SENTINEL_PASSWORD, tls=tls))

    @property
    def url(self) -> str:
        hosts = ",".join(s.address for s in self.sentinels)
        return (f"{'rediss' if self.tls else 'redis'}+sentinel://{ACL_USER}:{ACL_PASSWORD}@{hosts}/{MASTER_NAME}/0"
                f"?sentinel_password={self.SENTINEL_PASSWORD}")

    # Replication and the sentinels use the default user (no password); the
    # queue, as the ACL user only.
    def _acl(self, client) -> None:
        create_acl_user(client, self.PREFIX)

    def start(self) -> "SentinelSet":
        master, replica = self.data
        master.start()
        self._acl(master.client())
        replica.args = _data_args() + ["--replicaof", "127.0.0.1", str(master.port)]
        replica.start()
        self._acl(replica.client())
        for s in self.sentinels:
            s.start()
        self.wait_formed()
        return self

    def stop(self) -> None:
        for n in self.sentinels + self.data:
            n.kill()

    def master_port(self) -> int:
        host, port = self.sentinels[0].client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return int(port)

    def master(self) -> Node:
        port = self.master_port()
        return next(n for n in self.data if n.port == port)

    def replica(self) -> Node:
        port = self.master_port()
        return next(n for n in self.data if n.port != port)

    def wait_formed(self, strict: bool = True) -> None:
        """Every sentinel agrees on the master and sees the other two; the replica is in sync.

        ``strict``: each sentinel also sees the replica's link up (at the start;
        after a failover the sentinels notice that only at their next 10 s INFO).
        """
        def formed():
            ports = set()
            for s in self.sentinels:
                c = s.client()
                ports.add(int(c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)[1]))
                if len(c.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)) != len(self.sentinels) - 1:
                    return False
                reps = [_fields(r) for r in c.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)]
                ok = [r for r in reps if "s_down" not in str(r.get("flags", ""))
                      and r.get("master-link-status") == "ok"]
                if strict and len(ok) != 1:
                    return False
            if len(ports) != 1:
                return False
            port = ports.pop()
            master = next(n for n in self.data if n.port == port)
            other = next(n for n in self.data if n.port != port)
            return (master.client().info("replication")["role"] == "master"
                    and other.client().info("replication").get("master_link_status") == "up")
        _wait(formed, FORM_TIMEOUT, "the sentinels to agree on a master with a replica in sync")

    def client(self) -> redis.Redis:
        """The current master, as the default user (for the test's own looking)."""
        return self.master().client()

    def _agreed_master(self) -> int | None:
        ports = {int(s.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)[1])
                 for s in self.sentinels}
        return ports.pop() if len(ports) == 1 else None

    def failover(self) -> None:
        """SENTINEL FAILOVER; returns once every sentinel names the promoted replica (which then
        takes writes).  The old master is made a replica by the sentinels some seconds later."""
        self.wait_formed(strict=False)
        old = self.master_port()
        self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        _wait(lambda: self._agreed_master() not in (None, old), FORM_TIMEOUT, "the sentinels to promote the replica")

    def kill_master(self) -> None:
        self.wait_formed(strict=False)
        old = self.master()
        old.kill(signal.SIGKILL)
        _wait(lambda: all(int(s.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                                          MASTER_NAME)[1]) != old.port for s in self.sentinels),
              FORM_TIMEOUT, "the sentinels to promote the replica after the master's death")
        # Back empty (no persistence) as the new master's replica, as the sentinels would make it.
        old.args = _data_args() + ["--replicaof", "127.0.0.1", str(self.master_port())]
        old.start()
        self._acl(old.client())
        self.wait_formed(strict=False)


def start_or_fail(topology, what: str):
    import pytest

    try:
        return topology.start()
    except AssertionError as exc:
        logs = "\n".join(f"--- port {n.port}\n{n.log()}" for n in getattr(topology, "nodes", [])
                         + getattr(topology, "data", []) + getattr(topology, "sentinels", []))
        topology.stop()
        pytest.fail(f"the {what} did not form: {exc}\n{logs}")
