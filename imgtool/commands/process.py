"""imgtool process PATH...: make the derivatives of files and folders now."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Iterator

import click

from .. import storage
from ..errors import ImgtoolError, InputNotFound, UnsupportedFormat
from ..textsafe import printable
from ..pipeline import Interrupted, Pipeline, Result, Signals, Task, count_inputs, list_inputs
from . import Outcome
from .options import budget_options, input_options, jobs_option, processing_options

log = logging.getLogger("imgtool")


class _Inputs:
    """The tasks of a run, and what went wrong with the arguments before any image was decoded.

    ``missing``: arguments that are no file or folder (each its own failure);
    ``empty``: folders with no image in them; ``unreadable``: folders the walk
    could not list; ``collisions``: inputs whose outputs would overwrite
    another's; ``unwritable``: each output folder that cannot be written, with
    the inputs bound for it (checked once per folder, before any of them is
    decoded; ``on_unwritable`` hears of each folder as soon as it is found).
    """

    def __init__(self, paths: tuple, output, on_unwritable=None, roots: tuple = ()):
        self.output = output
        self.roots = roots  # --allow-root: each task confined to them when it runs
        self.on_unwritable = on_unwritable
        self.missing: list[tuple[object, ImgtoolError]] = []
        self.empty: list = []
        self.unreadable: list = []
        self.collisions: list = []
        self.unwritable: dict[str, tuple[ImgtoolError, list[Task]]] = {}
        self._checked: dict[str, ImgtoolError | None] = {}
        self.paths = []
        for p in paths:
            kind = storage.for_location(p).kind(p)
            if kind == "missing":
                self.missing.append((p, InputNotFound("no such file or directory", p)))
            elif kind == "other":
                self.missing.append((p, UnsupportedFormat("not a file or directory", p)))
            else:
                self.paths.append(p)

    def tasks(self) -> Iterator[Task]:
        """One task per input, in argument order; folders walked, duplicates dropped.

        Two inputs whose outputs would have the same names (``a.jpg`` and
        ``a.png`` side by side, or two folders mirrored into one ``-o``) are a
        collision: the second is reported, never written over the first.  Memory
        stays flat on huge folders: names are remembered per output folder only
        while that folder is being filled, except across several arguments, which
        may meet in the same folder.
        """
        paths, output = self.paths, self.output
        several = len(paths) > 1
        seen_inputs: set[str] = set()
        seen: dict[str, dict[str, str]] = {}  # output folder -> jobId -> first input
        out_store = storage.for_location(output) if output is not None else None
        for arg in paths:
            store = storage.for_location(arg)
            is_folder = store.kind(arg) == "folder"
            sources = ([(arg, store.parent(arg))] if not is_folder
                       else ((p, arg) for p in list_inputs(arg, on_error=lambda d, e: self.unreadable.append((d, e)))))
            found = 0
            for src, base in sources:
                found += 1
                if several:
                    key = store.identity(src)
                    if key in seen_inputs:
                        continue
                    seen_inputs.add(key)
                if output is None:
                    out_dir = storage.default_out_dir(src)
                else:
                    out_dir = out_store.join(output, *store.relative(store.parent(src), base))
                task = Task(src, out_dir, roots=self.roots)
                folder = str(out_dir)
                if not self._writable(out_dir, task):
                    continue
                if not several and folder not in seen:
                    seen.clear()  # a walk fills one output folder after another
                names = seen.setdefault(folder, {})
                if task.job_id in names:
                    self.collisions.append((task, names[task.job_id]))
                    continue
                names[task.job_id] = str(src)
                yield task
            if is_folder and not found:
                self.empty.append(arg)

    def _writable(self, out_dir, task: Task) -> bool:
        """Whether outputs can go into ``out_dir``: asked of its store once per folder, before any decode."""
        folder = str(out_dir)
        if folder not in self._checked:
            try:
                storage.for_location(out_dir).check_writable(out_dir)
                self._checked[folder] = None
            except ImgtoolError as exc:
                self._checked[folder] = exc
                self.unwritable[folder] = (exc, [])
                if self.on_unwritable is not None:
                    self.on_unwritable(exc)
        if self._checked[folder] is None:
            return True
        self.unwritable[folder][1].append(task)
        return False

    def failures(self) -> Iterator[Result]:
        """A failed result for each input that failed without being decoded, but the unwritable folders'."""
        for task, first in self.collisions:
            yield Result(task, "failed", error=ImgtoolError(f"its outputs would overwrite those of {first}", task.src))
        for folder, exc in self.unreadable:
            err = ImgtoolError(f"cannot list this folder ({exc.strerror or exc})", folder)
            yield Result(Task(folder, folder), "failed", error=err)
        for folder in self.empty:
            yield Result(Task(folder, folder), "failed", error=ImgtoolError(f"no images found in {folder}"))


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
    beside each input.  Inputs whose outputs are up to date (newer, and made
    with the same settings) are skipped unless --force is given; a changed
    option redoes the outputs it changes.

    A path that does not exist, a folder with no image in it, and an output
    folder that cannot be written are failures (one line each); the other
    inputs are still processed.

    Exit codes: 0 all done, 1 some inputs failed, 2 usage error, 130 interrupted.
    """
    quiet = ctx.obj.get("verbose", 0) < 0
    from ..queue.jobs import AllowRoots  # no Redis: the rule of roots only

    try:
        roots = AllowRoots.from_options(allow_roots).roots
    except ValueError as exc:
        raise click.UsageError(f"--allow-root: {exc}") from None
    if dry_run:
        return _dry_run(_Inputs(paths, output, roots=roots), settings, force, as_json)

    pipe = Pipeline(settings, backend=backend, jobs=jobs, **limits)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    start = time.perf_counter()
    bar = _progress_bar(quiet, paths)
    inputs = _Inputs(paths, output, on_unwritable=lambda exc: _say(f"Error: {exc}", bar), roots=roots)
    # Each argument that is not there is its own failure, said first; the others go on.
    for p, err in inputs.missing:
        counts["failed"] += 1
        _report(Result(Task(p, p), "failed", error=err), as_json, bar)
    # No grace: the first signal stops the run at once.  Outputs are all or
    # nothing, so nothing is lost by not waiting for the images in work.
    with Signals(pipe.pool, grace=0) as signals:
        try:
            for res in pipe.map(inputs.tasks(), force=force):
                counts[res.status] += 1
                _report(res, as_json, bar)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"failed {counts['failed']}" if counts["failed"] else "", refresh=False)
            for res in inputs.failures():
                counts["failed"] += 1
                _report(res, as_json, bar)
            for exc, tasks in inputs.unwritable.values():
                # Said once per folder when it was found; each input bound there failed with it.
                counts["failed"] += len(tasks)
                if as_json:
                    for task in tasks:
                        click.echo(json.dumps(Result(task, "failed", error=exc).to_dict()))
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


def _say(line: str, bar) -> None:
    line = printable(line)  # file names are the sender's: one line stays one line
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        click.echo(line, err=True)


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
        _say(f"Error: {res.error}", bar)
    elif res.status == "done":
        log.debug("%s -> %s (%.0f ms)", res.task.src, ", ".join(storage.name(p) for p in res.outputs.values()),
                  res.duration_ms)


def _dry_run(inputs: "_Inputs", settings, force, as_json) -> int:
    pipe = Pipeline(settings, backend="cpu", jobs=1)
    inputs.on_unwritable = lambda exc: click.echo(printable(f"Error: {exc}"), err=True)
    for p, err in inputs.missing:
        click.echo(printable(f"Error: {err}"), err=True)
    n = 0
    for task in inputs.tasks():
        # Without --force, only what is not up to date (made with other settings, or older) would be written.
        writes = pipe.outputs(task) if force else pipe.stale_outputs(task)
        status = "planned" if writes else "skipped"
        n += status == "planned"
        shown = writes or pipe.outputs(task)
        if as_json:
            click.echo(json.dumps({"input": str(task.src), "jobId": task.job_id, "status": status,
                                   "outputs": {op: str(p) for op, p in shown.items()}}))
        else:
            verb = "would write" if writes else "up to date"
            click.echo(printable(f"{task.src}: {verb} {', '.join(str(p) for p in shown.values())}"))
    failures = list(inputs.failures())
    for res in failures:
        click.echo(printable(f"Error: {res.error}"), err=True)
    click.echo(f"{n} to process (dry run: nothing written)", err=True)
    return Outcome.FAILURES if failures or inputs.missing or inputs.unwritable else Outcome.OK


COMMANDS = [process]
