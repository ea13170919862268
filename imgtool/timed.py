"""The time budget of one image (``--job-timeout``): its work runs in a thread that the pool's thread watches.

A decode or an encode is one long call into C (libjpeg, libwebp, libavif)
that no Python-level check can interrupt.  Those libraries release the GIL
while they work (bench/hostile.py measures the longest pause the watching
thread sees: tens of milliseconds for JPEG/PNG/WebP, under 0.2 s for AVIF), so
the watcher wakes at the deadline and:

- fails the task as ``timeout`` (permanent) at once; the command or the queue
  worker records that and goes on with the next image on the same pool thread;
- marks the task abandoned: its work stops at its next step and can never
  write an output (writing and abandoning take the task's ``write_lock``, so
  a write under way finishes and then counts as the result instead: a job's
  outputs are never written and its result a timeout);
- leaves the work's thread to end by itself when the library returns (its
  cost is bounded by the pixel limit and the JPEG scan limit), its memory
  still counted against ``--max-memory`` until then.

The cost is one thread start per image (about 0.1 ms, next to tens of
milliseconds of work).  A child process per image would be killable but
costs a copy of every decoded image between processes.
"""

from __future__ import annotations

import logging
import threading
import time

from .errors import JobTimeout

log = logging.getLogger("imgtool")

# How often the watcher looks whether the pool is aborting while it waits.
_POLL = 0.1

_abandoned_lock = threading.Lock()
_abandoned_running = 0


def abandoned_running() -> int:
    """Threads of abandoned tasks that have not ended yet (for the log and the tests)."""
    return _abandoned_running


def run_timed(pipeline, ctx, task, force: bool):
    """``pipeline._process(task, force)`` in a thread of its own, failed as timeout past ``ctx.deadline``."""
    global _abandoned_running
    from .pipeline import Interrupted, Result, _current

    box: dict = {}
    done = threading.Event()
    scratch = pipeline._scratch()

    def work() -> None:
        global _abandoned_running
        _current.task = ctx
        pipeline._local.scratch = scratch
        try:
            box["result"] = pipeline._process(task, force)
        except BaseException as exc:  # noqa: BLE001 - handed to the watching thread
            box["error"] = exc
        finally:
            _current.task = None
            with ctx.write_lock:
                done.set()
                if ctx.detached:
                    ctx.pool.give_back(ctx)
                    with _abandoned_lock:
                        _abandoned_running -= 1

    start = time.perf_counter()
    thread = threading.Thread(target=work, name=f"{threading.current_thread().name}-work", daemon=True)
    thread.start()
    while True:
        deadline = ctx.deadline
        left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
        if done.wait(max(left, 0.0)):
            break
        if ctx.pool.stop_event.is_set():
            done.wait()  # the work stops at its next step
            break
        if deadline is not None and time.monotonic() >= ctx.deadline:
            with ctx.write_lock:
                finished = done.is_set() or ctx.committed
                if not finished:
                    ctx.abandoned = True
                    ctx.detached = True
                    with _abandoned_lock:
                        _abandoned_running += 1
            if finished:
                # Its outputs are written (a write under way held the lock): that is the result.
                done.wait()
                break
            # The work's thread keeps the scratch buffers: this thread takes new ones.
            pipeline._local.scratch = None
            budget = ctx.pool.time_budget
            log.debug("%s: abandoned past the time budget; %d such thread(s) still running",
                      task.src, _abandoned_running)
            err = JobTimeout(f"took longer than the time budget of {budget:g} s (--job-timeout)", task.src)
            return Result(task, "failed", error=err, duration_ms=(time.perf_counter() - start) * 1000.0)
    if "error" in box:
        error = box["error"]
        if isinstance(error, Interrupted):
            raise Interrupted()
        raise error
    return box["result"]
