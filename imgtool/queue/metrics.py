"""Prometheus metrics of a queue worker, and the /metrics and /healthz endpoints (--metrics-port).

Metrics (own CollectorRegistry, so nothing of the process's default registry leaks in):

- ``imgtool_queue_jobs_total{result}``: jobs recorded by this worker, result
  ``done``, ``failed`` or ``retried``: each is one entry pushed to image:done,
  image:failed or image:retry, so over a worker's life they add up to what it
  pushed to those lists.
- ``imgtool_queue_operations_total{operation,result}``: the same, counted once
  per operation the job asked for (invalid jobs without usable operations are
  not counted here).
- ``imgtool_queue_failures_total{type}``: failed and retried jobs by error type.
- ``imgtool_queue_recovered_total{result}``: jobs of dead workers put back
  (``requeued``) or sent to image:failed as poison pills (``poison``).
- ``imgtool_queue_job_duration_seconds{result}``: histogram of the time from
  taking a job to having its result.
- ``imgtool_queue_depth{queue}``: LLEN of image:jobs, retry, done and failed,
  read every housekeeping tick.
- ``imgtool_queue_in_flight``: jobs this worker holds now.
- ``imgtool_queue_worker_state{state}``: 1 for the current state.
- ``imgtool_queue_redis_up``: 1 while Redis answers.
- ``imgtool_queue_backend_info{backend,worker}``: the backend in use.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Enum, Gauge, Histogram, Info
from prometheus_client import generate_latest

from .defaults import JOB_DURATION_BUCKETS, LOOP_STALL_TIMEOUT

log = logging.getLogger("imgtool")

STATES = ("starting", "idle", "busy", "draining", "stopped")
RESULTS = ("done", "failed", "retried")


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.jobs = Counter("imgtool_queue_jobs", "Jobs whose result this worker recorded.",
                            ["result"], registry=r)
        self.operations = Counter("imgtool_queue_operations",
                                  "Recorded jobs, once per operation they asked for.",
                                  ["operation", "result"], registry=r)
        self.failures = Counter("imgtool_queue_failures", "Failed or retried jobs by error type.",
                                ["type"], registry=r)
        self.recoveries = Counter("imgtool_queue_recovered",
                                  "Jobs of dead workers put back or sent to failed as poison pills.",
                                  ["result"], registry=r)
        self.duration = Histogram("imgtool_queue_job_duration_seconds",
                                  "Time from taking a job to having its result.", ["result"],
                                  buckets=JOB_DURATION_BUCKETS, registry=r)
        self.depth = Gauge("imgtool_queue_depth", "Length of each monitored list.", ["queue"], registry=r)
        self.in_flight = Gauge("imgtool_queue_in_flight", "Jobs this worker holds now.", registry=r)
        self.state = Enum("imgtool_queue_worker_state", "The worker's state.", states=list(STATES),
                          registry=r)
        self.redis_up = Gauge("imgtool_queue_redis_up", "1 while Redis answers.", registry=r)
        self.backend = Info("imgtool_queue_backend", "The image backend in use.", registry=r)
        for result in RESULTS:
            self.jobs.labels(result)
            self.duration.labels(result)
        for result in ("requeued", "poison"):
            self.recoveries.labels(result)
        self.redis_up.set(1)

    def bind(self, worker) -> None:
        self.in_flight.set_function(lambda: worker.in_flight)
        self.backend.info({"backend": worker.pipeline.backend_name, "worker": worker.id})

    def _count(self, result: str, operations, seconds: float) -> None:
        self.jobs.labels(result).inc()
        for op in operations:
            self.operations.labels(op, result).inc()
        self.duration.labels(result).observe(seconds)

    def job_done(self, operations, seconds: float) -> None:
        self._count("done", operations, seconds)

    def job_failed(self, operations, error_type: str, seconds: float) -> None:
        self._count("failed", operations, seconds)
        self.failures.labels(error_type).inc()

    def job_retried(self, operations, error_type: str, seconds: float) -> None:
        self._count("retried", operations, seconds)
        self.failures.labels(error_type).inc()

    def recovered(self, requeued: int, poison: int) -> None:
        if requeued:
            self.recoveries.labels("requeued").inc(requeued)
        if poison:
            self.recoveries.labels("poison").inc(poison)

    def set_depths(self, lengths: dict[str, int]) -> None:
        for name, n in lengths.items():
            self.depth.labels(name).set(n)

    def set_state(self, state: str) -> None:
        self.state.state(state)

    def set_redis_up(self, up: bool) -> None:
        self.redis_up.set(1 if up else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """/metrics (Prometheus text) and /healthz on a port, in a daemon thread.

    /healthz is 200 when a PING answers within its timeout and the take loop
    has gone round recently, else 503 with the reason.
    """

    def __init__(self, metrics: Metrics, health_check, host: str, port: int):
        self.metrics = metrics
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok, reason = health_check()
                    self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                log.debug("metrics: " + fmt, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="imgtool-metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def health_check_for(worker, ping_client):
    """The /healthz check of ``worker``: Redis answers a PING and the take loop is alive."""

    def check() -> tuple[bool, str]:
        stalled = time.monotonic() - worker.last_loop
        if worker.state.value == "stopped":
            return False, "stopped"
        if stalled > LOOP_STALL_TIMEOUT:
            return False, f"take loop stalled for {stalled:.0f} s"
        try:
            ping_client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            return False, f"redis unreachable: {exc}"
        return True, f"ok ({worker.state.value})"

    return check
