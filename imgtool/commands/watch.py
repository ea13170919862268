"""imgtool watch DIR: process uploads the moment they land."""

from __future__ import annotations

import errno
import json
import logging
import sys
import threading
from pathlib import Path

import click

from ..pipeline import Pipeline, Result, Signals, default_jobs
from ..watcher import DEFAULT_POLL_INTERVAL, DEFAULT_SETTLE, Watcher
from . import Outcome
from .options import budget_options, input_options, jobs_option, processing_options

log = logging.getLogger("imgtool")


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@processing_options
@input_options
@jobs_option
@budget_options
@click.option("--polling", is_flag=True,
              help="Poll the folder instead of using kernel events (network filesystems).")
@click.option("--poll-interval", type=click.FloatRange(0.05, 3600), default=DEFAULT_POLL_INTERVAL,
              show_default=True, help="Seconds between two looks at the folder with --polling.")
@click.option("--settle", type=click.FloatRange(0, 3600), default=DEFAULT_SETTLE, show_default=True,
              help="Seconds a file must stay unchanged after its last write (inotify: after its last "
                   "close) before it is processed; with --polling, at least the poll interval.")
@click.option("--no-initial-scan", "initial_scan", is_flag=True, flag_value=False, default=True,
              help="Do not catch up on files that lack up-to-date outputs at start.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per processed file on stdout.")
def watch(directory, settings, backend, jobs, limits, polling, poll_interval, settle, initial_scan, as_json):
    """Watch DIRECTORY and process each image that lands in it.

    Each image created, moved in or rewritten anywhere below DIRECTORY is
    processed once its writing is over, into processed/ beside it.
    processed/ folders, hidden and temporary files are ignored.  On start,
    files without up-to-date outputs are caught up on.

    SIGINT/SIGTERM: finish the files in work, then exit 0; a second signal
    interrupts them (no partial output is left) and exits 130.
    """
    jobs = jobs or default_jobs()
    pipe = Pipeline(settings, backend=backend, jobs=jobs, **limits)
    out_lock = threading.Lock()

    def print_json(result: Result) -> None:
        line = json.dumps(result.to_dict())
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    watcher = Watcher(directory, pipe, jobs=jobs, polling=polling, poll_interval=poll_interval,
                      settle=settle, initial_scan=initial_scan,
                      on_result=print_json if as_json else None)

    def on_drain(name: str) -> None:
        log.info("stopping: finishing the files in work (signal again to interrupt them)")

    with Signals(pipe.pool, grace=None, on_drain=on_drain) as signals:
        try:
            try:
                watcher.start()
            except OSError as exc:
                hint = ""
                if exc.errno == errno.ENOSPC:  # inotify's limit, not the disk
                    hint = " (inotify watch limit reached: raise fs.inotify.max_user_watches, or use --polling)"
                elif exc.errno == errno.EMFILE:
                    hint = " (too many inotify instances: raise fs.inotify.max_user_instances, or use --polling)"
                raise click.ClickException(f"cannot watch {directory}: {exc.strerror or exc}{hint}") from exc
            log.info("watching %s (%s, settle %g s, %d job%s, backend %s)", watcher.root,
                     watcher.observer_name, watcher.quiet, jobs, "" if jobs == 1 else "s", pipe.backend_name)
            while not signals.draining.wait(0.2):
                if watcher.root_gone.is_set():
                    log.error("%s was removed; stopping", watcher.root)
                    break
        finally:
            watcher.stop(abort=pipe.pool.aborting)
            pipe.close()
    c = watcher.counts
    log.info("stopped: %d processed, %d failed", c["done"], c["failed"])
    if signals.aborted:
        return Outcome.INTERRUPTED
    return Outcome.FAILURES if watcher.root_gone.is_set() and not signals.count else Outcome.OK


COMMANDS = [watch]
