"""Where Redis is (--redis and the REDIS_* variables), the client for it (one server, Sentinel or
Cluster), and reconnecting with backoff.

``--redis`` takes:

- ``host``, ``host:port``, ``redis://[user:pw@]host[:port][/db]``, ``rediss://...`` (TLS),
  ``unix:///path``: one server; a cluster node's URL is detected (INFO) and used as a seed;
- ``redis+sentinel://[user:pw@]host[:port][,host[:port]...]/<master-name>[/db]``
  (``rediss+sentinel://`` for TLS to the master and the sentinels; the query
  ``?sentinel_username=...&sentinel_password=...`` authenticates to the sentinels,
  whose default port is 26379);
- ``redis+cluster://[user:pw@]host[:port][,host[:port]...]`` (``rediss+cluster://``):
  seed nodes of a Cluster.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .defaults import (
    CONNECT_TIMEOUT,
    DEFAULT_REDIS_DB,
    DEFAULT_REDIS_HOST,
    DEFAULT_REDIS_PORT,
    DEFAULT_SENTINEL_PORT,
    RECONNECT_BASE,
    RECONNECT_CAP,
    SOCKET_TIMEOUT,
    TAKE_TIMEOUT,
)

log = logging.getLogger("imgtool")

# What "Redis is unreachable" looks like from redis-py: refused or reset
# connections, timeouts, a Redis still loading its AOF after a restart
# (BusyLoadingError is a ConnectionError) and a replica after a failover.
# Every error of redis-py's: RedisClusterException (a cluster no seed of which can be
# reached, with its reasons) is no RedisError.
REDIS_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)

CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
)

SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
URL_SCHEMES = SINGLE_SCHEMES + SENTINEL_SCHEMES + CLUSTER_SCHEMES


class RedisSetupError(ValueError):
    """A deployment the worker cannot use as configured (e.g. a cluster without a hash-tagged prefix)."""


def resolve_url(value: str | None, env: Mapping[str, str] | None = None) -> str:
    """The URL for ``--redis`` (host, host:port or a URL) and the environment.

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
            raise ValueError(f"unsupported URL scheme {scheme!r} (use redis://, rediss://, unix://, "
                             f"redis+sentinel:// or redis+cluster://)")
        if scheme in SENTINEL_SCHEMES or scheme in CLUSTER_SCHEMES:
            parse_target(value)  # raises ValueError for a bad one
            return value
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


def _split_host_port(value: str, default_port: int = DEFAULT_REDIS_PORT) -> tuple[str, int]:
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
    if not host or any(c in host for c in "/@ \t,?#"):
        raise ValueError(f"cannot read {value!r} as host or host:port")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r} in {value!r}")
    return host, int(port_text)


def redact(url: str) -> str:
    """``url`` with any password (in the userinfo or the query) replaced by ``***``, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    if "password=" in tail:
        path, q, query = tail.partition("?")
        query = "&".join(f"{p.split('=', 1)[0]}=***" if p.split("=", 1)[0].endswith("password") else p
                         for p in query.split("&"))
        tail = f"{path}{q}{query}"
    return f"{scheme}{sep}{netloc}{slash}{tail}"


@dataclass(frozen=True)
class TLS:
    """--redis-ca, --redis-cert, --redis-key: files for TLS (rediss:// and its forms)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __bool__(self) -> bool:
        return bool(self.ca or self.cert or self.key)

    def kwargs(self) -> dict:
        out: dict = {"ssl_cert_reqs": "required"}
        if self.ca:
            out["ssl_ca_certs"] = self.ca
        if self.cert:
            out["ssl_certfile"] = self.cert
        if self.key:
            out["ssl_keyfile"] = self.key
        return out


@dataclass(frozen=True)
class Target:
    """One --redis: what kind of deployment, where, and how to authenticate."""

    url: str
    kind: str  # "single", "sentinel" or "cluster"
    tls: TLS = field(default_factory=TLS)
    nodes: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @property
    def ssl(self) -> bool:
        return self.url.split("://", 1)[0].lower().startswith("rediss")

    @property
    def redacted(self) -> str:
        return redact(self.url)

    @property
    def user(self) -> str:
        return self.username or "default"


def parse_target(url: str, tls: TLS | None = None) -> Target:
    """The Target of a URL that resolve_url accepted.  ValueError for a bad one."""
    tls = tls or TLS()
    scheme = url.split("://", 1)[0].lower()
    if tls and not scheme.startswith("rediss"):
        raise ValueError(f"--redis-ca/--redis-cert/--redis-key need a TLS URL (rediss://...), "
                         f"not {redact(url)}")
    if scheme in SINGLE_SCHEMES:
        parts = urlsplit(url)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        nodes = ((parts.hostname, parts.port or DEFAULT_REDIS_PORT),) if parts.hostname else ()
        return Target(url, "single", tls, nodes, username=username, password=password)
    rest = url.split("://", 1)[1]
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    if "?" in netloc:  # redis+cluster://h:1?x=y, no path
        netloc, _, query = netloc.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, pw_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(pw_text) if colon else None
    sentinel = scheme in SENTINEL_SCHEMES
    default_port = DEFAULT_SENTINEL_PORT if sentinel else DEFAULT_REDIS_PORT
    if not hosts:
        raise ValueError(f"no host in {redact(url)}")
    nodes = tuple(_split_host_port(h.strip(), default_port) for h in hosts.split(","))
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = set(params) - {"sentinel_username", "sentinel_password", "db"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r} in {redact(url)}")
    segments = [unquote(s) for s in path.split("/") if s]
    db_text = params.get("db")
    if sentinel:
        if not segments:
            raise ValueError(f"no master name in {redact(url)} (redis+sentinel://host:port/<master-name>[/db])")
        master = segments[0]
        if len(segments) > 2:
            raise ValueError(f"cannot read {redact(url)}: expected /<master-name>[/db] after the hosts")
        if len(segments) == 2:
            db_text = segments[1]
    else:
        master = ""
        if segments:
            raise ValueError(f"a cluster URL has no path (a Cluster has only db 0): {redact(url)}")
        if "sentinel_username" in params or "sentinel_password" in params:
            raise ValueError(f"sentinel_* parameters in a cluster URL: {redact(url)}")
    db = 0
    if db_text is not None:
        if not db_text.isdigit():
            raise ValueError(f"bad db {db_text!r} in {redact(url)}")
        db = int(db_text)
        if not sentinel and db != 0:
            raise ValueError(f"a Cluster has only db 0: {redact(url)}")
    return Target(url, "sentinel" if sentinel else "cluster", tls, nodes, master, db, username, password,
                  params.get("sentinel_username") or None, params.get("sentinel_password") or None)


def _common(socket_timeout: float, connect_timeout: float) -> dict:
    # No retries of redis-py's own: the callers retry with backoff, and redis-py's
    # retries would hide outages from the logs and repeat commands whose first
    # try may have run.
    return dict(socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                socket_keepalive=True, retry=Retry(NoBackoff(), 0), health_check_interval=0,
                decode_responses=False)


def make_client(target: Target | str, socket_timeout: float = SOCKET_TIMEOUT + TAKE_TIMEOUT,
                connect_timeout: float = CONNECT_TIMEOUT):
    """The client of ``target`` (a Redis, a Sentinel-managed Redis or a RedisCluster), not yet connected.

    A "single" target is taken as given: see ``connect`` for telling a cluster node from a server.
    """
    if isinstance(target, str):
        target = parse_target(target)
    common = _common(socket_timeout, connect_timeout)
    tls = target.tls.kwargs() if target.ssl else {}
    if target.kind == "single":
        return redis.Redis.from_url(target.url, **common, **tls)
    if target.kind == "sentinel":
        from redis.sentinel import Sentinel

        sentinel_kwargs = dict(socket_timeout=min(socket_timeout, connect_timeout),
                               socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), 0))
        if target.ssl:
            sentinel_kwargs.update(ssl=True, **tls)
        if target.sentinel_password is not None:
            sentinel_kwargs["password"] = target.sentinel_password
        if target.sentinel_username:
            sentinel_kwargs["username"] = target.sentinel_username
        conn = dict(common)
        if target.ssl:
            conn.update(ssl=True, **tls)
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_kwargs)
        return sentinel.master_for(target.master, db=target.db, username=target.username,
                                   password=target.password, **conn)
    from redis.cluster import ClusterNode, RedisCluster

    extra = {"ssl": True, **tls} if target.ssl else {}
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
                        username=target.username, password=target.password,
                        **common, **extra)


def server_mode(client) -> str:
    """"standalone", "cluster" or "sentinel", as the server says (INFO server); "" if it may not say."""
    try:
        info = client.info("server")
    except redis.exceptions.NoPermissionError:
        return ""
    except redis.exceptions.ResponseError as exc:
        if "unknown command" in str(exc).lower():
            return ""
        raise
    return str(info.get("redis_mode", "standalone"))


def connect(target: Target, socket_timeout: float = SOCKET_TIMEOUT + TAKE_TIMEOUT,
            connect_timeout: float = CONNECT_TIMEOUT):
    """(client, target) for ``target``, a plain URL of a cluster node turned into a cluster target.

    Talks to Redis (raises redis-py's errors when it cannot); RedisSetupError for a
    sentinel's address given as a server's.
    """
    client = make_client(target, socket_timeout, connect_timeout)
    if target.kind != "single" or target.url.lower().startswith("unix"):
        return client, target
    mode = server_mode(client)
    if mode == "sentinel":
        client.close()
        raise RedisSetupError(f"{target.redacted} is a Redis Sentinel, not a server: use "
                              f"redis+sentinel://{_hosts(target)}/<master-name>")
    if mode == "cluster":
        client.close()
        target = replace(target, kind="cluster")
        log.info("redis: %s is a cluster node: using it as the cluster's seed", target.redacted)
        return make_client(target, socket_timeout, connect_timeout), target
    return client, target


def _hosts(target: Target) -> str:
    return ",".join(f"{_bracket(h)}:{p}" for h, p in target.nodes)


def check_prefix(target: Target, keys) -> None:
    """On a cluster every key must share one slot: a prefix without a hash tag is refused."""
    if target.kind == "cluster" and keys.hash_tag is None:
        raise RedisSetupError(
            f"Redis at {target.redacted} is a Cluster and --prefix {keys.prefix!r} has no hash tag, so "
            f"the queue's keys would land in different slots: use --prefix '{{{keys.prefix}}}' "
            f"(the producer then pushes to {{{keys.prefix}}}:jobs)")


def follow_master(client) -> None:
    """A Sentinel-managed client asks the sentinels where the master is now.

    redis-py asks only when it opens a connection, so after SENTINEL FAILOVER
    (where the old master lives on, taking writes, until the sentinels demote it
    seconds later) its pooled connections would keep writing to the old master.
    When the answer changed, idle connections are dropped at once and in-use
    ones when they are handed back.  Nothing for other clients.
    """
    from redis.sentinel import SentinelConnectionPool

    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool):
        pool.get_master_address()


def direct_client(client, key: str):
    """A plain client on the node holding ``key`` (the client itself unless it is a RedisCluster).

    For commands that must share a connection with the writes before them (WAIT).
    """
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        return client.get_redis_connection(client.get_node_from_key(key))
    return client


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** min(attempt, 64)))
    return (rng or random).uniform(0.0, ceiling)


def pause(attempt: int, stop: threading.Event | None = None) -> None:
    """Sleep before reconnect attempt ``attempt`` (0, 1, ...); wakes early on ``stop``."""
    delay = max(0.01, backoff_delay(attempt, RECONNECT_BASE, RECONNECT_CAP))
    if stop is None:
        time.sleep(delay)
    else:
        stop.wait(delay)
