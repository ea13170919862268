"""Decode -> operations -> encode for one image, and the one bounded pool process, watch and queue submit to.

``Pipeline.process`` makes one task's outputs (all or none); ``Pool`` runs
tasks on worker threads with a bound on the images in flight and one
drain/abort policy; ``Signals`` is the one signal policy (first signal
drains, second aborts); ``Pipeline.map`` feeds a pool from an iterable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from . import imageio, storage
from .backends import Backend, get_backend
from .errors import ImgtoolError, JobTimeout, ResourceExhausted
from . import ops
from .ops import Settings, job_id_for
from .pixels import Scratch
from .storage import Location, Output

log = logging.getLogger("imgtool")

# How many images may be queued or in work per worker thread: enough to keep
# every core busy, few enough that memory stays bounded on huge folders.
IN_FLIGHT_PER_WORKER = 2
# The longest a thread waiting on the pool sleeps: bounds how late it notices a stop.
MAX_WAIT = 0.1


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
    # Allowed roots (as their stores' root() gave them): src and out_dir are confined to them
    # when the task runs, and opened from them by handle (process --allow-root).
    roots: tuple = ()

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
    # {"thumbhash": ..., "blurhash": ...} of the image, when it was decoded.
    placeholders: dict[str, str] | None = None
    # Outputs the settings ask for that this image does not get, by key, with why
    # (a further thumbnail width above the image's: never upscaled).
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {
            "input": str(self.task.src),
            "jobId": self.task.job_id,
            "status": self.status,
            "outputs": {op: str(p) for op, p in self.outputs.items()},
            "durationMs": round(self.duration_ms, 1),
        }
        d.update(self.details())
        if self.error is not None:
            d["error"] = self.error.to_dict()
        return d

    def details(self) -> dict:
        """What ``--json`` lines and ``image:done`` entries add about the image: size, skipped outputs, placeholders."""
        d: dict = {}
        if self.size:
            d["width"], d["height"] = self.size
        if self.skipped:
            d["skippedOutputs"] = dict(self.skipped)
        if self.placeholders is not None:
            d["placeholders"] = dict(self.placeholders)
        return d


class Pipeline:
    """Turns tasks into outputs with one backend, shared by every thread of its pool."""

    def __init__(
        self,
        settings: Settings,
        backend: str | Backend = "auto",
        jobs: int | None = None,
        *,
        job_timeout: float | None = None,
        max_memory: int | None = None,
    ):
        self.settings = settings
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.backend.check(settings.ops)
        self.jobs = max(1, jobs or default_jobs())
        self.pool = Pool(self.jobs, time_budget=job_timeout, memory_budget=max_memory)
        # Set when the pool aborts: every step checks it.
        self.stop_event = self.pool.stop_event
        # Counts the writes in progress (several at once: uploads overlap), so
        # that stop() returns only once no write is half done.
        self._writes = threading.Condition()
        self._writing = 0
        # Each thread's output buffers, reused from one image to the next.
        self._local = threading.local()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def outputs(self, task: Task) -> dict[str, Location]:
        """Where each of ``task``'s outputs goes, by output key (an operation's name, or ``thumbnail-<W>``)."""
        settings = task.settings or self.settings
        store = storage.for_location(task.out_dir)
        return {key: store.join(task.out_dir, name) for key, name in ops.output_names(task.job_id, settings).items()}

    def up_to_date(self, task: Task) -> bool:
        """True when every output exists and is up to date with the input (its store decides).

        Each output goes with its operation's fingerprint of the settings that
        decide it, so a store tells outputs made with other settings apart.
        """
        return not self._stale(task)[1]

    def stale_outputs(self, task: Task) -> dict[str, Location]:
        """The outputs a run without ``--force`` would make for ``task``, by key (none: it is up to date)."""
        outputs, stale = self._stale(task)
        return {key: loc for key, loc in outputs.items() if key in stale}

    def _stale(self, task: Task) -> tuple[dict[str, Location], set[str]]:
        """The outputs ``task`` would have, by key, and the keys of those not up to date."""
        settings = task.settings or self.settings
        outputs = self.outputs(task)
        owner = {key: op for op in map(ops.get, settings.ops) for key in op.output_keys(settings)}
        if any(len(op.output_keys(settings)) > 1 for op in map(ops.get, settings.ops)):
            # Which of several widths this input gets depends on its size: its header says.
            try:
                info = imageio.probe(task.src, settings.max_pixels)
            except ImgtoolError:
                return outputs, set(outputs)  # processing it will say what is wrong
            for op in map(ops.get, settings.ops):
                for key in op.outputs(settings, info.width, info.height)[1]:
                    outputs.pop(key, None)
        fingerprints = {loc: owner[key].fingerprint(settings, key) for key, loc in outputs.items()}
        stale = set(storage.judge_of(task.src, task.out_dir).stale(task.src, fingerprints))
        return outputs, {key for key, loc in outputs.items() if loc in stale}

    def process(self, task: Task, force: bool = True) -> Result:
        """Make ``task``'s outputs, all or none; never raises an ImgtoolError.

        Without ``force`` only the outputs that are not up to date are made
        (a changed ``--thumb-width`` redoes the thumbnail alone); the result
        lists the others too.  Nothing stale: "skipped".

        Under a time budget (``job_timeout``) the work runs in a thread of its
        own that this one watches (see ``timed``): past the budget the task is
        failed as ``timeout`` here and now, whatever step it is stuck in.
        """
        running = current_task()
        if running is not None and running.pool.time_budget is not None:
            from .timed import run_timed

            return run_timed(self, running, task, force)
        return self._process(task, force)

    def _process(self, task: Task, force: bool = True) -> Result:
        start = time.perf_counter()
        redo = None
        kept: dict[str, Location] = {}
        if not force:
            outputs, redo = self._stale(task)
            if not redo:
                return Result(task, "skipped", outputs)
            kept = {key: loc for key, loc in outputs.items() if key not in redo}
        try:
            if task.roots:
                task = _confined(task)
            result = self._run(task, start, redo)
        except ImgtoolError as exc:
            if isinstance(exc, JobTimeout) and exc.path is None:
                exc = JobTimeout(exc.message, task.src)
            return Result(task, "failed", error=exc, duration_ms=_ms(start))
        except MemoryError:
            err = ResourceExhausted("out of memory", task.src)
            return Result(task, "failed", error=err, duration_ms=_ms(start))
        if kept:
            order = list(self.outputs(task))
            merged = {**kept, **result.outputs}
            result.outputs = {key: merged[key] for key in order if key in merged}
        return result

    def _run(self, task: Task, start: float, redo: set[str] | None = None) -> Result:
        settings = task.settings or self.settings
        running = current_task()
        with imageio.open_image(task.src, settings.max_pixels) as opened:
            if running is not None:
                running.estimate = self._memory_estimate(opened, settings)
                running.admit(opened.decoded_bytes)
            img = opened.decode()
        size = img.size
        self._check_stop()
        run_settings = settings
        if redo is not None:
            # Only the operations with an output to redo, and those the placeholders are made
            # from (so they come out as in a full run); only the outputs to redo are written.
            wanted = tuple(op.name for op in map(ops.get, settings.ops)
                           if op.placeholder_source or set(op.output_keys(settings)) & redo)
            run_settings = settings.replace(ops=wanted)
        pixels = self.backend.apply_image(img, run_settings, self._scratch())
        self._check_stop()
        owner, skipped = {}, {}
        for op in map(ops.get, settings.ops):
            made, passed = op.outputs(settings, *size)
            if op.name in run_settings.ops:
                owner.update(dict.fromkeys(made, op))
            skipped.update(passed)
        hashes = self._placeholders(img, pixels, owner)
        del img
        targets = self.outputs(task)
        encoded = []
        for key in [k for k in targets if k in owner and (redo is None or k in redo)]:
            self._check_stop()
            op = owner[key]
            data, content_type = imageio.encode(
                pixels.pop(key), settings.format, settings.quality[op.name], op.name,
                effort=settings.effort, lossless=settings.lossless, speed=settings.avif_speed)
            encoded.append((key, Output(targets[key], data, content_type, op.fingerprint(settings, key))))
        self._check_stop()
        written = self._write_all(task, [out for _key, out in encoded])
        return Result(task, "done", dict(zip((key for key, _out in encoded), written)), duration_ms=_ms(start),
                      size=size, placeholders=hashes, skipped=skipped)

    @staticmethod
    def _memory_estimate(opened, settings: Settings) -> int:
        """The memory the image will take, from its header: see budgets.memory_estimate."""
        from .budgets import memory_estimate

        w, h = opened.image.size
        sizes = [op.output_size(w, h, settings) for op in map(ops.get, settings.ops)]
        return memory_estimate(opened.decoded_bytes, w * h, sizes)

    @staticmethod
    def _placeholders(img, pixels: dict, owner: dict) -> dict[str, str]:
        """ThumbHash and BlurHash from pixels already made: the smallest fit output of an operation that
        offers its pixels for them (the thumbnail's), else a reduce of the decoded image."""
        from . import placeholders

        offered = {key: pixels[key] for key, op in owner.items() if op.placeholder_source and key in pixels}
        return placeholders.of_image(img, list(offered.values()))

    def _write_all(self, task: Task, encoded: list[Output]) -> list[Location]:
        """Write every output, or none (the store removes those of this attempt on failure)."""
        running = current_task()
        # A task past its time budget was failed already: it must not write (see timed.py).
        with running.write_lock if running is not None else contextlib.nullcontext():
            with self._writes:
                self._check_stop()
                self._writing += 1
            try:
                written = storage.for_location(task.out_dir).write_outputs(encoded)
                if running is not None:
                    running.committed = True  # written: the result stands, even past the deadline
                return written
            finally:
                with self._writes:
                    self._writing -= 1
                    self._writes.notify_all()

    def _scratch(self) -> Scratch:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = Scratch()
        return scratch

    def stop(self) -> None:
        """Abort every task at its next step; return once no write is in progress."""
        self.pool.abort()
        with self._writes:
            self._writes.wait_for(lambda: not self._writing)

    def _check_stop(self) -> None:
        running = current_task()
        if running is not None:
            running.check()
        elif self.stop_event.is_set():
            raise Interrupted()

    def map(self, tasks: Iterable[Task], force: bool = False) -> Iterator[Result]:
        """Process ``tasks`` in the pool; yield results as they finish.

        At most the pool's capacity (``IN_FLIGHT_PER_WORKER`` waiting per
        worker, plus one in work per worker) is taken from the iterable ahead
        of the results, so a folder of any size runs in bounded memory.  With
        one worker the tasks run in the calling thread.  Raises Interrupted
        when the pool aborts, or closes before every task was taken.
        Threads are daemons: on an abort the caller returns without waiting
        for an encode to end; nothing half-written is ever visible since
        every write is atomic.
        """
        pool = self.pool
        if pool.workers == 1:
            for task in _one_ahead(tasks, lambda task: self._prefetch(task, force)):
                pool.check_grace()
                self._check_stop()
                if pool.closing:
                    raise Interrupted()
                yield pool.run_here(lambda task=task: self.process(task, force))
            return
        done: queue.SimpleQueue = queue.SimpleQueue()
        pending = 0
        it = iter(tasks)
        exhausted = False
        try:
            while not exhausted or pending:
                # Keep the pool full without blocking while results wait.
                while not exhausted:
                    slot = pool.acquire(timeout=0, upto=pool.capacity)
                    if slot is None:
                        break
                    try:
                        task = next(it)
                    except StopIteration:
                        slot.release()
                        exhausted = True
                        break
                    self._prefetch(task, force)
                    pool.submit(lambda task=task: self.process(task, force), slot,
                                on_done=lambda result, error, slot=slot: done.put((result, error, slot)),
                                release=False)
                    pending += 1
                if not pending:
                    if pool.closing:
                        raise Interrupted()
                    continue
                result, error, slot = self._get(done)
                pending -= 1
                slot.release()
                if error is not None:
                    raise error
                yield result
        finally:
            if not (exhausted and not pending):
                pool.abort()

    def _prefetch(self, task: Task, force: bool) -> None:
        """Let the input's store start reading it while the pool works on those before it."""
        skip = None if force else (lambda: self.up_to_date(task))
        storage.for_location(task.src).prefetch(task.src, skip)

    def _get(self, done: queue.SimpleQueue):
        # A short timeout keeps the calling thread responsive to signals.
        while True:
            try:
                return done.get(timeout=MAX_WAIT)
            except queue.Empty:
                self.pool.check_grace()
                self._check_stop()

    def close(self) -> None:
        self.pool.shutdown()
        self.backend.close()


def _confined(task: Task) -> Task:
    """``task`` with its input and output folder confined to its roots (PathNotAllowed outside them)."""
    src = storage.for_location(task.src).confine(task.src, task.roots, "the input")
    out_dir = storage.for_location(task.out_dir).confine(task.out_dir, task.roots, "the output folder")
    return Task(src, out_dir, job_id=task.job_id, settings=task.settings)


def _one_ahead(tasks: Iterable[Task], hint: Callable[[Task], None]) -> Iterator[Task]:
    """``tasks``, each yielded once ``hint`` was given the one after it (its input fetched meanwhile)."""
    it = iter(tasks)
    following = next(it, None)
    while following is not None:
        task, following = following, next(it, None)
        if following is not None:
            hint(following)
        yield task


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0



# ---- the pool --------------------------------------------------------------------


class TaskContext:
    """What a task running in the pool may ask of it: memory admission, its deadline, whether to stop.

    The pool makes one per task and the task's thread finds it with
    ``current_task()``; the pipeline's steps call ``check()`` between steps
    and ``admit()`` once the header has said how large the image is.
    """

    __slots__ = ("pool", "started", "deadline", "admitted", "estimate", "abandoned", "write_lock", "detached",
                 "committed")

    def __init__(self, pool: "Pool"):
        self.pool = pool
        self.started = time.monotonic()
        # When the task's time is up (monotonic), or None: no budget.  The
        # pool's owner learns of an overrun from Pool.overdue().
        self.deadline: float | None = (
            None if pool.time_budget is None else self.started + pool.time_budget)
        self.admitted = 0  # bytes of memory admitted for this task
        # The memory the image will take, when the pipeline estimated it (else its decoded bytes count).
        self.estimate: int | None = None
        # Set when the task was failed for its time budget while its work still ran:
        # that work stops at its next step and never writes (write_lock orders the two).
        self.abandoned = False
        self.write_lock = threading.Lock()
        self.committed = False  # the outputs are written: the task is no longer abandoned
        # Set when the work outlives the pool thread's task: its thread gives the admitted bytes back.
        self.detached = False

    def admit(self, decoded_bytes: int) -> None:
        """Declare the decoded size the task is about to allocate (after reading the header).

        The hook of admission by memory: the pool admits tasks while the sum
        of what they declared stays under its budget.  No budget is kept
        yet, so this records the size and returns at once.
        """
        self.pool._admit(self, decoded_bytes)

    def check(self) -> None:
        """Raise Interrupted when the pool is aborting, JobTimeout past the deadline; the pipeline
        calls it between steps."""
        if self.pool.stop_event.is_set():
            raise Interrupted()
        if self.abandoned or self.overran:
            raise JobTimeout(f"took longer than the time budget of {self.pool.time_budget:g} s (--job-timeout)")

    @property
    def overran(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


_current = threading.local()


def current_task() -> TaskContext | None:
    """The context of the pool task this thread is running, or None outside the pool."""
    return getattr(_current, "task", None)


class Slot:
    """A place among the pool's images in flight, from ``Pool.acquire`` until released."""

    __slots__ = ("_pool", "_held")

    def __init__(self, pool: "Pool"):
        self._pool = pool
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._pool._release()


class Pool:
    """The one bounded pool of worker threads that process, watch and queue all submit images to.

    Bounded by images in flight: a submitter first takes a Slot
    (``acquire``), which waits while ``upto`` images hold one (by default
    the number of workers: a watched file or a queue job is taken only when
    a worker is free for it; ``map`` keeps ``IN_FLIGHT_PER_WORKER`` more per
    worker waiting, which cost nothing to hold).  A slot is given back once
    the task's ``on_done`` has run.  Decoding, the backends and encoding
    release the GIL, so threads use every core.

    One drain and abort policy for every command (see Signals): ``close``
    stops admitting (``acquire`` returns None) and starts the drain,
    ``drain`` waits for the images in flight, ``abort`` makes every task
    stop at its next step (Interrupted).  A drain with a grace period aborts
    when it runs out.
    """

    def __init__(self, workers: int, *, time_budget: float | None = None, memory_budget: int | None = None,
                 name: str = "imgtool-pool"):
        self.workers = max(1, workers)
        self.capacity = self.workers * (1 + IN_FLIGHT_PER_WORKER)
        self.time_budget = time_budget  # seconds per task (None: none); see TaskContext.deadline
        # Bytes the running tasks' images may take together (None: no bound); see _admit.
        self.memory_budget = memory_budget
        self.peak_admitted = 0
        self.name = name
        self.stop_event = threading.Event()
        self._closing = threading.Event()
        self._drain_deadline: float | None = None
        self._cond = threading.Condition()
        self._active = 0  # slots held
        self._admitted = 0  # decoded bytes admitted by running tasks (see TaskContext.admit)
        self._running: set[TaskContext] = set()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    # -- admission --

    def acquire(self, timeout: float | None = None, upto: int | None = None) -> Slot | None:
        """A slot once fewer than ``upto`` (default: the workers) images are in flight.

        None when the pool is closing, or after ``timeout`` seconds.
        """
        limit = min(self.capacity, upto or self.workers)
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._active >= limit and not self._closing.is_set():
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(MAX_WAIT if left is None else min(left, MAX_WAIT))
            if self._closing.is_set():
                return None
            self._active += 1
        return Slot(self)

    def _release(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _admit(self, task: TaskContext, decoded_bytes: int) -> None:
        """Wait until the image's memory fits in the budget beside the others', then count it.

        What is counted is the task's ``estimate`` where the pipeline set one
        (``budgets.memory_estimate``: the decode, its copies, the outputs and
        their encoders' buffers), else the decoded bytes.  An image larger
        than the whole budget runs alone: it waits for every other to finish,
        so it is late but never refused.  A task that waited gets its time
        budget afresh: waiting is not working.
        """
        task.check()  # an abandoned task takes no more memory
        need = decoded_bytes if task.estimate is None else task.estimate
        waited = False
        with self._cond:
            budget = self.memory_budget
            if budget is not None:
                while (self._admitted - task.admitted > 0 and self._admitted - task.admitted + need > budget
                       and not self.stop_event.is_set()):
                    waited = True
                    self._cond.wait(MAX_WAIT)
                if self.stop_event.is_set():
                    raise Interrupted()
            self._admitted += need - task.admitted
            task.admitted = need
            self.peak_admitted = max(self.peak_admitted, self._admitted)
        if waited and task.deadline is not None:
            task.deadline = time.monotonic() + self.time_budget

    @property
    def active(self) -> int:
        """Images in flight: slots held."""
        return self._active

    @property
    def admitted_bytes(self) -> int:
        """What the running tasks declared they decode (TaskContext.admit)."""
        return self._admitted

    def overdue(self) -> list[TaskContext]:
        """The running tasks past their deadline."""
        with self._cond:
            return [t for t in self._running if t.overran]

    # -- running --

    def submit(self, fn: Callable[[], object], slot: Slot,
               on_done: Callable[[object, BaseException | None], None] | None = None,
               release: bool = True) -> None:
        """Run ``fn()`` on a worker thread, then ``on_done(result, error)`` there.

        ``error`` is what ``fn`` raised (Interrupted when the pool aborted
        it).  ``slot`` is given back after ``on_done``, unless ``release`` is
        False (the submitter gives it back itself).
        """
        self._start()
        self._queue.put((fn, slot, on_done, release))

    def run_here(self, fn: Callable[[], object]):
        """Run ``fn()`` in the calling thread as a task of this pool (its context, its accounting)."""
        task = self._begin()
        try:
            return fn()
        finally:
            self._end(task)

    def _start(self) -> None:
        if len(self._threads) >= self.workers:
            return
        with self._cond:
            while len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)

    def _begin(self) -> TaskContext:
        task = TaskContext(self)
        with self._cond:
            self._running.add(task)
        _current.task = task
        return task

    def _end(self, task: TaskContext) -> None:
        _current.task = None
        with self._cond:
            self._running.discard(task)
            if not task.detached:  # else the thread still working gives its memory back (give_back)
                self._admitted -= task.admitted
                task.admitted = 0
            self._cond.notify_all()

    def give_back(self, task: TaskContext) -> None:
        """A detached task's work has ended: its admitted memory is free again."""
        with self._cond:
            self._admitted -= task.admitted
            task.admitted = 0
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, slot, on_done, release = item
            result, error = None, None
            task = self._begin()
            try:
                task.check()
                result = fn()
            except BaseException as exc:  # Interrupted, or a bug: the submitter hears of it
                error = exc
            finally:
                self._end(task)
            try:
                if on_done is not None:
                    on_done(result, error)
            except BaseException:  # noqa: BLE001 - the thread must go on
                log.exception("internal error reporting a result")
            finally:
                if release:
                    slot.release()

    # -- stopping --

    def close(self, grace: float | None = None) -> None:
        """Stop admitting work: the drain begins.  ``grace``: seconds left for what is in flight
        before it is aborted (None: as long as it takes; 0: abort now)."""
        with self._cond:
            if not self._closing.is_set():
                self._drain_deadline = None if grace is None else time.monotonic() + grace
                self._closing.set()
            self._cond.notify_all()
        if grace is not None and grace <= 0:
            self.abort()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    @property
    def aborting(self) -> bool:
        return self.stop_event.is_set()

    def abort(self) -> None:
        """Every task stops at its next step (Interrupted).  Safe in a signal handler: it only sets a flag."""
        self.stop_event.set()

    def check_grace(self) -> None:
        """Abort once a drain's grace period has run out."""
        deadline = self._drain_deadline
        if deadline is not None and self._closing.is_set() and time.monotonic() >= deadline:
            self.abort()

    def drain(self, on_wait: Callable[[], None] | None = None) -> bool:
        """Close, and wait for the images in flight.  True when they all finished.

        Stops waiting (False) when the pool is aborted (a second signal) or
        the grace period given to ``close`` runs out (which aborts).
        ``on_wait`` is called every MAX_WAIT while waiting.
        """
        self.close()
        with self._cond:
            while self._active:
                self.check_grace()
                if self.stop_event.is_set():
                    return False
                self._cond.wait(MAX_WAIT)
                if on_wait is not None:
                    on_wait()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for no image to be in flight."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._active:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, MAX_WAIT))
        return True

    def shutdown(self) -> None:
        """Let the worker threads end once the queue is empty (they are daemons anyway)."""
        for _ in self._threads:
            self._queue.put(None)
        self._threads = []


class Signals:
    """The one signal policy of every command: the first SIGINT/SIGTERM drains, the second aborts.

    Draining closes the pool (no new work) and lets what is in flight finish
    within ``grace`` seconds (None: as long as it takes; 0: abort at once,
    as an interactive ``process`` does: outputs are all or nothing, so
    nothing is lost by not waiting).  The second signal aborts: every task
    stops at its next step.  ``on_drain(name)`` and ``on_abort(name)`` let
    the command say so and stop its own loop.  A context manager: the
    handlers are installed (main thread only) and put back on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, pool: Pool, grace: float | None = None,
                 on_drain: Callable[[str], None] | None = None,
                 on_abort: Callable[[str], None] | None = None):
        self.pool = pool
        self.grace = grace
        self.on_drain = on_drain
        self.on_abort = on_abort
        self.count = 0
        self.draining = threading.Event()
        self._previous: dict = {}

    def __enter__(self) -> "Signals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            self.pool.close(self.grace)
            self.draining.set()
            if self.on_drain is not None:
                self.on_drain(name)
        else:
            self.pool.abort()
            if self.on_abort is not None:
                self.on_abort(name)

    @property
    def aborted(self) -> bool:
        return self.count > 1


# ---- inputs ------------------------------------------------------------------


def header_pixels(location: Location) -> int | None:
    """The pixel count in the header of ``location``, or None when it cannot be read."""
    if storage.is_video_name(storage.name(location)):
        return None  # a video's frame size costs decoding it: its byte size ranks it
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
