"""The cuda backend's dispatcher: the one thread that owns the CUDA context and does every CUDA call.

Callers submit a job (an image and the launches of its operations) and wait
on its future.  The dispatcher keeps a few slots, each with a stream, pinned
host buffers and device buffers, and issues a job's upload, kernels and
downloads asynchronously on a free slot before it waits for an earlier one,
so one image's copies overlap another's kernels.  What each operation
launches is its CudaKernel's (cuda/operations.py); the dispatcher uploads the
image once for all of them.  A device error fails that job, rebuilds the
context and runs the other jobs on the device again.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ... import kernels
from ...errors import BackendUnavailable, GPUError
from . import plan

log = logging.getLogger("imgtool")

SLOTS = 2  # jobs in flight on the device at once
# A slot keeps its buffers for the next job up to this size each; bigger ones
# (a rare huge image) go back at once instead of holding pinned memory for ever.
KEEP_BUFFER_BYTES = 256 << 20
MAX_REISSUE = 1  # an in-flight job lost with a failed context is run again once


@dataclass
class Job:
    img: np.ndarray
    ops: list  # (output name, CudaKernel, params)
    future: Future = field(default_factory=Future)
    attempts: int = 0


class Runtime:
    """The driver module and SourceModule of one runtime (PyCUDA or hostcuda)."""

    def __init__(self, name: str):
        self.name = name
        if name == "pycuda":
            try:
                import pycuda.driver as driver
                from pycuda.compiler import SourceModule
            except Exception as exc:  # ImportError, or a broken CUDA install
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise BackendUnavailable(
                    f"PyCUDA is not usable ({reason}); install imgtool[cuda] on a machine with CUDA"
                ) from None
        else:
            from .. import hostcuda as driver
            from ..hostcuda import SourceModule
        self.driver = driver
        self.SourceModule = SourceModule


class Slot:
    """A stream with the pinned and device buffers of the job it carries."""

    def __init__(self, rt: Runtime, index: int):
        self.rt = rt
        self.index = index
        self.stream = rt.driver.Stream()
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, object] = {}
        self.sizes: dict[str, int] = {}
        self.job: Job | None = None
        self.outputs: list = []  # (output name, pinned view, shape)

    def host_buffer(self, name: str, nbytes: int) -> np.ndarray:
        buf = self.host.get(name)
        if buf is None or buf.nbytes < nbytes:
            self.host[name] = buf = self.rt.driver.pagelocked_empty(round_up(nbytes), np.uint8)
        return buf[:nbytes]

    def device_buffer(self, name: str, nbytes: int):
        if self.sizes.get(name, 0) < nbytes:
            old = self.device.pop(name, None)
            self.sizes.pop(name, None)
            if old is not None:
                old.free()
            self.device[name] = self.rt.driver.mem_alloc(round_up(nbytes))
            self.sizes[name] = round_up(nbytes)
        return self.device[name]

    def upload(self, name: str, array: np.ndarray):
        """Copy a small host array to this slot's device buffer ``name``, in stream order, via pinned memory."""
        raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        pinned = self.host_buffer("up:" + name, raw.nbytes)
        np.copyto(pinned, raw)
        dev = self.device_buffer(name, raw.nbytes)
        self.rt.driver.memcpy_htod_async(dev, pinned, self.stream)
        return dev

    def free(self, over: int = -1) -> None:
        """Release the buffers larger than ``over`` bytes (all by default)."""
        for name in [n for n, size in self.sizes.items() if size > over]:
            alloc = self.device.pop(name)
            del self.sizes[name]
            try:
                alloc.free()
            except Exception:  # a failed context frees its memory anyway
                pass
        for name in [n for n, buf in self.host.items() if buf.nbytes > over]:
            del self.host[name]


def round_up(n: int) -> int:
    step = 1 << 20 if n > 1 << 20 else 4096
    return max(step, -(-n // step) * step)


class Dispatcher:
    """The one thread that owns the CUDA context and does every CUDA call."""

    _STOP = object()

    def __init__(self, runtime: Runtime, slots: int):
        self.rt = runtime
        self.n_slots = slots
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()  # orders submit() against closing
        self.ready = threading.Event()
        self.start_error: BaseException | None = None
        self.device_name = ""
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="imgtool-gpu", daemon=True)
        self.context = None
        self.modules: dict = {}
        self.slots: list[Slot] = []
        self.in_flight: collections.deque[Slot] = collections.deque()
        self.pending: collections.deque[Job] = collections.deque()  # to issue before the queue
        self.next_slot = 0

    # -- caller side --

    def start(self) -> str:
        self.thread.start()
        self.ready.wait()
        if self.start_error is not None:
            raise self.start_error
        return self.device_name

    def submit(self, job: Job) -> Future:
        with self.lock:
            if self.closed:
                raise GPUError("the cuda backend is closed")
            self.queue.put(job)
        return job.future

    def stop(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.queue.put(self._STOP)
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join()

    # -- dispatcher thread --

    def _run(self) -> None:
        try:
            self._open()
        except BaseException as exc:
            self._close_context()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, BackendUnavailable):
                self.start_error = exc
            else:
                self.start_error = BackendUnavailable(f"no CUDA device answered ({reason})")
            self.ready.set()
            return
        self.ready.set()
        try:
            self._loop()
        except BaseException:
            log.exception("cuda: the GPU dispatcher stopped")
        finally:
            with self.lock:
                self.closed = True
            self._drain_queue()  # nobody may wait for ever
            self._close_context()

    def _open(self) -> None:
        drv = self.rt.driver
        drv.init()
        if drv.Device.count() < 1:
            raise BackendUnavailable("no CUDA device found")
        device = drv.Device(0)
        self.context = device.make_context()
        self.device_name = device.name()
        self.slots = [Slot(self.rt, i) for i in range(self.n_slots)]

    def _close_context(self) -> None:
        for slot in self.slots:
            slot.free()
        self.slots = []
        self.modules.clear()
        if self.context is not None:
            ctx, self.context = self.context, None
            for step in (ctx.pop, ctx.detach):
                try:
                    step()
                except Exception:
                    pass

    def _loop(self) -> None:
        pending = self.pending
        while True:
            if pending:
                job = pending.popleft()
            elif self.in_flight:
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    # Nothing new: wait for the oldest job on the device.
                    pending.extend(self._finish(self.in_flight.popleft()))
                    continue
            else:
                job = self.queue.get()
            if job is self._STOP:
                while self.in_flight:
                    pending.extend(self._finish(self.in_flight.popleft()))
                return
            index = self.next_slot
            self.next_slot = (index + 1) % len(self.slots)
            slot = self.slots[index]
            if slot.job is not None:
                self.in_flight.remove(slot)
                pending.extend(self._finish(slot))
                if self.slots[index] is not slot:  # the context was rebuilt meanwhile
                    pending.appendleft(job)
                    continue
            pending.extend(self._issue(slot, job))

    def _drain_queue(self) -> None:
        lost = [slot.job for slot in self.slots if slot.job is not None] + list(self.pending)
        self.pending.clear()
        for job in lost:
            if not job.future.done():
                job.future.set_exception(GPUError("the cuda backend was closed"))
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return
            if job is not self._STOP:
                job.future.set_exception(GPUError("the cuda backend was closed"))

    def _fail(self, job: Job, exc: BaseException) -> list[Job]:
        """Fail ``job``; after a device error, rebuild the context and return the jobs to run again."""
        drv = self.rt.driver
        if not isinstance(exc, drv.Error):
            job.future.set_exception(exc)  # a bug, not the GPU: keep the real traceback
            return []
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        h, w = job.img.shape[:2]
        job.future.set_exception(GPUError(f"GPU error on a {w}x{h} image: {type(exc).__name__}: {msg}"))
        log.warning("cuda: %s: %s; resetting the GPU context", type(exc).__name__, msg)
        return self._reset()

    def _reset(self) -> list[Job]:
        # A failed kernel can leave the context unusable: start a new one.  The
        # other jobs on the device are innocent; run them again.
        again = []
        for slot in self.slots:
            if slot.job is not None:
                job, slot.job = slot.job, None
                if job.attempts <= MAX_REISSUE:
                    again.append(job)
                else:
                    job.future.set_exception(GPUError("lost with a failed GPU context"))
        self.in_flight.clear()
        self._close_context()
        try:
            self._open()
        except BaseException as exc:
            for job in again:
                job.future.set_exception(GPUError(f"the GPU context could not be rebuilt: {exc}"))
            raise  # the dispatcher cannot go on without a context
        return again

    def module(self, name: str, channels: int, radius: int = 1):
        defines = plan.module_defines(name, channels, radius)
        key = (name, tuple(sorted(defines.items())))
        mod = self.modules.get(key)
        if mod is None:
            mod = self.modules[key] = self.rt.SourceModule(
                plan.kernel_source(name, defines),
                options=list(plan.NVCC_OPTIONS),
                include_dirs=[str(kernels.KERNEL_DIR)],
                no_extern_c=True,
            )
        return mod

    def _issue(self, slot: Slot, job: Job) -> list[Job]:
        job.attempts += 1
        if job.future.cancelled():
            return []
        drv = self.rt.driver
        try:
            try:
                self._enqueue(slot, job)
            except drv.MemoryError:
                # Free every cached buffer (finishing what is on the device) and try once more.
                again = []
                while self.in_flight:
                    again.extend(self._finish(self.in_flight.popleft()))
                if slot not in self.slots:  # the context was rebuilt meanwhile
                    return again + [job]
                for s in self.slots:
                    s.free()
                self._enqueue(slot, job)
                slot.job = job
                self.in_flight.append(slot)
                return again
        except BaseException as exc:
            slot.job, slot.outputs = None, []
            return self._fail(job, exc)
        slot.job = job
        self.in_flight.append(slot)
        return []

    def _finish(self, slot: Slot) -> list[Job]:
        job, slot.job = slot.job, None
        outputs, slot.outputs = slot.outputs, []
        try:
            slot.stream.synchronize()
        except BaseException as exc:
            return self._fail(job, exc)
        result = {name: np.array(view).reshape(shape) for name, view, shape in outputs}
        slot.free(over=KEEP_BUFFER_BYTES)
        if not job.future.cancelled():
            job.future.set_result(result)
        return []

    def _enqueue(self, slot: Slot, job: Job) -> None:
        drv = self.rt.driver
        slot.outputs = []
        img = job.img
        h, w, c = img.shape
        src_host = slot.host_buffer("src", img.nbytes)
        np.copyto(src_host.reshape(img.shape), img)
        src = slot.device_buffer("src", img.nbytes)
        drv.memcpy_htod_async(src, src_host, slot.stream)
        for out_name, kernel, params in job.ops:
            out, (ow, oh) = kernel.enqueue(self, slot, src, w, h, c, params)
            nbytes = ow * oh * c
            view = slot.host_buffer("out:" + out_name, nbytes)
            drv.memcpy_dtoh_async(view, out, slot.stream)
            slot.outputs.append((out_name, view, (oh, ow, c)))
