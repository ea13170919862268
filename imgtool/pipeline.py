"""Decode -> operations -> encode for one image or many; used by process, watch and queue."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from . import imageio, storage
from .backends import Backend, get_backend
from .errors import ImgtoolError, ResourceExhausted
from .imageio import WEBP_CONTENT_TYPE
from . import ops
from .ops import Settings, job_id_for
from .pixels import Scratch
from .storage import Location, Output

log = logging.getLogger("imgtool")

# How many images may be queued or in work per worker thread: enough to keep
# every core busy, few enough that memory stays bounded on huge folders.
IN_FLIGHT_PER_WORKER = 2
# The most images one pool works on at once (-j, -w).
MAX_JOBS = 256


def default_jobs() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Interrupted(BaseException):
    """Raised inside a worker when the run is being stopped.

    A BaseException so that no ``except Exception`` on the way swallows it.
    """


@dataclass
class Task:
    """One input and where its outputs go (locations of their stores: paths, or URLs)."""

    src: Location
    out_dir: Location
    job_id: str | None = None
    settings: Settings | None = None

    def __post_init__(self):
        self.src = storage.location(self.src)
        self.out_dir = storage.location(self.out_dir)
        if self.job_id is None:
            self.job_id = job_id_for(storage.name(self.src))


@dataclass
class Result:
    task: Task
    status: str  # "done", "skipped" or "failed"
    outputs: dict[str, Location] = field(default_factory=dict)
    error: ImgtoolError | None = None
    duration_ms: float = 0.0
    size: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        d = {
            "input": str(self.task.src),
            "jobId": self.task.job_id,
            "status": self.status,
            "outputs": {op: str(p) for op, p in self.outputs.items()},
            "durationMs": round(self.duration_ms, 1),
        }
        if self.size:
            d["width"], d["height"] = self.size
        if self.error is not None:
            d["error"] = self.error.to_dict()
        return d


class Pipeline:
    """Turns tasks into outputs with one backend, shared by every thread."""

    def __init__(
        self,
        settings: Settings,
        backend: str | Backend = "auto",
        jobs: int | None = None,
    ):
        self.settings = settings
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.backend.check(settings.ops)
        self.jobs = max(1, jobs or default_jobs())
        self.stop_event = threading.Event()
        # Held while outputs are being renamed into place, so that stop()
        # returns only once no write is half done.
        self._write_lock = threading.Lock()
        # Each thread's output buffers, reused from one image to the next.
        self._local = threading.local()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def outputs(self, task: Task) -> dict[str, Location]:
        """Where each of ``task``'s outputs goes, by operation."""
        settings = task.settings or self.settings
        store = storage.for_location(task.out_dir)
        return {name: store.join(task.out_dir, ops.get(name).output_name(task.job_id, settings))
                for name in settings.ops}

    def up_to_date(self, task: Task) -> bool:
        """True when every output exists and is up to date with the input (its store decides).

        Each output goes with its operation's fingerprint of the settings that
        decide it, so a store can tell outputs made with other settings.
        """
        settings = task.settings or self.settings
        outputs = self.outputs(task)
        fingerprints = {loc: ops.get(name).fingerprint(settings) for name, loc in outputs.items()}
        return storage.for_location(task.src).fresh(task.src, fingerprints)

    def process(self, task: Task, force: bool = True) -> Result:
        """Make ``task``'s outputs, all or none; never raises an ImgtoolError."""
        start = time.perf_counter()
        if not force and self.up_to_date(task):
            return Result(task, "skipped", self.outputs(task))
        try:
            outputs, size = self._run(task)
        except ImgtoolError as exc:
            return Result(task, "failed", error=exc, duration_ms=_ms(start))
        except MemoryError:
            err = ResourceExhausted("out of memory", task.src)
            return Result(task, "failed", error=err, duration_ms=_ms(start))
        return Result(task, "done", outputs, duration_ms=_ms(start), size=size)

    def _run(self, task: Task) -> tuple[dict[str, Location], tuple[int, int]]:
        settings = task.settings or self.settings
        with imageio.open_image(task.src, settings.max_pixels) as opened:
            img = opened.decode()
        size = img.size
        self._check_stop()
        pixels = self.backend.apply_image(img, settings, self._scratch())
        del img
        targets = self.outputs(task)
        encoded = []
        for op in settings.ops:
            self._check_stop()
            data = imageio.encode_webp(
                pixels.pop(op), settings.quality[op], settings.effort, settings.lossless
            )
            encoded.append(Output(targets[op], data, WEBP_CONTENT_TYPE))
        self._check_stop()
        return self._write_all(task, encoded), size

    def _write_all(self, task: Task, encoded: list[Output]) -> dict[str, Location]:
        """Write every output, or none (the store removes those of this attempt on failure)."""
        with self._write_lock:
            self._check_stop()
            written = storage.for_location(task.out_dir).write_outputs(encoded)
        settings = task.settings or self.settings
        return dict(zip(settings.ops, written))

    def _scratch(self) -> Scratch:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = Scratch()
        return scratch

    def stop(self) -> None:
        """Stop every worker at its next step; return once no write is in progress."""
        self.stop_event.set()
        with self._write_lock:
            pass

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise Interrupted()

    def map(self, tasks: Iterable[Task], force: bool = False) -> Iterator[Result]:
        """Process ``tasks`` on ``jobs`` threads; yield results as they finish.

        At most ``IN_FLIGHT_PER_WORKER * jobs`` tasks are taken from the
        iterable ahead of the results, so a folder of any size runs in bounded
        memory.  Decoding, the backends and WebP encoding release the GIL, so
        threads use every core.  Threads are daemons: on Ctrl-C the caller
        sets ``stop_event`` and returns without waiting for an encode to end;
        nothing half-written is ever visible since every write is atomic.
        """
        if self.jobs == 1:
            for task in tasks:
                self._check_stop()
                yield self.process(task, force)
            return
        todo: queue.Queue = queue.Queue(maxsize=IN_FLIGHT_PER_WORKER * self.jobs)
        done: queue.Queue = queue.Queue()
        end = object()

        def worker():
            while True:
                task = todo.get()
                if task is end:
                    return
                try:
                    done.put(self.process(task, force))
                except Interrupted:
                    return
                except BaseException as exc:  # report, never lose the thread silently
                    done.put(exc)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.jobs)]
        for t in threads:
            t.start()
        pending = 0
        it = iter(tasks)
        exhausted = False
        try:
            while not exhausted or pending:
                # Keep the queue full without blocking while results wait.
                while not exhausted and not todo.full():
                    try:
                        todo.put_nowait(next(it))
                        pending += 1
                    except StopIteration:
                        exhausted = True
                if not pending:
                    continue
                item = self._get(done)
                pending -= 1
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if exhausted and not pending:
                for _ in threads:
                    todo.put(end)
            else:
                self.stop_event.set()

    def _get(self, done: queue.Queue):
        # A short timeout keeps the main thread responsive to Ctrl-C.
        while True:
            try:
                return done.get(timeout=0.1)
            except queue.Empty:
                self._check_stop()

    def close(self) -> None:
        self.backend.close()


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0



# ---- inputs ------------------------------------------------------------------


def header_pixels(location: Location) -> int | None:
    """The pixel count in the header of ``location``, or None when it cannot be read."""
    try:
        # Only the header is parsed, and only for the accepted formats.
        info = imageio.probe(location, max_pixels=1 << 62)
    except ImgtoolError:
        return None
    return info.width * info.height


def list_inputs(root: Location, ordered: bool = True, on_error=None) -> Iterator[Location]:
    """The images under ``root`` that process, watch and enqueue take, largest first in each folder.

    ``ordered=False`` skips reading headers (to count).  A folder that cannot
    be listed is passed to ``on_error(folder, exc)``.
    """
    return storage.for_location(root).list_images(
        root, ordered=ordered, rank=header_pixels if ordered else None, on_error=on_error)


def count_inputs(paths: Iterable[Location]) -> int:
    """How many inputs ``paths`` (files and folders) hold, as process would take them."""
    n = 0
    for p in paths:
        store = storage.for_location(p)
        n += sum(1 for _ in list_inputs(p, ordered=False)) if store.kind(p) == "folder" else 1
    return n
