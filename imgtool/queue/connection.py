"""Where Redis is (--redis and the REDIS_* variables), the client, and reconnecting with backoff."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .defaults import (
    CONNECT_TIMEOUT,
    DEFAULT_REDIS_DB,
    DEFAULT_REDIS_HOST,
    DEFAULT_REDIS_PORT,
    RECONNECT_BASE,
    RECONNECT_CAP,
    SOCKET_TIMEOUT,
    TAKE_TIMEOUT,
)

log = logging.getLogger("imgtool")

# What "Redis is unreachable" looks like from redis-py: refused or reset
# connections, timeouts, a Redis still loading its AOF after a restart
# (BusyLoadingError is a ConnectionError) and a replica after a failover.
CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
)

URL_SCHEMES = ("redis", "rediss", "unix")


def resolve_url(value: str | None, env: Mapping[str, str] | None = None) -> str:
    """The redis:// URL for ``--redis`` (host, host:port or a URL) and the environment.

    Without ``value``: ``REDIS_URL``, else ``REDIS_HOST``/``REDIS_PORT``/
    ``REDIS_DB``/``REDIS_PASSWORD`` (the upload server's variables), else
    localhost:6379/0.  A host or host:port also takes ``REDIS_DB`` and
    ``REDIS_PASSWORD`` from the environment, as the upload server's .env sets them.
    Raises ValueError for a value that is none of these.
    """
    env = os.environ if env is None else env
    if not value:
        value = env.get("REDIS_URL") or ""
        if not value:
            host = env.get("REDIS_HOST") or DEFAULT_REDIS_HOST
            port = env.get("REDIS_PORT") or str(DEFAULT_REDIS_PORT)
            value = f"{_bracket(host)}:{port}"
    value = value.strip()
    if "://" in value:
        scheme = value.split("://", 1)[0].lower()
        if scheme not in URL_SCHEMES:
            raise ValueError(f"unsupported URL scheme {scheme!r} (use redis://, rediss:// or unix://)")
        parts = urlsplit(value)
        if scheme != "unix" and not parts.hostname:
            raise ValueError(f"no host in {redact(value)}")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ValueError(f"bad port in {redact(value)}") from exc
        return value
    host, port = _split_host_port(value)
    db = env.get("REDIS_DB") or str(DEFAULT_REDIS_DB)
    if not db.isdigit():
        raise ValueError(f"REDIS_DB must be a number, not {db!r}")
    password = env.get("REDIS_PASSWORD") or ""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{_bracket(host)}:{port}/{db}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _split_host_port(value: str) -> tuple[str, int]:
    if value.startswith("["):  # [::1]:6379
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"cannot read {value!r} as host or host:port")
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    elif ":" in value:  # a bare IPv6 address
        host, port_text = value, ""
    else:
        host, port_text = value, ""
    if not host or any(c in host for c in "/@ \t"):
        raise ValueError(f"cannot read {value!r} as host or host:port")
    if not port_text:
        return host, DEFAULT_REDIS_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r} in {value!r}")
    return host, int(port_text)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def make_client(url: str, socket_timeout: float = SOCKET_TIMEOUT + TAKE_TIMEOUT,
                connect_timeout: float = CONNECT_TIMEOUT) -> redis.Redis:
    """A client that raises at once on a connection error (never retries by itself).

    The callers retry with backoff; redis-py's own retries would hide outages
    from the logs and repeat commands whose first try may have run.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=False,
    )


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** min(attempt, 64)))
    return (rng or random).uniform(0.0, ceiling)


class RedisHealth:
    """Tracks whether Redis answers, logs each outage once, and paces reconnects.

    Shared by every thread of a worker: the first to meet an error logs it, the
    first to succeed afterwards logs the recovery.
    """

    def __init__(self, url: str, on_change=None):
        self.url = redact(url)
        self._lock = threading.Lock()
        self._up = True
        self._since = time.monotonic()
        self._on_change = on_change

    @property
    def up(self) -> bool:
        return self._up

    def ok(self) -> None:
        if self._up:
            return
        with self._lock:
            if self._up:
                return
            self._up = True
            down_for = time.monotonic() - self._since
            self._since = time.monotonic()
        log.info("redis: reachable again at %s after %.1f s", self.url, down_for)
        if self._on_change:
            self._on_change(True)

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if not self._up:
                return
            self._up = False
            self._since = time.monotonic()
        log.warning("redis: %s unreachable (%s); retrying with backoff", self.url,
                    str(exc) or type(exc).__name__)
        if self._on_change:
            self._on_change(False)

    def pause(self, attempt: int, stop: threading.Event | None = None) -> None:
        """Sleep before reconnect attempt ``attempt`` (0, 1, ...); wakes early on ``stop``."""
        delay = max(0.01, backoff_delay(attempt, RECONNECT_BASE, RECONNECT_CAP))
        if stop is None:
            time.sleep(delay)
        else:
            stop.wait(delay)
