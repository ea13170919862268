"""Watch a folder with watchdog and process each image once, when its writing is over.

How a file becomes ready:

- inotify (Linux): a close-after-write, or a rename into place, followed by
  ``settle`` seconds in which nothing else happens to the file.  The quiet
  period is what turns a writer that opens, appends and closes the same file
  several times into one job.  A file that arrives with its content and is
  not written to after (the contents of a folder moved in, or written before
  the watch on a new folder was in place) counts as closed.  A file seen
  written to but never closed waits the longer ``NO_CLOSE_QUIET``.  Opens
  and closes-after-read are not asked for from the kernel at all: our own
  reads make no events.
- polling (``--polling``, network filesystems): there are no close events,
  so a file is ready once it has gone ``max(settle, poll interval)`` without
  a change.

In both cases the file's size, mtime and inode must be the same when its
quiet period ends as at its last event, else it waits again.

Exactly once: a file has at most one pending entry and is never in work
twice at a time; when its turn comes the pipeline's up-to-date check (outputs
newer than the input) drops events that changed nothing, so catch-up scans,
late events and restarts redo nothing.  A file that changed while it was
being processed is done again, forced, as its outputs may be newer than the
change yet made from the old content.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from watchdog.events import (
    DirDeletedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from . import storage
from .ops import job_id_for
from .pipeline import Interrupted, Pipeline, Result, Task, list_inputs
from .storage import default_out_dir, is_candidate
from .storage.local import LocalStore

# watchdog watches local folders: every file the watcher looks at is the local store's.
_files = LocalStore()

log = logging.getLogger("imgtool")

DEFAULT_SETTLE = 0.5
DEFAULT_POLL_INTERVAL = 1.0
# inotify: how long a file seen written to but not closed must stay unchanged.
# Long, as an upload streamed from a slow client can stall that long with the
# file open; only files whose close is lost pay it.
NO_CLOSE_QUIET = 10.0
# The catch-up scan stops feeding files while this many wait their turn, so a
# huge backlog never sits in memory at once.
SCAN_BACKLOG = 256
# The feeder's longest sleep: bounds how late it notices a stop.
MAX_WAIT = 0.5
# After a second signal, how long threads get to notice it before they are left.
ABORT_GRACE = 5.0

# What an event says about a file.
WRITING = "writing"  # modified: a writer may still have it open
CREATED = "created"  # appeared: new (writes follow) or whole (came with a folder)
CLOSED = "closed"  # closed after writing, or renamed into place: whole
TOUCHED = "touched"  # attributes changed (touch, chmod): as whole as it was
SCANNED = "scanned"  # found by a catch-up scan

# The events asked for.  Without FileOpenedEvent and FileClosedNoWriteEvent
# the kernel reports no reads, ours included.
EVENT_FILTER = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent,
    FileDeletedEvent, FileAttribEvent, DirDeletedEvent,
]

FileKey = tuple  # (size, mtime_ns, inode)


def file_key(path: str | os.PathLike) -> FileKey | None:
    """What identifies one version of a regular file; None when it is gone or not a file."""
    return _files.version(path)


def is_watched_candidate(path: str | os.PathLike, root: Path) -> bool:
    """True for an image under ``root`` the watcher should take.

    The rules are storage.is_candidate's, applied to the path below ``root`` so
    that a ``processed`` or hidden folder above DIR does not hide everything,
    plus hidden folders inside DIR (listings prune those, is_candidate does not).
    """
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return False
    return is_candidate(rel) and not any(part.startswith(".") for part in rel.parts[:-1])


@dataclass
class _Pending:
    quiet_until: float  # monotonic time when the file may be taken
    key: FileKey
    closed: bool  # its writing is known to be over
    from_event: bool  # seen changing (not just found by a scan)
    force: bool = False  # redo even if its outputs look up to date


class ReadyTracker:
    """The files waiting their turn, and when each is ready.

    Not thread-safe: the Watcher holds its lock around every call.
    """

    def __init__(self, settle: float = DEFAULT_SETTLE, needs_close: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.settle = settle
        self.needs_close = needs_close
        self.clock = clock
        self.wall_clock = wall_clock
        self.pending: dict[str, _Pending] = {}
        self.in_work: set[str] = set()

    def _quiet(self, closed: bool) -> float:
        if closed or not self.needs_close:
            return self.settle
        return max(self.settle, NO_CLOSE_QUIET)

    def note(self, path: str, kind: str) -> None:
        """Record an event (or a scan's find) for ``path``."""
        key = file_key(path)
        if key is None:
            self.pending.pop(path, None)
            return
        now = self.clock()
        entry = self.pending.get(path)
        if kind == CLOSED:
            closed = True
        elif kind == WRITING:
            closed = False
        elif kind == CREATED:
            # A file created under a watch starts empty and every write to it
            # is reported (WRITING), so one that has content at its creation
            # event and no write after it was written before the watch saw
            # it: watchdog reports the contents of a folder just moved in or
            # just made (mkdir; write) as creations, and no close follows.
            closed = key[0] > 0
        else:  # TOUCHED, SCANNED
            closed = entry.closed if entry is not None else True
        quiet_until = now + self._quiet(closed)
        if kind == SCANNED:
            # A file untouched for `settle` already is ready now.
            age = self.wall_clock() - key[1] / 1e9
            quiet_until = now + max(0.0, self._quiet(closed) - max(0.0, age))
        if entry is None:
            self.pending[path] = _Pending(quiet_until, key, closed, from_event=kind != SCANNED)
        else:
            entry.quiet_until, entry.key, entry.closed = quiet_until, key, closed
            entry.from_event = entry.from_event or kind != SCANNED

    def forget(self, path: str) -> None:
        self.pending.pop(path, None)

    def knows(self, path: str) -> bool:
        return path in self.pending or path in self.in_work

    def take_ready(self) -> tuple[str, bool, bool] | None:
        """A ready file, whether to force it and whether it was seen changing; or None.

        The file is marked in work until ``finish``.
        """
        now = self.clock()
        for path, entry in list(self.pending.items()):
            if entry.quiet_until > now or path in self.in_work:
                continue
            key = file_key(path)
            if key is None:
                del self.pending[path]
                continue
            if key != entry.key:
                # Changed with no event seen (polling between two looks, or a
                # lost event): still being written, wait again.
                entry.key = key
                entry.quiet_until = now + self._quiet(entry.closed)
                continue
            del self.pending[path]
            self.in_work.add(path)
            return path, entry.force, entry.from_event
        return None

    def next_due(self) -> float | None:
        """When the next pending file's quiet period ends (monotonic), or None."""
        due = [e.quiet_until for p, e in self.pending.items() if p not in self.in_work]
        return min(due) if due else None

    def finish(self, path: str, changed: bool) -> None:
        """``path`` is out of work; ``changed``: it was rewritten meanwhile."""
        self.in_work.discard(path)
        if not changed:
            return
        entry = self.pending.get(path)
        if entry is None:
            key = file_key(path)
            if key is None:
                return
            entry = self.pending[path] = _Pending(
                self.clock() + self._quiet(False), key, closed=False, from_event=True)
        entry.force = True


class _Events(FileSystemEventHandler):
    def __init__(self, watcher: "Watcher"):
        self.watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        self.watcher._on_event(event)


class _OverflowHook(logging.Handler):
    """Turns watchdog's report of a kernel event-queue overflow into a rescan.

    watchdog (7.x) handles IN_Q_OVERFLOW by rebuilding its watches and
    logging a warning; it tells no event handler.  Events were lost, so the
    only safe answer is to look at every file again.
    """

    def __init__(self, on_overflow: Callable[[], None]):
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                self.on_overflow()
        except Exception:  # a logging handler must never raise
            pass


OVERFLOW_LOGGER = "watchdog.observers"


class Watcher:
    """Watches ``root`` and feeds ready images to ``pipeline``'s pool, ``jobs`` at a time at most."""

    def __init__(
        self,
        root: str | os.PathLike,
        pipeline: Pipeline,
        *,
        jobs: int | None = None,
        polling: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        settle: float = DEFAULT_SETTLE,
        initial_scan: bool = True,
        on_result: Callable[[Result], None] | None = None,
    ):
        self.root = _files.resolve_folder(root)
        self.pipeline = pipeline
        self.jobs = max(1, jobs or pipeline.jobs)
        self.poll_interval = poll_interval
        self.initial_scan = initial_scan
        self.on_result = on_result
        self.kind = "polling" if polling else ("inotify" if _has_inotify() else "native")
        quiet = max(settle, poll_interval) if polling else settle
        # Only inotify reports closes; elsewhere the quiet period is all there is.
        self._tracker = ReadyTracker(quiet, needs_close=self.kind == "inotify")
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._rescan = threading.Event()
        self.root_gone = threading.Event()
        self._threads: list[threading.Thread] = []
        self._observer = None
        self._hook = _OverflowHook(self.request_rescan)
        self.counts = {"done": 0, "failed": 0, "skipped": 0}
        self._warned_links: set[Path] = set()  # links to outside the folder, said once each
        self._count_lock = threading.Lock()

    @property
    def quiet(self) -> float:
        """The settle time in force (with polling, at least the poll interval)."""
        return self._tracker.settle

    @property
    def observer_name(self) -> str:
        if self.kind == "polling":
            return f"polling every {self.poll_interval:g} s"
        return self.kind

    # -- life cycle --------------------------------------------------------

    def start(self) -> None:
        if self.kind == "polling":
            from watchdog.observers.polling import PollingObserver

            observer = PollingObserver(timeout=self.poll_interval)
        elif self.kind == "inotify":
            from watchdog.observers.inotify import InotifyObserver

            # Full events: a file moved in from outside DIR arrives as a move
            # (whole), not as a creation (which would wait for a close).
            observer = InotifyObserver(generate_full_events=True)
        else:
            from watchdog.observers import Observer

            observer = Observer()
        observer.schedule(_Events(self), str(self.root), recursive=True, event_filter=EVENT_FILTER)
        watchdog_log = logging.getLogger(OVERFLOW_LOGGER)
        if not watchdog_log.isEnabledFor(logging.WARNING):
            watchdog_log.setLevel(logging.WARNING)  # the overflow record must reach the hook
        watchdog_log.addHandler(self._hook)
        # Watch first, then scan: a file landing in between is seen by one or both.
        observer.start()
        self._observer = observer
        self._spawn(self._feed, "imgtool-watch-feed")
        self._spawn(self._scan_loop, "imgtool-watch-scan")
        if self.initial_scan:
            self._rescan.set()

    def _spawn(self, target, name) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, abort: bool = False) -> None:
        """Stop taking files; let those in work finish (``abort``: interrupt them).

        The pipeline's pool drains (its policy: a second signal aborts it).
        After an abort, threads get ABORT_GRACE to notice; one stuck in a
        read (a hung network filesystem) is left behind: it is a daemon, and
        no output is ever half-written.
        """
        pool = self.pipeline.pool
        if abort:
            pool.abort()
        self._stopping.set()
        self._rescan.set()
        with self._cond:
            self._cond.notify_all()
        if self._observer is not None:
            try:
                self._observer.stop()
            except (KeyError, OSError) as exc:
                # watchdog's inotify forgets a watch whose folder was renamed or swapped for a link
                # (KeyError on its path) as it removes them: nothing is left to stop.
                log.debug("stopping the observer: %r", exc)
        aborted_at = None
        for t in self._threads:
            while t.is_alive():
                t.join(0.1)
                if pool.aborting:
                    aborted_at = aborted_at or time.monotonic()
                    if time.monotonic() - aborted_at > ABORT_GRACE:
                        break
        if not pool.drain():
            pool.wait_idle(ABORT_GRACE)
        if self._observer is not None:
            self._observer.join()
            self._observer = None
        logging.getLogger(OVERFLOW_LOGGER).removeHandler(self._hook)

    def request_rescan(self) -> None:
        """Events were lost: look at every file again (once, however often it is asked)."""
        if self._stopping.is_set():
            return
        if not self._rescan.is_set():
            log.warning("event queue overflowed: some events were lost; rescanning %s", self.root)
        self._rescan.set()

    # -- events ------------------------------------------------------------

    def _on_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if event.is_directory:
            if isinstance(event, DirDeletedEvent) and Path(src) == self.root:
                self.root_gone.set()
            return
        if isinstance(event, FileMovedEvent):
            # Watched with generate_full_events, a file moved in from outside
            # has no source, one moved out no destination.
            if src:
                self._forget(src)
            dest = os.fsdecode(event.dest_path)
            if dest:
                self._note(dest, CLOSED)
        elif isinstance(event, FileClosedEvent):
            self._note(src, CLOSED)
        elif isinstance(event, FileModifiedEvent):
            self._note(src, WRITING)
        elif isinstance(event, FileCreatedEvent):
            self._note(src, CREATED)
        elif isinstance(event, FileAttribEvent):
            self._note(src, TOUCHED)
        elif isinstance(event, FileDeletedEvent):
            self._forget(src)

    def _note(self, path: str, kind: str) -> None:
        if not is_watched_candidate(path, self.root):
            return
        with self._cond:
            self._tracker.note(path, kind)
            self._cond.notify_all()

    def _forget(self, path: str) -> None:
        with self._cond:
            self._tracker.forget(path)

    # -- catch-up scans ------------------------------------------------------

    def _scan_loop(self) -> None:
        while True:
            self._rescan.wait()
            if self._stopping.is_set():
                return
            self._rescan.clear()
            try:
                self._scan()
            except OSError as exc:
                log.error("scanning %s: %s", self.root, exc)

    def _scan(self) -> None:
        found = 0
        for src in list_inputs(self.root):
            if self._stopping.is_set():
                return
            path = str(src)
            if not is_watched_candidate(path, self.root):
                continue
            if self.pipeline.up_to_date(Task(src, default_out_dir(src))):
                continue
            with self._cond:
                while len(self._tracker.pending) >= SCAN_BACKLOG and not self._stopping.is_set():
                    self._cond.wait(MAX_WAIT)
                if not self._tracker.knows(path):
                    self._tracker.note(path, SCANNED)
                    found += 1
                self._cond.notify_all()
        log.info("catch-up scan of %s: %d file%s to process", self.root, found, "" if found == 1 else "s")

    # -- work ----------------------------------------------------------------

    def _take(self) -> tuple[str, bool, bool] | None:
        with self._cond:
            while not self._stopping.is_set():
                item = self._tracker.take_ready()
                if item is not None:
                    due = self._tracker.next_due()
                    if due is not None and due <= time.monotonic():
                        self._cond.notify()  # more is ready: wake another worker
                    return item
                due = self._tracker.next_due()
                timeout = MAX_WAIT if due is None else min(MAX_WAIT, max(0.001, due - time.monotonic()))
                self._cond.wait(timeout)
        return None

    def _feed(self) -> None:
        """Hand ready files to the pipeline's pool, each once a worker is free for it."""
        pool = self.pipeline.pool
        while not self._stopping.is_set():
            slot = pool.acquire(timeout=MAX_WAIT, upto=self.jobs)
            if slot is None:
                if pool.closing:
                    return
                continue
            item = self._take()
            if item is None:
                slot.release()
                return
            pool.submit(lambda item=item: self._work(item), slot)

    def _work(self, item: tuple[str, bool, bool]) -> None:
        """Process one ready file in the pool, then report it."""
        path, force, from_event = item
        before = file_key(path)
        result = None
        try:
            src = Path(path)
            task = self._confined_task(src)
            if task is None:
                raise _Skipped()
            if from_event and not force:
                force = self._replaced_since_outputs(task)
            log.debug("%s: started", _rel(src, self.root))
            result = self.pipeline.process(task, force=force)
        except (Interrupted, _Skipped):
            pass
        except Exception:  # a bug must not stop the watcher: say it, go on
            log.exception("internal error processing %s", path)
        after = file_key(path)
        with self._cond:
            self._tracker.finish(path, changed=after is not None and after != before)
            self._cond.notify_all()
        if result is None:
            return
        try:
            self._report(result)
        except Exception:  # e.g. stdout closed under --json: say it, go on
            log.exception("reporting %s", path)

    def _confined_task(self, src: Path) -> Task | None:
        """The task of ``src``, confined to the watched folder; None for a link leading out of it.

        Every open and write is made from the watched folder by handle,
        following no link below it: a link to a file inside is read at its
        target (its outputs named by the link), a link leading outside is
        skipped with one warning, and a ``processed`` that is a link is never
        written through (the write fails as an I/O error).
        """
        target = src
        if os.path.islink(src):
            real = os.path.realpath(src)
            root = os.fspath(self.root)
            if not (real == root or real.startswith(root.rstrip(os.sep) + os.sep)):
                with self._count_lock:
                    warned = src in self._warned_links
                    self._warned_links.add(src)
                if not warned:
                    log.warning("%s: a symlink to %s, outside %s: skipped", _rel(src, self.root), real, self.root)
                return None
            target = Path(real)
        return Task(_files.beneath(target, self.root), _files.beneath(default_out_dir(src), self.root),
                    job_id=job_id_for(src.name))

    def _replaced_since_outputs(self, task: Task) -> bool:
        """True when the input changed after its outputs were made, whatever its mtime says.

        The up-to-date check compares mtimes, and a file copied with its
        times kept (cp -p, rsync -t) or an older file renamed over it has an
        mtime older than the outputs.  Its ctime, which no one can set, is
        still newer.  Only for files seen changing: a catch-up scan trusts
        mtimes like `imgtool process` does, so a chmod -R redoes nothing.
        """
        # No outputs: False; the up-to-date check says so itself.
        return _files.changed_since(task.src, list(self.pipeline.outputs(task).values()))

    def _report(self, result: Result) -> None:
        src = result.task.src
        rel = _rel(src, self.root)
        with self._count_lock:
            self.counts[result.status] += 1
        if result.status == "done":
            outs = ", ".join(storage.name(p) for p in result.outputs.values())
            log.info("%s -> %s (%.0f ms)", rel, outs, result.duration_ms)
        elif result.status == "failed":
            if not _files.exists(src):
                log.debug("%s: gone before it could be processed", rel)
            else:
                log.error("%s: %s", rel, result.error.message if result.error else "failed")
        else:
            log.debug("%s: up to date", rel)
            return
        if self.on_result is not None:
            self.on_result(result)


class _Skipped(Exception):
    """A file the watcher does not process (a link leading outside its folder)."""


def _has_inotify() -> bool:
    try:
        import watchdog.observers.inotify  # noqa: F401  (imports only on Linux)
    except (ImportError, OSError):
        return False
    return True


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
