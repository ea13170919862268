"""imgtool process PATH...: make the derivatives of files and folders now."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Iterator

import click

from .. import storage
from ..errors import ImgtoolError
from ..textsafe import printable
from ..pipeline import Interrupted, Pipeline, Result, Signals, Task, count_inputs, list_inputs
from . import Outcome
from .options import budget_options, input_options, jobs_option, processing_options

log = logging.getLogger("imgtool")


def _tasks(paths: tuple, output, collisions: list, unreadable: list, roots: tuple = ()) -> Iterator[Task]:
    """One task per input, in argument order; folders walked, duplicates dropped.

    Two inputs whose outputs would have the same names (``a.jpg`` and
    ``a.png`` side by side, or two folders mirrored into one ``-o``) are a
    collision: the second is reported, never written over the first.  Memory
    stays flat on huge folders: names are remembered per output folder only
    while that folder is being filled, except across several arguments, which
    may meet in the same folder.
    """
    several = len(paths) > 1
    seen_inputs: set[str] = set()
    seen: dict[str, dict[str, str]] = {}  # output folder -> jobId -> first input
    out_store = storage.for_location(output) if output is not None else None
    for arg in paths:
        store = storage.for_location(arg)
        sources = ([(arg, store.parent(arg))] if store.kind(arg) != "folder"
                   else ((p, arg) for p in list_inputs(arg, on_error=lambda d, e: unreadable.append((d, e)))))
        for src, base in sources:
            if several:
                key = store.identity(src)
                if key in seen_inputs:
                    continue
                seen_inputs.add(key)
            if output is None:
                out_dir = storage.default_out_dir(src)
            else:
                out_dir = out_store.join(output, *store.relative(store.parent(src), base))
            task = Task(src, out_dir, roots=roots)
            folder = str(out_dir)
            if not several and folder not in seen:
                seen.clear()  # a walk fills one output folder after another
            names = seen.setdefault(folder, {})
            if task.job_id in names:
                collisions.append((task, names[task.job_id]))
                continue
            names[task.job_id] = str(src)
            yield task


def _check_paths(paths: tuple) -> None:
    for p in paths:
        kind = storage.for_location(p).kind(p)
        if kind == "missing":
            raise click.UsageError(f"{p}: no such file or directory")
        if kind == "other":
            raise click.UsageError(f"{p}: not a file or directory")


def _locations(ctx, param, value):
    """Paths and URLs as their stores' locations (a tuple for PATHS, one or None for -o)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(storage.location(v) for v in value)
    return storage.location(value)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(), callback=_locations)
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None, callback=_locations,
              help="Write outputs under DIR (mirroring sub-folders) instead of processed/ beside each input.")
@processing_options
@input_options
@jobs_option
@budget_options
@click.option("--allow-root", "allow_roots", multiple=True,
              type=click.Path(exists=True, file_okay=False, resolve_path=True),
              help="Only read and write under DIR, after resolving symlinks, opening every file from DIR by "
                   "folder handle (repeatable; for untrusted trees) [default: $IMGTOOL_ALLOW_ROOTS].")
@click.option("-f", "--force", is_flag=True, help="Redo inputs whose outputs are already up to date.")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be done; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per input on stdout.")
@click.pass_context
def process(ctx, paths, output, settings, backend, jobs, limits, allow_roots, force, dry_run, as_json):
    """Make the derivatives of image and video files and folders (walked recursively).

    PATHS may be s3://bucket/key URLs (an object, or every image under a
    prefix); -o may be one too.  Outputs go to processed/<name>_<operation>.webp
    beside each input.
    Inputs whose outputs are newer are skipped unless --force is given.

    Exit codes: 0 all done, 1 some inputs failed, 2 usage error, 130 interrupted.
    """
    _check_paths(paths)
    if output is not None and not dry_run:
        # Once, before any image is decoded: a -o that cannot be written (a missing bucket) says so.
        storage.for_location(output).check_writable(output)
    quiet = ctx.obj.get("verbose", 0) < 0
    collisions: list = []
    unreadable: list = []  # folders the walk could not list
    from ..queue.jobs import AllowRoots  # no Redis: the rule of roots only

    try:
        roots = AllowRoots.from_options(allow_roots).roots
    except ValueError as exc:
        raise click.UsageError(f"--allow-root: {exc}") from None
    tasks = _tasks(paths, output, collisions, unreadable, roots)

    if dry_run:
        return _dry_run(tasks, settings, force, as_json, collisions, unreadable)

    pipe = Pipeline(settings, backend=backend, jobs=jobs, **limits)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    start = time.perf_counter()
    bar = _progress_bar(quiet, paths)
    # No grace: the first signal stops the run at once.  Outputs are all or
    # nothing, so nothing is lost by not waiting for the images in work.
    with Signals(pipe.pool, grace=0) as signals:
        try:
            for res in pipe.map(tasks, force=force):
                counts[res.status] += 1
                _report(res, as_json, bar)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"failed {counts['failed']}" if counts["failed"] else "", refresh=False)
            for task, first in collisions:
                counts["failed"] += 1
                err = ImgtoolError(f"its outputs would overwrite those of {first}", task.src)
                _report(Result(task, "failed", error=err), as_json, bar)
            for folder, exc in unreadable:
                counts["failed"] += 1
                err = ImgtoolError(f"cannot list this folder ({exc.strerror or exc})", folder)
                _report(Result(Task(folder, folder), "failed", error=err), as_json, bar)
        except Interrupted:
            pass
    if signals.count:
        pipe.stop()
        if bar is not None:
            bar.close()
        click.echo("Interrupted: no partial output was left.", err=True)
        return Outcome.INTERRUPTED
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    rate = counts["done"] / seconds if seconds > 0 else 0.0
    click.echo(
        f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
        f"in {seconds:.1f} s ({rate:.2f} images/s, backend {pipe.backend_name})",
        err=True,
    )
    pipe.close()
    return Outcome.FAILURES if counts["failed"] else Outcome.OK


def _progress_bar(quiet: bool, paths: tuple):
    if quiet or not sys.stderr.isatty():
        return None
    import threading

    from tqdm import tqdm

    bar = tqdm(unit="img", file=sys.stderr, dynamic_ncols=True, leave=False)

    def count():
        # Counted beside the work, so the first image does not wait for a big walk.
        total = count_inputs(paths)
        bar.total = total
        bar.refresh()

    threading.Thread(target=count, daemon=True, name="imgtool-count").start()
    return bar


def _report(res: Result, as_json: bool, bar) -> None:
    if as_json:
        click.echo(json.dumps(res.to_dict()))
    if res.status == "failed":
        line = f"Error: {printable(str(res.error))}"
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)
    elif res.status == "done":
        log.debug("%s -> %s (%.0f ms)", res.task.src, ", ".join(storage.name(p) for p in res.outputs.values()),
                  res.duration_ms)


def _dry_run(tasks, settings, force, as_json, collisions, unreadable) -> int:
    pipe = Pipeline(settings, backend="cpu", jobs=1)
    n = 0
    for task in tasks:
        status = "skipped" if not force and pipe.up_to_date(task) else "planned"
        n += status == "planned"
        if as_json:
            click.echo(json.dumps({"input": str(task.src), "jobId": task.job_id, "status": status,
                                   "outputs": {op: str(p) for op, p in pipe.outputs(task).items()}}))
        else:
            verb = "up to date" if status == "skipped" else "would write"
            outs = ", ".join(str(p) for p in pipe.outputs(task).values())
            click.echo(printable(f"{task.src}: {verb} {outs}"))
    for task, first in collisions:
        click.echo(printable(f"Error: {task.src}: its outputs would overwrite those of {first}"), err=True)
    for folder, exc in unreadable:
        click.echo(printable(f"Error: {folder}: cannot list this folder ({exc.strerror or exc})"), err=True)
    click.echo(f"{n} to process (dry run: nothing written)", err=True)
    return Outcome.FAILURES if collisions or unreadable else Outcome.OK


COMMANDS = [process]
