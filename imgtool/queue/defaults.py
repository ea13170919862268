"""Every default of the queue worker (timeouts, TTLs, caps, limits) as a named constant."""

from __future__ import annotations

# --- Where Redis is -------------------------------------------------------------
DEFAULT_REDIS_HOST = "localhost"
DEFAULT_REDIS_PORT = 6379
DEFAULT_REDIS_DB = 0
# Sentinels listen here unless a redis+sentinel:// URL says otherwise.
DEFAULT_SENTINEL_PORT = 26379
# Longest wait for a TCP connection to Redis before calling it down.
CONNECT_TIMEOUT = 5.0
# Longest wait for any reply, beyond the blocking time of BLMOVE: a frozen
# Redis is treated like a down one after this long.
SOCKET_TIMEOUT = 10.0

# --- Keys -------------------------------------------------------------------------
# The upload server pushes to "image:jobs"; every key shares this prefix.
DEFAULT_PREFIX = "image"

# --- The worker ---------------------------------------------------------------------
# Jobs processed at once by one worker process (threads sharing one backend).
DEFAULT_WORKERS = 4
# How long one BLMOVE waits for a job.  Short, so a drain signal or a dead
# worker's recovery is noticed within a second.
TAKE_TIMEOUT = 1.0
# On SIGTERM/SIGINT, how long in-flight jobs may run before they are put back.
DEFAULT_DRAIN_TIMEOUT = 30.0
# After the drain, how long worker threads get to notice the stop before the
# process exits without them (their jobs are already back on image:jobs).
THREAD_STOP_GRACE = 1.0

# --- Liveness and recovery ----------------------------------------------------------
# A worker's heartbeat key lives this long unless refreshed; a worker whose key
# is gone is dead, and its in-flight jobs are put back.  BullMQ's default lock
# duration is the same 30 s.
DEFAULT_HEARTBEAT_TTL = 30.0
# The heartbeat is refreshed (and dead workers looked for) this many times per TTL,
# so two missed beats in a row are still not a death.
HEARTBEATS_PER_TTL = 3
# A job found in a dead worker's in-flight list more than this many times is a
# poison pill (it kills its worker) and goes to image:failed.
DEFAULT_MAX_RECOVERIES = 3

# --- Results --------------------------------------------------------------------------
# image:done keeps the newest entries only (LTRIM).
DEFAULT_DONE_CAP = 10_000

# --- Retries ----------------------------------------------------------------------------
DEFAULT_MAX_RETRIES = 3
# Backoff before retry n (n = 0, 1, ...): uniform in [0, min(cap, base * 2**n)]
# seconds ("full jitter").
DEFAULT_RETRY_BASE = 1.0
DEFAULT_RETRY_CAP = 300.0
# The most due retries moved back to image:jobs in one step.
PROMOTE_BATCH = 100
# How often image:retry is compared with the retry schedule, so entries without
# a due time (pushed by hand, or left by the old worker) are retried too.
RETRY_SWEEP_INTERVAL = 300.0
# Housekeeping (due retries, queue depths) runs at least this often.
HOUSEKEEPING_INTERVAL = 1.0

# --- Jobs --------------------------------------------------------------------------------
# A job is a few hundred bytes; anything over this is refused unread.
MAX_PAYLOAD_BYTES = 1024 * 1024
# A payload that is not a JSON object is kept whole in its image:failed entry
# up to this many characters, and cut to them beyond.
FAILED_PAYLOAD_EXCERPT = 4096
# Longest inputPath or outputDir accepted (Linux's PATH_MAX).
MAX_PATH_LENGTH = 4096
# Environment variable with allowed roots, separated by os.pathsep.
ALLOW_ROOTS_ENV = "IMGTOOL_ALLOW_ROOTS"

# How many jobs one RPUSH of `imgtool enqueue` carries.
ENQUEUE_BATCH = 500

# --- Reconnecting -----------------------------------------------------------------------
# Backoff between reconnect attempts: full jitter, base doubling up to the cap.
# The cap is short so a failover (Sentinel's or a cluster replica's promotion)
# is followed within a couple of seconds of the new master answering.
RECONNECT_BASE = 0.1
RECONNECT_CAP = 2.0
# On Sentinel, the take loop asks the sentinels where the master is at most
# this often (redis-py asks only when it opens a connection).
SENTINEL_CHECK_INTERVAL = 0.5

# --- Metrics ---------------------------------------------------------------------------------
DEFAULT_METRICS_HOST = "0.0.0.0"
# /healthz answers 503 at once when Redis is unreachable or refuses the worker
# (authentication, permissions, a redirect it cannot follow), after this many
# seconds of a take loop failing for other reasons (TRYAGAIN, CLUSTERDOWN, a
# failover under way) ...
FAILING_GRACE = 3.0
# ... or when the take loop has not gone round for this long.
LOOP_STALL_TIMEOUT = 15.0
# --min-replicas-ack: how long one WAIT may block after a recorded result.
REPLICA_ACK_TIMEOUT_MS = 1000
# The heartbeat (the state `imgtool status` shows) is written at most this often
# when the state changes between beats.
STATE_WRITE_MIN_INTERVAL = 0.1
# imgtool_queue_job_wait_seconds: from a job's timestamp to its take.
JOB_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
JOB_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
