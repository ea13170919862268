"""The queue worker: takes jobs, runs them through the pipeline, records results, never loses one.

Threads of one worker process:

- the main thread takes jobs (BLMOVE into the in-flight list) while the
  pipeline's pool has a worker free, and handles signals (pipeline.Signals:
  the first drains, the second puts unfinished jobs back at once);
- the pool's ``workers`` threads run jobs through the one Pipeline (one
  backend, so one GPU dispatcher) and record each result with one atomic script;
- a housekeeping thread beats the heartbeat, moves due retries back, recovers
  dead workers' jobs and reads the queue depths for the metrics.

States: starting (until registered) -> idle <-> busy -> draining -> stopped.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from dataclasses import dataclass, field

import redis

from ..errors import ImgtoolError
from ..ops import Settings
from ..pipeline import Interrupted, Pipeline, Signals, Task
from . import jobs as jobs_mod
from .connection import (CONNECTION_ERRORS, REDIS_ERRORS, Target, backoff_delay, check_prefix, connect,
                         follow_master, parse_target)
from .defaults import (
    DEFAULT_DONE_CAP,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEARTBEAT_TTL,
    DEFAULT_MAX_RECOVERIES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BASE,
    DEFAULT_RETRY_CAP,
    DEFAULT_WORKERS,
    HEARTBEATS_PER_TTL,
    HOUSEKEEPING_INTERVAL,
    SENTINEL_CHECK_INTERVAL,
    STATE_WRITE_MIN_INTERVAL,
    MAX_PAYLOAD_BYTES,
    PROMOTE_BATCH,
    RETRY_SWEEP_INTERVAL,
    TAKE_TIMEOUT,
    THREAD_STOP_GRACE,
)
from .jobs import AllowRoots
from .health import Health
from .keys import Keys
from .protocol import Protocol, new_worker_id, worker_fields

log = logging.getLogger("imgtool")


class State(str, enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker behaves; every default comes from queue/defaults.py."""

    workers: int = DEFAULT_WORKERS
    keys: Keys = field(default_factory=Keys)
    max_retries: int = DEFAULT_MAX_RETRIES
    max_recoveries: int = DEFAULT_MAX_RECOVERIES
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    heartbeat_ttl: float = DEFAULT_HEARTBEAT_TTL
    retry_base: float = DEFAULT_RETRY_BASE
    retry_cap: float = DEFAULT_RETRY_CAP
    done_cap: int = DEFAULT_DONE_CAP
    max_payload: int = MAX_PAYLOAD_BYTES
    # WAIT for this many replicas after each recorded result (0: do not wait).
    min_replicas_ack: int = 0
    worker_id: str = field(default_factory=new_worker_id)

    @property
    def beat_interval(self) -> float:
        return self.heartbeat_ttl / HEARTBEATS_PER_TTL


class _Unexpected(ImgtoolError):
    """A bug met while running a job: retried like a transient error, so a
    deterministic one ends in image:failed after --max-retries, never loops."""

    retryable = True
    code = "internal_error"


class Worker:
    def __init__(self, target: Target | str, config: WorkerConfig, settings: Settings, pipeline: Pipeline,
                 roots: AllowRoots, metrics=None):
        self.target = parse_target(target) if isinstance(target, str) else target
        check_prefix(self.target, config.keys)  # a redis+cluster:// URL: refused before connecting
        self.config = config
        self.id = config.worker_id
        self.settings = settings
        self.pipeline = pipeline
        self.roots = roots
        self.metrics = metrics
        self.keys = config.keys
        self.client = None  # connected by _register (a plain URL may turn out to be a cluster node)
        self.proto: Protocol | None = None
        self.health = Health(self.target, on_change=metrics.set_redis_up if metrics else None)
        self.started = time.time()
        self.state = State.STARTING
        self.last_loop = time.monotonic()  # read by /healthz

        self._in_hand: collections.Counter[bytes] = collections.Counter()
        self._hand_lock = threading.Condition()
        self._draining = threading.Event()
        self._hard_stop = threading.Event()  # second signal or drain timeout: stop waiting
        self._abandon = threading.Event()  # job threads stop trying to record
        self._hk_stop = threading.Event()
        self._signals: Signals | None = None
        # A take may move a job up to take_timeout after it is sent; it must land
        # while our heartbeat still exists, or a recovering worker could reap us
        # (drop us from the registry) just before, leaving that job in a list
        # nobody would ever recover.  So: never take with a heartbeat older than
        # half its TTL (beat first), and never block longer than a quarter of it.
        self._take_timeout = min(TAKE_TIMEOUT, config.heartbeat_ttl / 4)
        self._last_beat = -float("inf")  # monotonic time the last successful beat was sent
        self._state_changed = threading.Event()  # the housekeeping thread writes the new state

    # ------------------------------------------------------------------ life

    def run(self) -> None:
        """Serve until a signal."""
        signals = Signals(self.pipeline.pool, grace=self.config.drain_timeout,
                          on_drain=self._on_drain, on_abort=self._on_abort)
        self._signals = signals
        with signals:
            self._set_state(State.STARTING)
            if not self.roots:
                log.warning("queue: no --allow-root given: jobs may read and write anywhere this "
                            "worker can (set --allow-root or %s)", jobs_mod.ALLOW_ROOTS_ENV)
            if not self._register():
                return
            try:
                self._start_threads()
                log.info("queue: worker %s taking jobs from %s at %s (%s, %d at once, backend %s)",
                         self.id, self.keys.jobs, self.target.redacted, self.target.kind,
                         self.config.workers, self.pipeline.backend_name)
                self._take_loop()
                self._drain()
            finally:
                self._shutdown()

    def _on_drain(self, name: str) -> None:
        log.info("queue: %s: draining (finishing %d in-flight job(s), up to %g s); "
                 "send it again to put them back at once", name, self.in_flight,
                 self.config.drain_timeout)
        self._draining.set()

    def _on_abort(self, name: str) -> None:
        log.info("queue: %s again: putting unfinished jobs back now", name)
        self._hard_stop.set()
        self._draining.set()

    def _beat(self) -> None:
        sent = time.monotonic()
        self.proto.beat(self.id, self._ttl_ms(), self._fields())
        self._last_beat = max(self._last_beat, sent)

    def _connect(self) -> None:
        """The client and the protocol, once; a plain URL of a cluster node becomes a cluster client.

        Raises RedisSetupError (a user's error: the command exits) for a
        cluster with a prefix without a hash tag, or a sentinel given as a server.
        """
        if self.proto is not None:
            return
        client, target = connect(self.target)
        check_prefix(target, self.keys)
        self.client, self.target = client, target
        self.health.target = target
        self.proto = Protocol(client, self.keys, self.config.done_cap)

    def _register(self) -> bool:
        attempt = 0
        while not self._draining.is_set():
            try:
                self._connect()
                self._beat()
                self.health.ok("take")
                return True
            except REDIS_ERRORS as exc:
                self.health.failed(exc, "take")
            self.health.pause(attempt, self._draining)
            attempt += 1
            self.last_loop = time.monotonic()
        return False

    def _start_threads(self) -> None:
        self._set_state(State.IDLE)
        self._hk = threading.Thread(target=self._housekeeping, name="imgtool-housekeeping", daemon=True)
        self._hk.start()

    # ------------------------------------------------------------------ taking

    def _take_loop(self) -> None:
        attempt = 0
        reconcile = True
        next_reconcile = next_follow = 0.0
        pool = self.pipeline.pool
        while not self._draining.is_set():
            self.last_loop = time.monotonic()
            slot = pool.acquire(timeout=TAKE_TIMEOUT, upto=self.config.workers)
            if slot is None:
                continue
            payload = None
            try:
                if time.monotonic() - self._last_beat > self.config.heartbeat_ttl / 2:
                    self._beat()
                if self.target.kind == "sentinel" and time.monotonic() >= next_follow:
                    # After SENTINEL FAILOVER the old master takes writes until the
                    # sentinels demote it, seconds later: what is recorded there then
                    # is lost (the job runs again).  Asking often keeps that short.
                    follow_master(self.client)
                    next_follow = time.monotonic() + SENTINEL_CHECK_INTERVAL
                if reconcile or time.monotonic() >= next_reconcile:
                    self._reconcile()
                    reconcile = False
                    next_reconcile = time.monotonic() + self.config.beat_interval
                payload = self.proto.take(self.id, self._take_timeout)
                taken_at = time.time()
                self.health.ok("take")
                attempt = 0
            except REDIS_ERRORS as exc:
                # Unreachable, refused, redirected, TRYAGAIN during a reshard, a
                # failover under way: health names it (once) and /healthz tells.
                self.health.failed(exc, "take")
                reconcile = True  # a take whose reply was lost may have moved a job
            if payload is None:
                slot.release()
                if reconcile:
                    self.health.pause(attempt, self._draining)
                    attempt += 1
                continue
            with self._hand_lock:
                self._in_hand[payload] += 1
                self._set_state(State.BUSY)
            pool.submit(lambda payload=payload, taken_at=taken_at: self._run_job(payload, taken_at), slot)

    def _reconcile(self) -> None:
        """Put back jobs in our in-flight list that no thread holds.

        Only this thread adds to ``_in_hand``, and job threads remove a payload
        only after its result is recorded, so a payload in the list but not in
        the snapshot taken before reading the list is an orphan.
        """
        with self._hand_lock:
            held = collections.Counter(self._in_hand)
        for payload in self.proto.inflight(self.id):
            if held[payload] > 0:
                held[payload] -= 1
            elif self.proto.requeue_orphan(self.id, payload):
                log.info("queue: put back a job this worker had taken without knowing it")

    @property
    def in_flight(self) -> int:
        with self._hand_lock:
            return sum(self._in_hand.values())

    # ------------------------------------------------------------------ jobs

    def _run_job(self, payload: bytes, taken_at: float | None = None) -> None:
        """One job, in the pool: run it, record its result, hand it back."""
        try:
            self._handle(payload, taken_at)
        except Interrupted:
            pass  # shutting down: the job stays in flight and is released
        except Exception as exc:  # noqa: BLE001 - a bug here must not lose the job or the thread
            log.exception("queue: unexpected error handling a job")
            self._record_internal_error(payload, exc)
        finally:
            with self._hand_lock:
                self._in_hand[payload] -= 1
                if self._in_hand[payload] <= 0:
                    del self._in_hand[payload]
                if not self._in_hand and self.state == State.BUSY:
                    self._set_state(State.IDLE)
                self._hand_lock.notify_all()

    def _handle(self, payload: bytes, taken_at: float | None = None) -> None:
        start = time.perf_counter()
        try:
            job = jobs_mod.parse(payload, self.settings, self.roots, self.config.max_payload)
        except ImgtoolError as exc:
            data = jobs_mod.try_load(payload, self.config.max_payload)
            self._observe_wait(data, taken_at)
            label = _job_label(data)
            log.warning("queue: invalid job %s: %s", label, exc)
            entry = jobs_mod.failed_entry(payload, data, exc, self.id)
            if self._record(payload, "failed", entry) and self.metrics:
                self.metrics.job_failed(_ops_of(data), exc.code, time.perf_counter() - start)
            return
        self._observe_wait(job.data, taken_at)
        try:
            result = self.pipeline.process(
                Task(job.src, job.out_dir, job_id=job.job_id, settings=job.settings), force=True)
            error = result.error if result.status != "done" else None
        except Exception as exc:  # a bug below us; see _Unexpected
            log.exception("queue: job %s: unexpected error", job.job_id)
            result, error = None, _Unexpected(f"{type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - start
        if error is None:
            names = {op: p for op, p in job.output_paths().items() if op in result.outputs}
            entry = jobs_mod.done_entry(job, names, result.duration_ms, self.id, result.details())
            if self._record(payload, "done", entry):
                log.info("queue: done %s (%d output(s), %.0f ms)", job.job_id, len(names), result.duration_ms)
                if self.metrics:
                    self.metrics.job_done(job.operations, seconds)
        elif error.retryable and job.retry_count < self.config.max_retries:
            delay = backoff_delay(job.retry_count, self.config.retry_base, self.config.retry_cap)
            entry = jobs_mod.retry_payload(job)
            if self._record(payload, "retry", entry, retry_delay_ms=int(delay * 1000)):
                log.info("queue: retry %d of %s in %.1f s: %s", job.retry_count + 1, job.job_id, delay, error)
                if self.metrics:
                    self.metrics.job_retried(job.operations, error.code, seconds)
        else:
            entry = jobs_mod.failed_entry(payload, job.data, error, self.id, job.retry_count)
            if self._record(payload, "failed", entry):
                log.warning("queue: failed %s after %d retr%s: %s", job.job_id, job.retry_count,
                            "y" if job.retry_count == 1 else "ies", error)
                if self.metrics:
                    self.metrics.job_failed(job.operations, error.code, seconds)

    def _observe_wait(self, data, taken_at: float | None) -> None:
        if self.metrics is None or taken_at is None or not isinstance(data, dict):
            return
        ts = data.get("timestamp")
        if isinstance(ts, (int, float)) and not isinstance(ts, bool) and 0 < ts < 1e15:
            self.metrics.job_waited(max(0.0, taken_at - ts / 1000))

    def _record_internal_error(self, payload: bytes, exc: Exception) -> None:
        """Send a job whose handling crashed to image:failed, so it cannot loop."""
        try:
            err = {"type": _Unexpected.code, "message": f"{type(exc).__name__}: {exc}"}
            entry = jobs_mod.failed_entry(payload, None, err, self.id)
            if self._record(payload, "failed", entry) and self.metrics:
                self.metrics.job_failed((), _Unexpected.code, 0.0)
        except Exception:  # noqa: BLE001 - leave it in flight; a restart recovers it
            log.exception("queue: cannot record the failure either; the job stays in flight")

    def _record(self, payload: bytes, dest: str, entry: bytes, retry_delay_ms: int | None = None) -> bool:
        """Record a result, retrying through Redis outages.  True when it was recorded here.

        Gives up only when the worker is stopping for good: the job then stays
        in our in-flight list, and is put back by the release or, if Redis is
        still down, by whoever recovers this worker.
        """
        attempt = 0
        unsure = False  # an earlier try may have run without our hearing back
        while True:
            try:
                done = self.proto.finish(self.id, payload, dest, entry, retry_delay_ms,
                                         self.config.min_replicas_ack)
                self.health.ok("record")
                if not done and not unsure:
                    log.info("queue: a job finished here was already put back by another worker; "
                             "its other run records it")
                return done or unsure
            except REDIS_ERRORS as exc:
                self.health.failed(exc, "record")
                # A lost reply (or a WAIT that failed after the script ran) may
                # hide a recorded result: a later "not in flight" is then ours.
                if isinstance(exc, CONNECTION_ERRORS) or self.config.min_replicas_ack:
                    unsure = True
            if self._abandon.is_set():
                return False
            self.health.pause(attempt, self._abandon)
            attempt += 1

    # ------------------------------------------------------------------ housekeeping

    def _housekeeping(self) -> None:
        """Beat, promote due retries, recover the dead, read the metrics; write a changed state at once.

        Wakes every tick and whenever the state changes, so `imgtool status`
        shows a state within a second of its change, not a heartbeat period
        later (at most one write per STATE_WRITE_MIN_INTERVAL).
        """
        interval = self.config.beat_interval
        tick = min(HOUSEKEEPING_INTERVAL, interval)
        next_beat = next_recovery = next_sweep = next_tick = 0.0
        attempt = 0
        while not self._hk_stop.is_set():
            try:
                if self._state_changed.is_set():
                    self._state_changed.clear()
                    next_beat = 0.0
                now = time.monotonic()
                if now >= next_beat:
                    self._beat()
                    next_beat = now + interval
                if now >= next_tick:
                    next_tick = now + tick
                    self._tick()
                    if now >= next_recovery and not self._draining.is_set():
                        self._recover_dead()
                        next_recovery = now + interval
                    if now >= next_sweep and not self._draining.is_set():
                        swept = self.proto.sweep_retry()
                        if swept:
                            log.info("queue: %d job(s) in %s had no due time; retrying them now",
                                     swept, self.keys.retry)
                        next_sweep = now + RETRY_SWEEP_INTERVAL
                self.health.ok("housekeeping")
                attempt = 0
            except REDIS_ERRORS as exc:
                self.health.failed(exc, "housekeeping")
                self.health.pause(attempt, self._hk_stop)
                attempt += 1
                next_beat = next_tick = 0.0
                continue
            except Exception:  # noqa: BLE001 - the heartbeat must go on
                log.exception("queue: housekeeping: unexpected error")
            if self._hk_stop.wait(STATE_WRITE_MIN_INTERVAL):
                break
            self._state_changed.wait(max(0.0, next_tick - time.monotonic()))

    def _tick(self) -> None:
        """Every second: follow a Sentinel failover, promote due retries, read the metrics."""
        follow_master(self.client)
        if not self._draining.is_set():
            while self.proto.promote_due() >= PROMOTE_BATCH:
                pass
        if self.metrics:
            self.metrics.set_depths(self.proto.lengths())
            self.metrics.set_overview(self.proto.overview())

    def _recover_dead(self) -> None:
        for dead in self.proto.dead_workers(except_id=self.id):
            def failed_entry_for(payload: bytes, dead=dead) -> bytes:
                data = jobs_mod.try_load(payload, self.config.max_payload)
                err = {"type": "poison_pill",
                       "message": f"in flight on a worker that died, more than "
                                  f"{self.config.max_recoveries} times (last: {dead}); not tried again"}
                return jobs_mod.failed_entry(payload, data, err, self.id)

            requeued, failed = self.proto.recover(dead, self.config.max_recoveries, failed_entry_for)
            if requeued or failed:
                log.warning("queue: worker %s is dead (no heartbeat): put back %d job(s)%s", dead, requeued,
                            f", {failed} poison pill(s) to {self.keys.failed}" if failed else "")
            if self.metrics:
                self.metrics.recovered(requeued, failed)

    # ------------------------------------------------------------------ stopping

    def _drain(self) -> None:
        """Let in-flight jobs finish: the pool's drain, within --drain-timeout of the signal."""
        self._set_state(State.DRAINING)
        finished = self.pipeline.pool.drain(on_wait=lambda: setattr(self, "last_loop", time.monotonic()))
        if not finished and not self._hard_stop.is_set():
            log.warning("queue: drain timeout (%g s): putting %d unfinished job(s) back",
                        self.config.drain_timeout, self.in_flight)

    def _shutdown(self) -> None:
        """Stop the threads, put back whatever is still in flight, deregister."""
        self._draining.set()
        self._hk_stop.set()
        self.pipeline.stop()
        self._abandon.set()
        if getattr(self, "_hk", None) is not None:
            self._hk.join(timeout=THREAD_STOP_GRACE + 2 * TAKE_TIMEOUT)
        deadline = time.monotonic() + max(self.config.drain_timeout, 1.0)
        attempt = 0
        while self.proto is not None:
            try:
                n = self.proto.release(self.id)
                if n:
                    log.info("queue: put %d unfinished job(s) back on %s", n, self.keys.jobs)
                break
            except REDIS_ERRORS as exc:
                if time.monotonic() >= deadline or (self._signals is not None and self._signals.count > 2):
                    log.warning("queue: cannot reach Redis to put unfinished jobs back (%s); they stay "
                                "in %s until another worker recovers them", exc, self.keys.inflight(self.id))
                    break
                self.health.failed(exc, "take")
                self.health.pause(attempt)
                attempt += 1
        busy = self.pipeline.pool.active > 0
        idle = self.in_flight == 0
        if idle:
            self.pipeline.close()
        self._set_state(State.STOPPED)
        log.info("queue: worker %s stopped%s", self.id, "" if idle or not busy else
                 " (jobs still running were put back)")

    # ------------------------------------------------------------------ helpers

    def _ttl_ms(self) -> int:
        return max(1, int(self.config.heartbeat_ttl * 1000))

    def _fields(self) -> dict:
        return worker_fields(self.state.value, self.config.workers, self.pipeline.backend_name,
                             self.started) | {"in_hand": self.in_flight}

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self._state_changed.set()
        self.state = state
        if self.metrics:
            self.metrics.set_state(state.value)


def _job_label(data) -> str:
    job_id = data.get("jobId") if isinstance(data, dict) else None
    return repr(job_id)[:80] if isinstance(job_id, str) else "(no jobId)"


def _ops_of(data) -> tuple[str, ...]:
    ops = data.get("operations") if isinstance(data, dict) else None
    if isinstance(ops, list) and ops and all(isinstance(o, str) for o in ops):
        from .. import ops as registry

        known = tuple(o for o in dict.fromkeys(ops) if registry.find(o) is not None)
        if known:
            return known
    return ()
