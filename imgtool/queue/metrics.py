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

What operators of Sidekiq, BullMQ and rq exporters look at first (these names
are fixed: dashboards rely on them), read every housekeeping tick:

- ``imgtool_queue_oldest_job_age_seconds``: now minus the head job's ``timestamp``
  (0 when image:jobs is empty or its head has no usable timestamp);
- ``imgtool_queue_job_wait_seconds``: histogram of take time minus ``timestamp``;
- ``imgtool_queue_retry_scheduled``: entries of the retry schedule;
- ``imgtool_queue_workers{state="live"|"dead"}``: registered workers with and
  without a heartbeat (dead ones await recovery);
- ``imgtool_queue_in_flight_total``: jobs in flight on all workers;
- ``imgtool_build_info{version,backend}``: 1;
- the standard ``process_*`` metrics (CPU seconds, resident memory, open files...).
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client import generate_latest

from prometheus_client import ProcessCollector

from .. import __version__
from .defaults import JOB_DURATION_BUCKETS, JOB_WAIT_BUCKETS, LOOP_STALL_TIMEOUT

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
        # A gauge per state (1 for the current one) labelled ``state``, as dashboards
        # expect: prometheus_client's Enum would name the label after the metric.
        self.state = Gauge("imgtool_queue_worker_state", "The worker's state: 1 for the current one.",
                           ["state"], registry=r)
        for name in STATES:
            self.state.labels(name).set(0)
        self.redis_up = Gauge("imgtool_queue_redis_up", "1 while Redis answers.", registry=r)
        self.backend = Info("imgtool_queue_backend", "The image backend in use.", registry=r)
        self.oldest_age = Gauge("imgtool_queue_oldest_job_age_seconds",
                                "Seconds since the timestamp of the job at the head of the queue.", registry=r)
        self.wait = Histogram("imgtool_queue_job_wait_seconds",
                              "Time from a job's timestamp to its take by a worker.",
                              buckets=JOB_WAIT_BUCKETS, registry=r)
        self.retry_scheduled = Gauge("imgtool_queue_retry_scheduled", "Retries waiting for their due time.",
                                     registry=r)
        self.workers = Gauge("imgtool_queue_workers", "Registered workers, live or dead (awaiting recovery).",
                             ["state"], registry=r)
        self.in_flight_total = Gauge("imgtool_queue_in_flight_total", "Jobs in flight on all workers.",
                                     registry=r)
        self.build = Gauge("imgtool_build_info", "imgtool's version and the backend in use.",
                           ["version", "backend"], registry=r)
        ProcessCollector(registry=r)
        self._oldest_ms: float | None = None
        self.oldest_age.set_function(self._oldest_age)
        for state in ("live", "dead"):
            self.workers.labels(state)
        for result in RESULTS:
            self.jobs.labels(result)
            self.duration.labels(result)
        for result in ("requeued", "poison"):
            self.recoveries.labels(result)
        self.redis_up.set(1)

    def bind(self, worker) -> None:
        self.in_flight.set_function(lambda: worker.in_flight)
        self.backend.info({"backend": worker.pipeline.backend_name, "worker": worker.id})
        self.build.labels(__version__, worker.pipeline.backend_name).set(1)

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

    def job_waited(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def set_overview(self, overview: dict) -> None:
        self._oldest_ms = overview["oldest_timestamp_ms"]
        self.retry_scheduled.set(overview["retry_scheduled"])
        self.workers.labels("live").set(overview["live"])
        self.workers.labels("dead").set(overview["dead"])
        self.in_flight_total.set(overview["in_flight"])

    def _oldest_age(self) -> float:
        # Computed when scraped, so the age grows between ticks as it does in truth.
        ts = self._oldest_ms
        return 0.0 if ts is None else max(0.0, time.time() - ts / 1000)

    def set_state(self, state: str) -> None:
        for name in STATES:
            self.state.labels(name).set(1 if name == state else 0)

    def set_redis_up(self, up: bool) -> None:
        self.redis_up.set(1 if up else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """/metrics (Prometheus text) and /healthz on a port, in a daemon thread.

    /healthz is 200 while the worker's Redis commands succeed and the take
    loop has gone round recently, else 503 with the reason (queue/health.py).
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


def health_check_for(worker):
    """The /healthz check of ``worker``: its Redis work succeeds (queue/health.py) and its take loop is alive."""

    def check() -> tuple[bool, str]:
        stalled = time.monotonic() - worker.last_loop
        if worker.state.value == "stopped":
            return False, "stopped"
        ok, reason = worker.health.verdict()
        if not ok:
            return False, reason
        if stalled > LOOP_STALL_TIMEOUT:
            return False, f"take loop stalled for {stalled:.0f} s"
        return True, f"{reason} ({worker.state.value})" if reason != "ok" else f"ok ({worker.state.value})"

    return check
