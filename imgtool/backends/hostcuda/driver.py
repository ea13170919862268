"""PyCUDA's driver calls that imgtool uses, over host memory: devices, contexts, memory, streams.

"Device" memory is host memory with guard bytes around it.  A stream is a
worker thread that runs its operations in order, so asynchronous copies really
are asynchronous: a host buffer handed to ``memcpy_dtoh_async`` holds the data
only after the stream is synchronised, as on a GPU.  The default stream
(``stream=None``) runs an operation at once on the calling thread, after every
other stream has drained (the legacy default stream's ordering).
"""

from __future__ import annotations

import bisect
import builtins
import collections
import ctypes
import os
import threading
import time
import weakref

import numpy as np

from .errors import (  # noqa: F401 - driver.X is pycuda.driver.X
    CompileError,
    Error,
    LaunchError,
    LogicError,
    MemoryError,
    RuntimeError,
)
from .toolchain import find_compiler

# Guard bytes before and after each allocation; a kernel that writes outside its
# buffer changes them, and the launch that did it fails with LaunchError.
REDZONE = 256
_ALIGN = 256
_CANARY = 0xA5
# Fresh allocations are filled with this so that reading memory nobody wrote
# shows up as garbage in the tests instead of lucky zeros.
_POISON = 0xCD


# ---- devices and contexts --------------------------------------------------


class device_attribute:  # noqa: N801 - the pycuda name
    MAX_THREADS_PER_BLOCK = "MAX_THREADS_PER_BLOCK"
    MAX_BLOCK_DIM_X = "MAX_BLOCK_DIM_X"
    MAX_BLOCK_DIM_Y = "MAX_BLOCK_DIM_Y"
    MAX_BLOCK_DIM_Z = "MAX_BLOCK_DIM_Z"
    MAX_GRID_DIM_X = "MAX_GRID_DIM_X"
    MAX_GRID_DIM_Y = "MAX_GRID_DIM_Y"
    MAX_GRID_DIM_Z = "MAX_GRID_DIM_Z"
    MAX_SHARED_MEMORY_PER_BLOCK = "MAX_SHARED_MEMORY_PER_BLOCK"
    WARP_SIZE = "WARP_SIZE"
    MULTIPROCESSOR_COUNT = "MULTIPROCESSOR_COUNT"


MAX_BLOCK = (1024, 1024, 64)
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_STATIC_SHARED = 48 * 1024

_initialised = False


def init(flags: int = 0) -> None:
    """Check that kernels can be built here (pycuda.driver.init)."""
    global _initialised
    find_compiler()  # raises RuntimeError without a host C++ compiler
    _initialised = True


def host_threads() -> int:
    """How many host threads one launch may use (IMGTOOL_HOSTCUDA_THREADS)."""
    env = os.environ.get("IMGTOOL_HOSTCUDA_THREADS")
    if env:
        try:
            return max(1, min(64, int(env)))
        except ValueError:
            raise LogicError(f"IMGTOOL_HOSTCUDA_THREADS must be an integer, not {env!r}") from None
    return max(1, min(4, os.cpu_count() or 1))


class Device:
    """The one emulated device."""

    def __init__(self, number: int = 0):
        if not _initialised:
            raise LogicError("cuInit has not been called (hostcuda.init())")
        if number != 0:
            raise LogicError(f"invalid device ordinal {number} (hostcuda has one device)")
        self.number = number

    @staticmethod
    def count() -> int:
        return 1

    def name(self) -> str:
        return f"hostcuda (CPU build of the kernels, {host_threads()} threads)"

    def compute_capability(self) -> tuple[int, int]:
        return (0, 0)

    def total_memory(self) -> int:
        return _memory_limit()

    def pci_bus_id(self) -> str:
        return "host"

    def get_attribute(self, attr):
        values = {
            device_attribute.MAX_THREADS_PER_BLOCK: MAX_THREADS_PER_BLOCK,
            device_attribute.MAX_BLOCK_DIM_X: MAX_BLOCK[0],
            device_attribute.MAX_BLOCK_DIM_Y: MAX_BLOCK[1],
            device_attribute.MAX_BLOCK_DIM_Z: MAX_BLOCK[2],
            device_attribute.MAX_GRID_DIM_X: MAX_GRID[0],
            device_attribute.MAX_GRID_DIM_Y: MAX_GRID[1],
            device_attribute.MAX_GRID_DIM_Z: MAX_GRID[2],
            device_attribute.MAX_SHARED_MEMORY_PER_BLOCK: MAX_STATIC_SHARED,
            device_attribute.WARP_SIZE: 32,
            device_attribute.MULTIPROCESSOR_COUNT: host_threads(),
        }
        try:
            return values[attr]
        except KeyError:
            raise LogicError(f"hostcuda does not know device attribute {attr!r}") from None

    def make_context(self, flags: int = 0) -> "Context":
        ctx = Context(self)
        ctx.push()
        return ctx

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.number == self.number

    def __hash__(self) -> int:
        return hash(("hostcuda", self.number))


_ctx_stack = threading.local()


class Context:
    """A context; hostcuda has one address space, so this only keeps PyCUDA's stack rules."""

    def __init__(self, device: Device):
        self._device = device
        self._alive = True

    def _stack(self) -> list:
        stack = getattr(_ctx_stack, "stack", None)
        if stack is None:
            stack = _ctx_stack.stack = []
        return stack

    def push(self) -> None:
        if not self._alive:
            raise LogicError("context was destroyed")
        self._stack().append(self)

    @staticmethod
    def pop() -> None:
        stack = getattr(_ctx_stack, "stack", None)
        if not stack:
            raise LogicError("cuCtxPopCurrent failed: no context is current in this thread")
        stack.pop()

    def detach(self) -> None:
        stack = self._stack()
        while self in stack:
            stack.remove(self)
        self._alive = False

    @staticmethod
    def synchronize() -> None:
        _sync_all_streams()

    @staticmethod
    def get_device() -> Device:
        return Device(0)


def mem_get_info() -> tuple[int, int]:
    total = _memory_limit()
    with _registry_lock:
        used = _live_bytes
    return max(0, total - used), total


# ---- memory ----------------------------------------------------------------

_registry_lock = threading.Lock()
_starts: list[int] = []  # sorted start addresses of live allocations
_by_start: dict[int, "DeviceAllocation"] = {}
_live_bytes = 0
_limit: int | None = None


def _memory_limit() -> int:
    if _limit is not None:
        return _limit
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def set_memory_limit(nbytes: int | None) -> None:
    """Emulate a device with ``nbytes`` of memory (None: the host's RAM)."""
    global _limit
    _limit = None if nbytes is None else int(nbytes)


class DeviceAllocation:
    """``mem_alloc``'s result: ``int(alloc)`` is the device address."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        raw = np.empty(nbytes + 2 * REDZONE + _ALIGN, np.uint8)
        base = raw.ctypes.data
        offset = (-(base + REDZONE)) % _ALIGN
        self._raw = raw
        self._lo = offset
        self._ptr = base + offset + REDZONE
        raw[offset : offset + REDZONE] = _CANARY
        raw[offset + REDZONE + nbytes : offset + 2 * REDZONE + nbytes] = _CANARY
        raw[offset + REDZONE : offset + REDZONE + nbytes] = _POISON
        self._freed = False

    def __int__(self) -> int:
        return self._ptr

    __index__ = __int__

    def __repr__(self) -> str:
        state = "freed" if self._freed else f"{self.nbytes} bytes"
        return f"<hostcuda.DeviceAllocation 0x{self._ptr:x} {state}>"

    @property
    def freed(self) -> bool:
        return self._freed

    def canaries_intact(self) -> bool:
        lo, n = self._lo, self.nbytes
        before = self._raw[lo : lo + REDZONE]
        after = self._raw[lo + REDZONE + n : lo + 2 * REDZONE + n]
        return bool((before == _CANARY).all() and (after == _CANARY).all())

    def free(self) -> None:
        if self._freed:
            return
        # cuMemFree waits for the device: no queued copy may still use this memory.
        _sync_all_streams()
        _unregister(self)
        self._freed = True
        self._raw = None

    def __del__(self):
        try:
            if not self._freed and self._raw is not None:
                _unregister(self)
        except Exception:
            pass


def _unregister(alloc: DeviceAllocation) -> None:
    global _live_bytes
    with _registry_lock:
        if _by_start.pop(alloc._ptr, None) is not None:
            i = bisect.bisect_left(_starts, alloc._ptr)
            if i < len(_starts) and _starts[i] == alloc._ptr:
                del _starts[i]
            _live_bytes -= alloc.nbytes


def mem_alloc(nbytes: int) -> DeviceAllocation:
    global _live_bytes
    nbytes = int(nbytes)
    if nbytes <= 0:
        raise LogicError("cuMemAlloc failed: invalid argument (size must be positive)")
    with _registry_lock:
        if _live_bytes + nbytes > _memory_limit():
            raise MemoryError("cuMemAlloc failed: out of memory")
        _live_bytes += nbytes
    try:
        alloc = DeviceAllocation(nbytes)
    except BaseException as exc:
        with _registry_lock:
            _live_bytes -= nbytes
        if isinstance(exc, builtins.MemoryError):  # the host is out of memory: so is the "device"
            raise MemoryError("cuMemAlloc failed: out of memory") from None
        raise
    with _registry_lock:
        bisect.insort(_starts, alloc._ptr)
        _by_start[alloc._ptr] = alloc
    return alloc


def find_allocation(address: int) -> DeviceAllocation | None:
    """The live allocation holding ``address`` (one past its end counts)."""
    with _registry_lock:
        i = bisect.bisect_right(_starts, address) - 1
        if i < 0:
            return None
        alloc = _by_start[_starts[i]]
        return alloc if address <= alloc._ptr + alloc.nbytes else None


def _device_range(dest, nbytes: int, what: str) -> tuple[int, DeviceAllocation]:
    if isinstance(dest, DeviceAllocation):
        if dest.freed:
            raise LogicError(f"{what}: the device allocation was freed")
        address = dest._ptr
    elif isinstance(dest, (int, np.integer)) and not isinstance(dest, bool):
        address = int(dest)
    else:
        raise TypeError(f"{what}: expected a device allocation or address, not {type(dest).__name__}")
    alloc = find_allocation(address)
    if alloc is None or address + nbytes > alloc._ptr + alloc.nbytes:
        raise LogicError(f"{what} failed: invalid argument (range outside any device allocation)")
    return address, alloc


def _host_view(buf, writable: bool, what: str) -> np.ndarray:
    try:
        view = np.frombuffer(memoryview(buf).cast("B"), np.uint8)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: expected a contiguous buffer ({exc})") from None
    if writable and not view.flags.writeable:
        raise TypeError(f"{what}: the host buffer is read-only")
    return view


# The allocation rides along so that queued work keeps its memory alive.
def _copy_htod(address: int, view: np.ndarray, alloc: DeviceAllocation) -> None:
    if view.nbytes:
        ctypes.memmove(address, view.ctypes.data, view.nbytes)


def _copy_dtoh(view: np.ndarray, address: int, alloc: DeviceAllocation) -> None:
    if view.nbytes:
        ctypes.memmove(view.ctypes.data, address, view.nbytes)


def memcpy_htod(dest, src) -> None:
    view = _host_view(src, False, "memcpy_htod")
    address, alloc = _device_range(dest, view.nbytes, "cuMemcpyHtoD")
    _run(None, lambda: _copy_htod(address, view, alloc))


def memcpy_dtoh(dest, src) -> None:
    view = _host_view(dest, True, "memcpy_dtoh")
    address, alloc = _device_range(src, view.nbytes, "cuMemcpyDtoH")
    _run(None, lambda: _copy_dtoh(view, address, alloc))


def memcpy_htod_async(dest, src, stream: "Stream | None" = None) -> None:
    view = _host_view(src, False, "memcpy_htod_async")
    address, alloc = _device_range(dest, view.nbytes, "cuMemcpyHtoDAsync")
    _run(stream, lambda: _copy_htod(address, view, alloc))


def memcpy_dtoh_async(dest, src, stream: "Stream | None" = None) -> None:
    view = _host_view(dest, True, "memcpy_dtoh_async")
    address, alloc = _device_range(src, view.nbytes, "cuMemcpyDtoHAsync")
    _run(stream, lambda: _copy_dtoh(view, address, alloc))


def memcpy_dtod(dest, src, size: int) -> None:
    memcpy_dtod_async(dest, src, size, None)


def memcpy_dtod_async(dest, src, size: int, stream: "Stream | None" = None) -> None:
    size = int(size)
    d, da = _device_range(dest, size, "cuMemcpyDtoD")
    s, sa = _device_range(src, size, "cuMemcpyDtoD")
    _run(stream, lambda: (da, sa, ctypes.memmove(d, s, size)))


def memset_d8(dest, data: int, count: int) -> None:
    address, _ = _device_range(dest, int(count), "cuMemsetD8")
    _run(None, lambda: ctypes.memset(address, int(data) & 0xFF, int(count)))


def memset_d32(dest, data: int, count: int) -> None:
    count = int(count)
    address, _ = _device_range(dest, 4 * count, "cuMemsetD32")

    def fill():
        arr = (ctypes.c_uint32 * count).from_address(address)
        np.frombuffer(arr, np.uint32)[:] = np.uint32(int(data) & 0xFFFFFFFF)

    _run(None, fill)


def pagelocked_empty(shape, dtype, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    return np.empty(shape, dtype, order=order)


def pagelocked_zeros(shape, dtype, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    return np.zeros(shape, dtype, order=order)


# ---- streams and events ----------------------------------------------------

_streams: "weakref.WeakSet[Stream]" = weakref.WeakSet()
_streams_lock = threading.Lock()


class _StreamWorker:
    """The thread behind one stream; it holds no reference to the Stream itself."""

    def __init__(self, name: str):
        self.cv = threading.Condition()
        self.ops: collections.deque = collections.deque()
        self.pending = 0
        self.error: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn) -> None:
        with self.cv:
            self.pending += 1
            self.ops.append(fn)
            self.cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self.cv:
                while not self.ops and not self.stopping:
                    self.cv.wait()
                if not self.ops:
                    return
                fn = self.ops.popleft()
            try:
                fn()
            except BaseException as exc:  # reported by the next synchronize()
                with self.cv:
                    if self.error is None:
                        self.error = exc
            with self.cv:
                self.pending -= 1
                self.cv.notify_all()

    def wait(self) -> BaseException | None:
        with self.cv:
            while self.pending:
                self.cv.wait()
            error, self.error = self.error, None
            return error

    def idle(self) -> bool:
        with self.cv:
            return self.pending == 0

    def stop(self) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify_all()


class Stream:
    """An in-order queue of device work, run by its own thread."""

    _count = 0

    def __init__(self, flags: int = 0):
        Stream._count += 1
        self._worker = _StreamWorker(f"hostcuda-stream-{Stream._count}")
        self.handle = id(self)
        weakref.finalize(self, self._worker.stop)
        with _streams_lock:
            _streams.add(self)

    def _submit(self, fn) -> None:
        self._worker.submit(fn)

    def synchronize(self) -> None:
        error = self._worker.wait()
        if error is not None:
            if isinstance(error, Error):
                raise error
            raise LaunchError(f"stream operation failed: {error!r}") from error

    def is_done(self) -> bool:
        return self._worker.idle()

    def wait_for_event(self, event: "Event") -> None:
        self._submit(event._done.wait)


def _sync_all_streams() -> None:
    with _streams_lock:
        streams = list(_streams)
    for s in streams:
        error = s._worker.wait()
        if error is not None:
            # Keep it for that stream's own synchronize().
            with s._worker.cv:
                if s._worker.error is None:
                    s._worker.error = error


def _run(stream: Stream | None, fn) -> None:
    if stream is None:
        _sync_all_streams()
        fn()
    else:
        if not isinstance(stream, Stream):
            raise TypeError(f"expected a hostcuda Stream, not {type(stream).__name__}")
        stream._submit(fn)


class Event:
    def __init__(self, flags: int = 0):
        self._done = threading.Event()
        self._time: float | None = None

    def record(self, stream: Stream | None = None) -> "Event":
        self._done.clear()

        def mark():
            self._time = time.perf_counter()
            self._done.set()

        _run(stream, mark)
        return self

    def synchronize(self) -> "Event":
        self._done.wait()
        return self

    def query(self) -> bool:
        return self._done.is_set()

    def time_since(self, other: "Event") -> float:
        """Milliseconds from ``other`` to this event."""
        if self._time is None or other._time is None:
            raise LogicError("cuEventElapsedTime failed: event not recorded")
        return (self._time - other._time) * 1000.0

    def time_till(self, other: "Event") -> float:
        return other.time_since(self)
