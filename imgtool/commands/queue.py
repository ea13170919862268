"""imgtool queue / enqueue / status: the upload server's Redis protocol (options and wiring only)."""

from __future__ import annotations

import functools
import json
import logging
import os
import time

import click
import redis

from .. import storage
from ..errors import ImgtoolError
from .. import ops
from ..ops import Settings, job_id_for
from ..queue import defaults as D
from ..queue.connection import REDIS_ERRORS, TLS, RedisSetupError, check_prefix, connect, parse_target, resolve_url
from ..queue.jobs import JOB_ID_RE, AllowRoots, dumps, now_ms
from ..queue.health import classify
from ..queue.keys import Keys
from ..queue.protocol import Protocol
from . import Outcome
from .options import MAX_JOBS, OpsList, budget_options, input_options, processing_options, s3_endpoint_option

log = logging.getLogger("imgtool")


def _redis_url(ctx, param, value):
    try:
        return resolve_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _prefix(ctx, param, value):
    try:
        return Keys(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _target(url: str, keys: Keys, tls: TLS):
    if (tls.cert is None) != (tls.key is None):
        raise click.BadParameter("--redis-cert and --redis-key go together", param_hint="'--redis-cert'")
    try:
        target = parse_target(url, tls)
        check_prefix(target, keys)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--redis'") from None
    return target


def _allow_roots(ctx, param, value):
    """Each root as given: a folder that exists (resolved), or an s3:// prefix."""
    roots = []
    for text in value:
        if storage.scheme_of(text):
            try:
                storage.for_location(text).root(text)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
            roots.append(text)
            continue
        path = click.Path(exists=True, file_okay=False, resolve_path=True).convert(text, param, ctx)
        roots.append(path)
    return tuple(roots)


def redis_options(f):
    """--redis, --prefix and the TLS files; the command gets ``target`` (a Target) and ``keys``."""
    file = click.Path(exists=True, dir_okay=False, resolve_path=True)

    inner = f

    @functools.wraps(inner)
    def command(*args, url, keys, redis_ca, redis_cert, redis_key, **kwargs):
        return inner(*args, target=_target(url, keys, TLS(redis_ca, redis_cert, redis_key)), keys=keys, **kwargs)

    f = command
    f = click.option("--redis-key", "redis_key", type=file, default=None, envvar="IMGTOOL_REDIS_KEY",
                     help="Client private key for TLS (rediss://) [env: IMGTOOL_REDIS_KEY].")(f)
    f = click.option("--redis-cert", "redis_cert", type=file, default=None, envvar="IMGTOOL_REDIS_CERT",
                     help="Client certificate for TLS (rediss://) [env: IMGTOOL_REDIS_CERT].")(f)
    f = click.option("--redis-ca", "redis_ca", type=file, default=None, envvar="IMGTOOL_REDIS_CA",
                     help="CA certificates that sign the Redis server's certificate (rediss://) "
                          "[env: IMGTOOL_REDIS_CA].")(f)
    f = click.option("--prefix", "keys", default=D.DEFAULT_PREFIX, show_default=True, callback=_prefix,
                     help="Prefix of every Redis key ('{image}' keeps them in one Cluster slot).")(f)
    f = click.option("--redis", "url", metavar="HOST[:PORT]|URL", default=None, callback=_redis_url,
                     help="Redis to use: host, host:port, a redis:// or rediss:// URL, "
                          "redis+sentinel://[user:pw@]h:p[,h:p...]/MASTER[/DB] or "
                          "redis+cluster://h:p[,h:p...] "
                          "[default: $REDIS_URL, else $REDIS_HOST/$REDIS_PORT/$REDIS_DB/$REDIS_PASSWORD, "
                          "else localhost:6379/0].")(f)
    return f


def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter("must be > 0")
    return value


@click.command()
@redis_options
@click.option("-w", "-j", "--workers", "--jobs", "workers", type=click.IntRange(1, MAX_JOBS),
              default=D.DEFAULT_WORKERS, show_default=True,
              help="Jobs processed at once (threads sharing one backend and GPU); -j/--jobs as in process and watch.")
@click.option("--max-retries", type=click.IntRange(0), default=D.DEFAULT_MAX_RETRIES, show_default=True,
              help="Retries of a job whose error is retryable before it goes to image:failed.")
@click.option("--allow-root", "allow_roots", multiple=True, metavar="DIR|s3://BUCKET/PREFIX",
              callback=_allow_roots,
              help=f"Only read and write under DIR, after resolving symlinks, or under an s3:// prefix "
                   f"(repeatable) [default: ${D.ALLOW_ROOTS_ENV}, {os.pathsep!r}-separated].")
@click.option("--drain-timeout", type=click.FloatRange(0), default=D.DEFAULT_DRAIN_TIMEOUT, show_default=True,
              help="On SIGTERM/SIGINT, seconds to let in-flight jobs finish before putting them back.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus /metrics and /healthz on this port (0: any free port).")
@click.option("--metrics-host", default=D.DEFAULT_METRICS_HOST, show_default=True,
              help="Address the metrics server listens on.")
@click.option("--heartbeat-ttl", type=float, default=D.DEFAULT_HEARTBEAT_TTL, show_default=True,
              callback=_positive,
              help="Seconds without a heartbeat after which a worker is dead and its jobs are put back.")
@click.option("--max-recoveries", type=click.IntRange(0), default=D.DEFAULT_MAX_RECOVERIES, show_default=True,
              help="A job recovered from dead workers more often than this is a poison pill: image:failed.")
@click.option("--retry-base", type=float, default=D.DEFAULT_RETRY_BASE, show_default=True, callback=_positive,
              help="Backoff base in seconds: retry n waits uniform(0, min(cap, base*2^n)).")
@click.option("--retry-cap", type=float, default=D.DEFAULT_RETRY_CAP, show_default=True, callback=_positive,
              help="Longest backoff before a retry, in seconds.")
@click.option("--done-cap", type=click.IntRange(1), default=D.DEFAULT_DONE_CAP, show_default=True,
              help="image:done keeps this many newest entries.")
@click.option("--min-replicas-ack", type=click.IntRange(0), default=0, show_default=True,
              help="After each recorded result, WAIT until this many replicas have it (up to "
                   f"{D.REPLICA_ACK_TIMEOUT_MS} ms): narrows, does not close, the window in which a "
                   "failover forgets a result (the job then runs again).")
@processing_options
@budget_options
@input_options
@click.pass_context
def queue(ctx, target, keys, workers, max_retries, allow_roots, drain_timeout, metrics_port, metrics_host,
          heartbeat_ttl, max_recoveries, retry_base, retry_cap, done_cap, min_replicas_ack, settings, backend,
          limits):
    """Take jobs from the upload server's Redis queue and record their results.

    Jobs are taken from the left of image:jobs (FIFO) into this worker's
    in-flight list, and leave it only once their result is in image:done,
    image:failed or image:retry.  SIGTERM/SIGINT drains: in-flight jobs finish
    (up to --drain-timeout), then it exits 0; a second signal puts them back
    at once.  A job's operations must be among --ops.
    """
    from ..pipeline import Pipeline
    from ..queue.metrics import Metrics, MetricsServer, health_check_for
    from ..queue.worker import Worker, WorkerConfig

    try:
        roots = AllowRoots.from_options(allow_roots)
    except (ValueError, ImgtoolError) as exc:
        raise click.UsageError(f"{D.ALLOW_ROOTS_ENV}: {exc}") from None
    config = WorkerConfig(workers=workers, keys=keys, max_retries=max_retries,
                          max_recoveries=max_recoveries, drain_timeout=drain_timeout,
                          heartbeat_ttl=heartbeat_ttl, retry_base=retry_base, retry_cap=retry_cap,
                          done_cap=done_cap, min_replicas_ack=min_replicas_ack)
    pipeline = Pipeline(settings, backend=backend, jobs=workers, **limits)
    metrics = Metrics() if metrics_port is not None else None
    worker = Worker(target, config, settings, pipeline, roots, metrics)
    server = None
    if metrics is not None:
        metrics.bind(worker)
        try:
            server = MetricsServer(metrics, health_check_for(worker), metrics_host, metrics_port).start()
        except OSError as exc:
            raise click.UsageError(f"--metrics-port {metrics_port}: {exc.strerror or exc}") from None
        log.info("queue: metrics on http://%s:%d/metrics and /healthz", metrics_host, server.port)
    try:
        worker.run()
        return Outcome.OK
    except RedisSetupError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        if server is not None:
            server.stop()


def _connect(target, keys):
    """connect(), with a cluster found behind a plain URL checked against the prefix."""
    try:
        client, found = connect(target)
        check_prefix(found, keys)
    except RedisSetupError as exc:
        raise click.UsageError(str(exc)) from None
    return client, found


# ------------------------------------------------------------------------ enqueue


def _options_json(ctx, param, value):
    if value is None:
        return None
    try:
        options = json.loads(value)
        Settings().with_job_options(options)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg}") from None
    except ImgtoolError as exc:
        raise click.BadParameter(exc.message) from None
    return options


def _inputs(paths: tuple):
    from ..pipeline import list_inputs

    for arg in paths:
        arg = storage.location(arg)
        kind = storage.for_location(arg).kind(arg)
        if kind == "folder":
            yield from list_inputs(arg)
        elif kind == "file":
            yield arg
        else:
            raise click.UsageError(f"{arg}: no such file or directory")


def make_job(src, operations, output_dir=None, options=None) -> dict:
    """A job exactly as the upload server builds it (its field order too)."""
    store = storage.for_location(src)
    src = store.absolute(store.location(src))
    out_dir = (storage.for_location(output_dir).absolute(storage.location(output_dir)) if output_dir
               else storage.default_out_dir(src))
    job = {
        "jobId": job_id_for(store.name(src)),
        "inputPath": str(src),
        "outputDir": str(out_dir),
        "operations": list(operations),
        "timestamp": now_ms(),
        "retryCount": 0,
    }
    if options is not None:
        job["options"] = options
    return job


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@redis_options
@click.option("--ops", "operations", type=OpsList(), default=",".join(ops.names()), show_default=True,
              help="Operations the jobs ask for, comma-separated.")
@click.option("-o", "--output", "--output-dir", "output_dir", type=click.Path(file_okay=False), default=None,
              help="outputDir of every job [default: processed/ beside each input, as the upload server does]; "
                   "--output-dir is the older name.")
@click.option("--options", "options", metavar="JSON", default=None, callback=_options_json,
              help='Per-operation parameters, e.g. \'{"thumbnail": {"width": 320}}\'.')
@click.option("-n", "--dry-run", is_flag=True, help="Print the jobs (one JSON line each) instead of pushing them.")
@s3_endpoint_option
def enqueue(paths, target, keys, operations, output_dir, options, dry_run):
    """Push a job for each image or video file (folders walked) with RPUSH, as the upload server does.

    PATHS and -o may be s3://bucket/key URLs (a prefix is listed)."""
    payloads = []
    skipped = 0
    for src in _inputs(paths):
        job = make_job(src, operations, output_dir, options)
        if not JOB_ID_RE.fullmatch(job["jobId"]) or ".." in job["jobId"]:
            log.warning("enqueue: skipping %s: %r is not a valid jobId (letters, digits, '.', '_', '-')",
                        src, job["jobId"])
            skipped += 1
            continue
        payloads.append(dumps(job))
    if dry_run:
        for p in payloads:
            click.echo(p.decode())
        return Outcome.FAILURES if skipped else Outcome.OK
    try:
        client, _ = _connect(target, keys)
        for i in range(0, len(payloads), D.ENQUEUE_BATCH):
            client.rpush(keys.jobs, *payloads[i:i + D.ENQUEUE_BATCH])
    except REDIS_ERRORS as exc:
        raise click.ClickException(classify(exc, target)[1]) from None
    log.info("enqueue: pushed %d job(s) to %s", len(payloads), keys.jobs)
    return Outcome.FAILURES if skipped else Outcome.OK


# ------------------------------------------------------------------------ status


@click.command()
@redis_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def status(target, keys, as_json):
    """Show the queue: the four list lengths, scheduled retries, and the workers with their in-flight jobs."""
    try:
        client, _ = _connect(target, keys)
        proto = Protocol(client, keys)
        lengths = proto.lengths()
        scheduled = proto.scheduled_retries()
        workers = proto.workers()
    except REDIS_ERRORS as exc:
        raise click.ClickException(classify(exc, target)[1]) from None
    now = time.time() * 1000
    rows = [{
        "id": w.worker_id,
        "alive": w.alive,
        "state": w.fields.get("state", "dead") if w.alive else "dead",
        "inFlight": w.in_flight,
        "backend": w.fields.get("backend", ""),
        "concurrency": int(w.fields.get("concurrency", 0) or 0),
        "lastBeatAgoMs": int(now - int(w.fields["beat"])) if "beat" in w.fields else None,
    } for w in workers]
    if as_json:
        click.echo(json.dumps({"lists": {keys.lists[k]: n for k, n in lengths.items()},
                               "retryScheduled": scheduled, "workers": rows}))
        return Outcome.OK
    for name, n in lengths.items():
        click.echo(f"{keys.lists[name]:<24} {n}")
    click.echo(f"{keys.retry_schedule:<24} {scheduled}")
    live = sum(r["alive"] for r in rows)
    click.echo(f"workers: {live} live, {len(rows) - live} dead (awaiting recovery)")
    for r in rows:
        beat = f"{r['lastBeatAgoMs'] / 1000:.1f} s ago" if r["lastBeatAgoMs"] is not None else "-"
        click.echo(f"  {r['id']:<40} {r['state']:<9} in flight {r['inFlight']:<4} "
                   f"{r['backend'] or '-':<5} beat {beat}")
    return Outcome.OK


COMMANDS = [queue, enqueue, status]
