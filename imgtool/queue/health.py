"""Whether the worker can do its work, told truthfully: the state behind /healthz and its log lines.

Every Redis call of the worker reports here: ``ok()`` after a success,
``failed(exc)`` after an error.  Errors are sorted into the causes an operator
acts on differently:

==============  ==============================================================  =========
state           what it means                                                   /healthz
==============  ==============================================================  =========
ok              Redis answers and the worker's commands succeed                 200
unreachable     no connection (refused, reset, timed out, DNS, TLS handshake)  503 at once
auth            Redis refused the user name or password (WRONGPASS, NOAUTH)     503 at once
permission      the user may not run a command or touch a key (NOPERM)         503 at once
redirect        a cluster redirect (MOVED/ASK) the client cannot follow         503 at once
failing         any other error (TRYAGAIN, CLUSTERDOWN, READONLY, LOADING...)   503 after FAILING_GRACE
==============  ==============================================================  =========

Each change of state is logged once, naming the cause; the return to ``ok`` is
logged with how long it took.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from .connection import Target, pause
from .defaults import FAILING_GRACE

log = logging.getLogger("imgtool")

OK = "ok"
UNREACHABLE = "unreachable"
AUTH = "auth"
PERMISSION = "permission"
REDIRECT = "redirect"
FAILING = "failing"

# Refusals that no retry cures: unhealthy at once.
HARD = (UNREACHABLE, AUTH, PERMISSION, REDIRECT)


def classify(exc: BaseException, target: Target | None = None) -> tuple[str, str]:
    """(state, one line naming the cause) for an error of redis-py."""
    text = str(exc) or type(exc).__name__
    upper = text.upper()
    user = target.user if target is not None else "default"
    where = target.redacted if target is not None else "Redis"
    from redis.sentinel import MasterNotFoundError

    if isinstance(exc, MasterNotFoundError):
        return _no_master(text, target, where)
    if (isinstance(exc, redis.exceptions.AuthenticationError) or "WRONGPASS" in upper
            or "INVALID USERNAME-PASSWORD" in upper or "INVALID PASSWORD" in upper):
        return AUTH, f"Redis at {where} refused the password for user {user!r} ({text})"
    if "NOAUTH" in upper or "AUTHENTICATION REQUIRED" in upper:
        return AUTH, f"Redis at {where} wants a password and none was given ({text})"
    if isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in upper:
        return PERMISSION, (f"Redis user {user!r} lacks a permission the worker needs ({text}); "
                            f"grant the ACL in the README (imgtool.queue.acl)")
    if isinstance(exc, (redis.exceptions.MovedError, redis.exceptions.AskError)):
        text = f"{'MOVED' if isinstance(exc, redis.exceptions.MovedError) else 'ASK'} {text}"
    if isinstance(exc, (redis.exceptions.MovedError, redis.exceptions.AskError)) or _redirect_text(upper):
        return REDIRECT, (f"Redis at {where} redirected a command ({_redirect_excerpt(text)}) and this client "
                          f"cannot follow it: use redis+cluster://host:port,... (or let the worker run INFO "
                          f"to detect the cluster)")
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)) and not isinstance(
            exc, redis.exceptions.BusyLoadingError):
        return UNREACHABLE, f"cannot reach Redis at {where}: unreachable ({text})"
    if isinstance(exc, redis.exceptions.RedisClusterException) and "CANNOT BE CONNECTED" in upper:
        hint = ("; check --redis-ca, --redis-cert and --redis-key if the nodes refused the TLS handshake"
                if target is not None and target.ssl else "")
        return UNREACHABLE, f"cannot reach Redis at {where}: unreachable (no seed node answered: {text}{hint})"
    if isinstance(exc, redis.exceptions.ClusterError) and "TTL" in upper:
        return REDIRECT, f"Redis Cluster at {where}: too many redirects, the client could not follow them ({text})"
    return FAILING, f"Redis at {where} answered with an error ({text})"


def _no_master(text: str, target: Target | None, where: str) -> tuple[str, str]:
    """redis-py's MasterNotFoundError (a repr of every sentinel's client) as one line that says why."""
    import re

    name = target.master if target is not None and target.master else "?"
    kinds = re.findall(r" - (\w+):\w+", text)
    if kinds and all(k == "auth" for k in kinds):
        return AUTH, (f"the sentinels of {where} refused their password (give it as "
                      f"?sentinel_password=..., apart from the master's)")
    if kinds and all(k == "network" for k in kinds):
        # redis-py keeps only the kind of each sentinel's error, not why: on TLS, say what to check.
        why = ("; check --redis-ca, --redis-cert and --redis-key: the sentinels may have refused "
               "the TLS handshake") if target is not None and target.ssl else ""
        return UNREACHABLE, f"cannot reach Redis at {where}: unreachable (no sentinel answered{why})"
    why = ", ".join(sorted(set(kinds))) if kinds else "none of them knows it"
    return UNREACHABLE, (f"cannot reach Redis at {where}: unreachable (no sentinel named a master "
                         f"for {name!r}: {why})")


def _redirect_text(upper: str) -> bool:
    return upper.startswith(("MOVED ", "ASK ")) or " MOVED " in upper or ": MOVED" in upper or " ASK " in upper


def _redirect_excerpt(text: str) -> str:
    for word in ("MOVED", "ASK"):
        i = text.find(word + " ")
        if i >= 0:
            return " ".join(text[i:].split()[:3])
    return text[:80]


# Which cause wins when several threads meet different ones.
_SEVERITY = (AUTH, PERMISSION, REDIRECT, UNREACHABLE, FAILING)


class Health:
    """The worker's view of Redis, shared by its threads; logs each change of state once.

    Each thread reports under its own ``source`` ("take", "record",
    "housekeeping"), so one that succeeds does not hide another that keeps
    failing (a user who may beat but not BLMOVE): the state is the worst of
    the sources' last reports.
    """

    def __init__(self, target: Target, on_change=None):
        self.target = target
        self._lock = threading.Lock()
        self._errors: dict[str, tuple[str, str, float]] = {}  # source -> (state, reason, since)
        self._logged = OK
        self._down_since = time.monotonic()
        self._on_change = on_change

    @property
    def up(self) -> bool:
        return not self._errors

    @property
    def state(self) -> str:
        return self._overall()[0]

    def _overall(self) -> tuple[str, str, float]:
        errors = list(self._errors.values())
        if not errors:
            return OK, "", 0.0
        errors.sort(key=lambda e: (_SEVERITY.index(e[0]), e[2]))
        state, reason, _ = errors[0]
        since = min(e[2] for e in errors)
        return state, reason, since

    def ok(self, source: str = "redis") -> None:
        if source not in self._errors:
            return
        with self._lock:
            self._errors.pop(source, None)
            self._note()

    def failed(self, exc: BaseException, source: str = "redis") -> str:
        """Record an error met by ``source``; returns its state."""
        state, reason = classify(exc, self.target)
        with self._lock:
            prev = self._errors.get(source)
            self._errors[source] = (state, reason, prev[2] if prev else time.monotonic())
            self._note()
        return state

    def _note(self) -> None:
        """Log (once) a change of the overall state; under the lock."""
        state, reason, since = self._overall()
        if state == self._logged:
            return
        was, self._logged = self._logged, state
        if state == OK:
            log.info("redis: working again at %s after %.1f s (%s)", self.target.redacted,
                     time.monotonic() - self._down_since, was)
        else:
            if was == OK:
                self._down_since = since
            level = logging.ERROR if state in (AUTH, PERMISSION, REDIRECT) else logging.WARNING
            log.log(level, "redis: %s; retrying with backoff", reason)
        if self._on_change and (state == OK or was == OK):
            self._on_change(state == OK)

    def verdict(self) -> tuple[bool, str]:
        """(healthy, reason) for /healthz."""
        with self._lock:
            state, reason, since = self._overall()
        if state == OK:
            return True, "ok"
        age = time.monotonic() - since
        if state in HARD or age > FAILING_GRACE:
            label = {UNREACHABLE: "redis unreachable", AUTH: "authentication refused",
                     PERMISSION: "permission refused", REDIRECT: "redirect not followed",
                     FAILING: f"redis commands failing for {age:.0f} s"}[state]
            return False, f"{label}: {reason}"
        return True, f"ok (an error for {age:.1f} s: {reason})"

    def pause(self, attempt: int, stop: threading.Event | None = None) -> None:
        pause(attempt, stop)
