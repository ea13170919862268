"""The Redis side of the queue: every atomic step as a Lua script or one command.

The invariant that makes "no job is lost" hold: a payload is always in exactly
one of image:jobs, a worker's in-flight list, image:retry (with its due time in
the retry schedule), image:done or image:failed, and every move between two of
them is a single atomic Redis step:

    take        BLMOVE  jobs -> inflight                       (FIFO: left end)
    finish      FINISH  inflight -> done | failed | retry+schedule
    promote     PROMOTE retry+schedule -> jobs (head)          when due
    recover     RECOVER dead worker's inflight -> jobs (head) | failed (poison pill)
    release     RELEASE own inflight -> jobs (head), deregister     on shutdown
    requeue     REQUEUE one orphan of own inflight -> jobs (head)

Each script first removes the payload from where it is (LREM) and only moves it
on when that removal happened.  That makes every step safe to repeat after a
lost reply, and settles races: when a worker thought dead finishes a job that
was already recovered, its FINISH finds nothing to remove and records nothing,
so the job is recorded once, by whoever runs the recovered copy.

Due times use the Redis server's clock (TIME), so workers on machines whose
clocks disagree still agree on when a retry is due.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

import redis

from .. import __version__
from .connection import direct_client
from .defaults import DEFAULT_DONE_CAP, MAX_PAYLOAD_BYTES, PROMOTE_BATCH, REPLICA_ACK_TIMEOUT_MS
from .keys import Keys, valid_worker_id

log = logging.getLogger("imgtool")

# Register or refresh: the heartbeat hash with its TTL, and the registry entry,
# in one step (a script rather than MULTI/EXEC: it needs no +@transaction and
# runs the same on a Cluster).
# KEYS: heartbeat, workers   ARGV: worker id, ttl_ms, field1, value1, ...
_BEAT = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: inflight, dest, recoveries, schedule
# ARGV: payload, entry, cap (0: none), digest, delay_ms, schedule_id ('' unless a retry)
_FINISH = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
local cap = tonumber(ARGV[3])
if cap > 0 then
  redis.call('LTRIM', KEYS[2], -cap, -1)
end
redis.call('HDEL', KEYS[3], ARGV[4])
if ARGV[6] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), ARGV[6] .. '|' .. ARGV[2])
end
return 1
"""

# Due retries go to the head of image:jobs: they have waited their backoff
# already and are older than anything pending, so putting them behind a long
# backlog would stretch a 1 s backoff into however long the backlog takes.
# They cannot starve new jobs: each pass costs a retry, and retries are capped.
# KEYS: schedule, retry, jobs   ARGV: batch
_PROMOTE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved = 0
for i = #due, 1, -1 do
  local member = due[i]
  redis.call('ZREM', KEYS[1], member)
  local bar = string.find(member, '|', 1, true)
  if bar then
    local payload = string.sub(member, bar + 1)
    -- an entry removed from image:retry by hand stays removed
    if redis.call('LREM', KEYS[2], 1, payload) == 1 then
      redis.call('LPUSH', KEYS[3], payload)
      moved = moved + 1
    end
  end
end
return moved
"""

# Gives a due time (now) to every image:retry entry that has none: pushed by
# hand, or left by the old worker.  Multiset difference of the list and the
# schedule's payloads.
# KEYS: schedule, retry
_SWEEP = """
local have = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local bar = string.find(member, '|', 1, true)
  if bar then
    local p = string.sub(member, bar + 1)
    have[p] = (have[p] or 0) + 1
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = 0
for i, payload in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if (have[payload] or 0) > 0 then
    have[payload] = have[payload] - 1
  else
    redis.call('ZADD', KEYS[1], now, 'sweep' .. t[1] .. t[2] .. ':' .. i .. '|' .. payload)
    added = added + 1
  end
end
return added
"""

# One job of a dead worker: back to the head of image:jobs, or to image:failed
# when it has now been recovered more than max times (it kills its workers).
# Returns -1 when the worker turned out alive, 0 when the job was no longer
# there, 1 requeued, 2 failed.
# KEYS: heartbeat, inflight, jobs, failed, recoveries
# ARGV: payload, digest, max_recoveries, failed_entry
_RECOVER = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
if redis.call('LREM', KEYS[2], -1, ARGV[1]) == 0 then
  return 0
end
local n = redis.call('HINCRBY', KEYS[5], ARGV[2], 1)
if n > tonumber(ARGV[3]) then
  redis.call('HDEL', KEYS[5], ARGV[2])
  redis.call('RPUSH', KEYS[4], ARGV[4])
  return 2
end
redis.call('LPUSH', KEYS[3], ARGV[1])
return 1
"""

# Forget a dead worker whose in-flight list is empty.
# KEYS: heartbeat, inflight, workers   ARGV: worker id
_REAP = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('LLEN', KEYS[2]) > 0 then
  return 0
end
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""

# Own shutdown: every in-flight job back to the head of image:jobs in its
# order, then deregister.
# KEYS: inflight, jobs, heartbeat, workers   ARGV: worker id
_RELEASE = """
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do
  n = n + 1
end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
return n
"""

# One payload of our own in-flight list that no thread holds (a BLMOVE whose
# reply was lost): back to the head of image:jobs.
# KEYS: inflight, jobs   ARGV: payload
_REQUEUE = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
"""


def digest(payload: bytes) -> str:
    """The poison-pill counter's field for a payload."""
    return hashlib.sha1(payload).hexdigest()


def new_worker_id() -> str:
    """``host:pid:random``: unique, and readable in `imgtool status`."""
    host = "".join(c if c.isascii() and (c.isalnum() or c in ".-") else "-" for c in socket.gethostname())
    host = host.lstrip(".-")[:60] or "host"
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerInfo:
    worker_id: str
    alive: bool
    in_flight: int
    fields: dict


class Protocol:
    """The queue's Redis operations for one prefix, on one client."""

    def __init__(self, client: redis.Redis, keys: Keys, done_cap: int = DEFAULT_DONE_CAP):
        self.r = client
        self.keys = keys
        self.done_cap = done_cap
        self._acks_short = False  # the last WAIT of --min-replicas-ack saw too few replicas
        self._beat = client.register_script(_BEAT)
        self._finish = client.register_script(_FINISH)
        self._promote = client.register_script(_PROMOTE)
        self._sweep = client.register_script(_SWEEP)
        self._recover = client.register_script(_RECOVER)
        self._reap = client.register_script(_REAP)
        self._release = client.register_script(_RELEASE)
        self._requeue = client.register_script(_REQUEUE)

    # -- a worker's life

    def beat(self, worker_id: str, ttl_ms: int, fields: dict) -> None:
        """Register or refresh: the heartbeat hash with its TTL, and the registry entry.

        Re-adding to the registry every time matters: a worker that could not
        beat for a whole TTL may have been reaped, and it takes jobs again."""
        flat = [x for k, v in fields.items() for x in (str(k), str(v))]
        self._beat(keys=[self.keys.heartbeat(worker_id), self.keys.workers], args=[worker_id, ttl_ms, *flat])

    def release(self, worker_id: str) -> int:
        """Put every in-flight job back on image:jobs and deregister; returns how many."""
        k = self.keys
        return int(self._release(keys=[k.inflight(worker_id), k.jobs, k.heartbeat(worker_id), k.workers],
                                 args=[worker_id]))

    # -- jobs

    def take(self, worker_id: str, timeout: float) -> bytes | None:
        """The oldest pending job, moved into our in-flight list; None after ``timeout``."""
        return self.r.blmove(self.keys.jobs, self.keys.inflight(worker_id), timeout, "LEFT", "RIGHT")

    def finish(self, worker_id: str, payload: bytes, dest: str, entry: bytes,
               retry_delay_ms: int | None = None, min_acks: int = 0) -> bool:
        """Record a result and drop the job from our in-flight list, in one step.

        ``dest`` is "done", "failed" or "retry" (then ``entry`` is the retried
        job and it is due ``retry_delay_ms`` from now).  False when the job was
        no longer in flight here (recovered by another worker): nothing recorded.

        ``min_acks`` > 0 sends WAIT on the same connection after the script, so
        the call returns once that many replicas have the result (or after
        REPLICA_ACK_TIMEOUT_MS, with a warning): see --min-replicas-ack.
        """
        k = self.keys
        dest_key = {"done": k.done, "failed": k.failed, "retry": k.retry}[dest]
        cap = self.done_cap if dest == "done" else 0
        sched_id = uuid.uuid4().hex[:16] if dest == "retry" else ""
        keys = [k.inflight(worker_id), dest_key, k.recoveries, k.retry_schedule]
        args = [payload, entry, cap, digest(payload), int(retry_delay_ms or 0), sched_id]
        if min_acks <= 0:
            return bool(self._finish(keys=keys, args=args))
        # WAIT counts the writes of its own connection: one pipeline, one connection.
        pipe = direct_client(self.r, k.jobs).pipeline(transaction=False)
        self._finish(keys=keys, args=args, client=pipe)
        pipe.execute_command("WAIT", min_acks, REPLICA_ACK_TIMEOUT_MS)
        res, acked = pipe.execute()
        short = int(acked) < min_acks
        if short != self._acks_short:  # once per change, not once per job
            self._acks_short = short
            if short:
                log.warning("queue: only %d of %d replica(s) acknowledged a result within %d ms "
                            "(--min-replicas-ack); recording goes on without them", int(acked), min_acks,
                            REPLICA_ACK_TIMEOUT_MS)
            else:
                log.info("queue: %d replica(s) acknowledge results again", int(acked))
        return bool(res)

    def requeue_orphan(self, worker_id: str, payload: bytes) -> bool:
        return bool(self._requeue(keys=[self.keys.inflight(worker_id), self.keys.jobs], args=[payload]))

    def inflight(self, worker_id: str) -> list[bytes]:
        return self.r.lrange(self.keys.inflight(worker_id), 0, -1)

    # -- retries

    def promote_due(self, batch: int = PROMOTE_BATCH) -> int:
        k = self.keys
        return int(self._promote(keys=[k.retry_schedule, k.retry, k.jobs], args=[batch]))

    def sweep_retry(self) -> int:
        return int(self._sweep(keys=[self.keys.retry_schedule, self.keys.retry]))

    # -- recovery

    def dead_workers(self, except_id: str | None = None) -> list[str]:
        """Registered workers whose heartbeat has expired."""
        ids = []
        for raw in self.r.smembers(self.keys.workers):
            wid = raw.decode("utf-8", "replace")
            if wid == except_id:
                continue
            if not valid_worker_id(wid):
                log.warning("queue: ignoring malformed worker id %r in %s", wid, self.keys.workers)
                continue
            ids.append(wid)
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for wid in ids:
            pipe.exists(self.keys.heartbeat(wid))
        return [wid for wid, alive in zip(ids, pipe.execute()) if not alive]

    def recover(self, dead_id: str, max_recoveries: int, failed_entry_for) -> tuple[int, int]:
        """Put a dead worker's jobs back (last first, so they keep their order at the head).

        ``failed_entry_for(payload)`` builds the image:failed entry of a poison
        pill.  Returns (requeued, failed).  Stops if the worker comes back.
        """
        k = self.keys
        requeued = failed = 0
        for payload in reversed(self.inflight(dead_id)):
            res = int(self._recover(
                keys=[k.heartbeat(dead_id), k.inflight(dead_id), k.jobs, k.failed, k.recoveries],
                args=[payload, digest(payload), max_recoveries, failed_entry_for(payload)],
            ))
            if res == -1:
                return requeued, failed
            requeued += res == 1
            failed += res == 2
        self._reap(keys=[k.heartbeat(dead_id), k.inflight(dead_id), k.workers], args=[dead_id])
        return requeued, failed

    # -- looking

    def lengths(self) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        for key in self.keys.lists.values():
            pipe.llen(key)
        return dict(zip(self.keys.lists, pipe.execute()))

    def workers(self) -> list[WorkerInfo]:
        ids = sorted(w.decode("utf-8", "replace") for w in self.r.smembers(self.keys.workers))
        ids = [w for w in ids if valid_worker_id(w)]
        pipe = self.r.pipeline(transaction=False)
        for wid in ids:
            pipe.hgetall(self.keys.heartbeat(wid))
            pipe.llen(self.keys.inflight(wid))
        res = pipe.execute()
        out = []
        for i, wid in enumerate(ids):
            fields = {a.decode(): b.decode("utf-8", "replace") for a, b in res[2 * i].items()}
            out.append(WorkerInfo(wid, bool(fields), int(res[2 * i + 1]), fields))
        return out

    def scheduled_retries(self) -> int:
        return int(self.r.zcard(self.keys.retry_schedule))

    def overview(self) -> dict:
        """What the metrics read each tick, in one round trip and one more per worker list.

        ``oldest_timestamp_ms`` is the head job's ``timestamp`` (None when the
        queue is empty or the head is not a job with one); ``live``/``dead``
        count registered workers with and without a heartbeat; ``in_flight``
        sums every worker's in-flight list.
        """
        k = self.keys
        pipe = self.r.pipeline(transaction=False)
        pipe.lindex(k.jobs, 0)
        pipe.zcard(k.retry_schedule)
        pipe.smembers(k.workers)
        head, scheduled, members = pipe.execute()
        ids = [w for w in (m.decode("utf-8", "replace") for m in members) if valid_worker_id(w)]
        live = dead = in_flight = 0
        if ids:
            pipe = self.r.pipeline(transaction=False)
            for wid in ids:
                pipe.exists(k.heartbeat(wid))
                pipe.llen(k.inflight(wid))
            res = pipe.execute()
            for i in range(len(ids)):
                if res[2 * i]:
                    live += 1
                else:
                    dead += 1
                in_flight += int(res[2 * i + 1])
        return {"oldest_timestamp_ms": job_timestamp_ms(head), "retry_scheduled": int(scheduled),
                "live": live, "dead": dead, "in_flight": in_flight}


def job_timestamp_ms(payload: bytes | None) -> float | None:
    """A job's ``timestamp`` (ms since the epoch) if it has a usable one, else None."""
    if not payload or len(payload) > MAX_PAYLOAD_BYTES:
        return None
    import json

    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    ts = data.get("timestamp") if isinstance(data, dict) else None
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 < ts < 1e15:
        return None
    return float(ts)


def worker_fields(state: str, concurrency: int, backend: str, started: float) -> dict:
    """What a worker's heartbeat hash says about it (read by ``imgtool status``)."""
    return {
        "state": state,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "concurrency": concurrency,
        "backend": backend,
        "started": int(started * 1000),
        "beat": int(time.time() * 1000),
        "version": __version__,
    }
