"""The check mode of the CPU build: what compute-sanitizer's memcheck, racecheck and synccheck find, without a GPU.

A module built in check mode (``SourceModule(..., check=True)``, or every
module while IMGTOOL_HOSTCUDA_CHECK=1 or ``set_enabled(True)``) runs each
launch several times, each time under another *schedule*, on fresh copies of
the buffers its pointer arguments point into:

* every copy sits against a PROT_NONE guard page: at its end ("end-aligned",
  the first byte past the buffer faults) or at its start ("start-aligned", the
  byte before it faults); the schedules alternate the two.  A fault ends the
  launch with a LaunchError naming the kernel, the launch shape, the schedule,
  read or write, the parameter and the byte offset;
* the first schedule runs the threads of each block forward and the blocks in
  order, the whole grid, as the normal build does; the second reverses both;
  the others shuffle both (seeded: IMGTOOL_HOSTCUDA_CHECK_SEED, and how many:
  IMGTOOL_HOSTCUDA_CHECK_SCHEDULES) and cap every grid dimension the kernel
  reads (gridDim.x/y/z: a grid-stride dimension) so that its loop goes round;
* ``__shared__`` arrays sit against guard pages too, in the schedule's layout,
  and start each block filled with a byte that differs from schedule to
  schedule;
* every schedule must leave every buffer byte for byte as the first did; a
  difference is reported as a race, with both schedules.

cuda_compat.h (HC_CHECK) does the rest inside a launch: the orders, the fault
landing, array bounds (-fsanitize=bounds,object-size) and the synccheck.  The
buffers end as the first schedule left them.  Launches in check mode run one
at a time, on one host thread each.

Limits: a pointer kept in device memory (not a kernel argument) is not moved
to the copies, so such a kernel is checked under the first schedule only; the
CPU build cannot show timing, the interleaving of two threads inside a phase
(each runs to its next barrier alone), or a GPU's own limits (registers, the
48 KiB of shared memory are nvcc's and ptxas' to check).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import mmap
import os
import threading
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import LaunchError, LogicError, MemoryError

ENV = "IMGTOOL_HOSTCUDA_CHECK"
SEED_ENV = "IMGTOOL_HOSTCUDA_CHECK_SEED"
SCHEDULES_ENV = "IMGTOOL_HOSTCUDA_CHECK_SCHEDULES"
DEFAULT_SEED = 1
DEFAULT_SHUFFLED = 2  # shuffled schedules after the forward and the reversed one

# cuda_compat.h's HC_ORDER_* and HC_FAULT_*
FORWARD, REVERSE, RANDOM = 0, 1, 2
FAULT_TRAP, FAULT_MEMORY, FAULT_INDEX, FAULT_OBJECT, FAULT_BARRIER, FAULT_SHARED = 1, 2, 3, 4, 5, 6
LAYOUTS = ("end", "start")  # cuda_compat.h's HC_LAYOUT_*
# What __shared__ memory holds when a block starts, per schedule.
POISONS = (0xCD, 0x5A, 0xA5, 0x3C, 0x96, 0x69)
_MASK64 = (1 << 64) - 1

_override: bool | None = None


def enabled() -> bool:
    """Whether modules built from now on are check builds (``set_enabled``, else IMGTOOL_HOSTCUDA_CHECK)."""
    if _override is not None:
        return _override
    return os.environ.get(ENV, "").strip() not in ("", "0")


def set_enabled(on: bool | None) -> None:
    """Build check modules from now on (True), normal ones (False), or as IMGTOOL_HOSTCUDA_CHECK says (None)."""
    global _override
    _override = None if on is None else bool(on)


@contextlib.contextmanager
def checking(on: bool = True):
    """``with checking():`` modules built inside are check builds."""
    global _override
    saved = _override
    _override = bool(on)
    try:
        yield
    finally:
        _override = saved


def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw, 0)
    except ValueError:
        raise LogicError(f"{name} must be an integer, not {raw!r}") from None
    if not lo <= value <= hi:
        raise LogicError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


# ---- schedules ---------------------------------------------------------------


_ORDER_NAMES = {FORWARD: "forward", REVERSE: "reversed", RANDOM: "shuffled"}


@dataclass(frozen=True)
class Schedule:
    """One run of a launch: thread and block order, grid, buffer layout, shared-memory poison."""

    threads: int
    blocks: int
    seed: int
    grid: tuple[int, int, int]
    layout: str  # "end" or "start": which end of each buffer meets its guard page
    poison: int

    def describe(self, full_grid: tuple[int, int, int]) -> str:
        seed = f" (seed {self.seed:#x})" if RANDOM in (self.threads, self.blocks) else ""
        grid = f"grid capped to {_shape(self.grid)}" if self.grid != full_grid else f"grid {_shape(self.grid)}"
        return (
            f"threads {_ORDER_NAMES[self.threads]}, blocks {_ORDER_NAMES[self.blocks]}{seed}, {grid}, "
            f"buffers {self.layout}-aligned, shared memory 0x{self.poison:02x}"
        )


def _shape(dims) -> str:
    return "(" + ",".join(str(int(d)) for d in dims) + ")"


def _capped(g: int, k: int) -> int:
    # One block (the loop goes round the most), or a third of them (it goes round
    # about three times, and the last round is partial more often than not).
    return 1 if k % 2 == 0 else max(1, (g + 2) // 3)


def plan(kernel: str, grid, block, strides) -> list[Schedule]:
    """The schedules one launch of ``kernel`` runs under; the first is the normal build's order."""
    grid = tuple(int(g) for g in grid)
    base = _env_int(SEED_ENV, DEFAULT_SEED, 0, _MASK64)
    shuffled = _env_int(SCHEDULES_ENV, DEFAULT_SHUFFLED, 0, 64)
    # The same launch gets the same seeds in every run: a failure can be run again.
    seed0 = (zlib.crc32(f"{kernel} {grid} {tuple(block)}".encode()) ^ (base * 0x9E3779B97F4A7C15)) & _MASK64
    out = [
        Schedule(FORWARD, FORWARD, 0, grid, "end", POISONS[0]),
        Schedule(REVERSE, REVERSE, 0, grid, "start", POISONS[1]),
    ]
    for k in range(shuffled):
        capped = tuple(_capped(g, k) if d in strides else g for d, g in enumerate(grid))
        out.append(
            Schedule(RANDOM, RANDOM, (seed0 + k) & _MASK64, capped, ("end", "start")[k % 2],
                     POISONS[(2 + k) % len(POISONS)])
        )
    return out


# ---- guarded buffers -------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_mmap.restype = ctypes.c_void_p
_mprotect = _libc.mprotect
_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_mprotect.restype = ctypes.c_int
_munmap = _libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_munmap.restype = ctypes.c_int
PAGE = mmap.PAGESIZE
_MAP_FAILED = ctypes.c_void_p(-1).value
_PROT_NONE = 0


class GuardedBuffer:
    """``nbytes`` of memory between two PROT_NONE pages, against the upper ("end") or the lower ("start") one."""

    def __init__(self, nbytes: int, layout: str):
        data = max(1, -(-nbytes // PAGE)) * PAGE
        self._size = data + 2 * PAGE
        base = _mmap(None, self._size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if base is None or base == _MAP_FAILED:
            raise MemoryError(f"cannot map {self._size} bytes for a guarded buffer (errno {ctypes.get_errno()})")
        self._base = base
        if _mprotect(base, PAGE, _PROT_NONE) or _mprotect(base + PAGE + data, PAGE, _PROT_NONE):
            _munmap(base, self._size)
            raise MemoryError(f"cannot protect the guard pages (errno {ctypes.get_errno()})")
        self.nbytes = nbytes
        self.ptr = base + PAGE + data - nbytes if layout == "end" else base + PAGE

    def view(self) -> np.ndarray:
        return np.frombuffer((ctypes.c_uint8 * self.nbytes).from_address(self.ptr), np.uint8)

    def offset_of(self, address: int) -> int | None:
        """``address - ptr`` when ``address`` lies in this mapping (the buffer, its slack or its guards)."""
        if self._base <= address < self._base + self._size:
            return address - self.ptr
        return None

    def close(self) -> None:
        if self._base:
            _munmap(self._base, self._size)
            self._base = 0


# ---- a checked launch --------------------------------------------------------------

_lock = threading.Lock()  # one check launch at a time: the fault handler and shared memory are per process
# Checked launches per kernel name, and schedules run (what the tests ran under the sanitizer).
stats: dict = {"launches": collections.Counter(), "schedules": 0}


def run_checked(kernel: str, launch, grid, block, storage: list, pointers: list, strides) -> None:
    """Run one launch under every schedule of ``plan``; raise LaunchError for a fault or a disagreement.

    ``launch(grid, block, argv, schedule)`` runs the launcher once and returns
    its record; ``storage`` holds the arguments (ctypes), ``pointers`` is
    (parameter, address, allocation) for each pointer argument.
    """
    allocs: list = []
    params: dict[int, list[int]] = {}
    for i, _address, alloc in pointers:
        if alloc is None:
            continue
        if id(alloc) not in params:
            allocs.append(alloc)
            params[id(alloc)] = []
        params[id(alloc)].append(i)
    grid = tuple(int(g) for g in grid)
    shape = f"grid {_shape(grid)}, block {_shape(block)}"
    schedules = plan(kernel, grid, block, strides)
    with _lock:
        reference: dict[int, GuardedBuffer] | None = None
        try:
            for sched in schedules:
                copies: dict[int, GuardedBuffer] = {}
                try:
                    for a in allocs:
                        copies[id(a)] = GuardedBuffer(a.nbytes, sched.layout)
                        ctypes.memmove(copies[id(a)].ptr, int(a), a.nbytes)
                    args = list(storage)
                    for i, address, alloc in pointers:
                        if alloc is not None:
                            args[i] = ctypes.c_void_p(copies[id(alloc)].ptr + (address - int(alloc)))
                    argv = (ctypes.c_void_p * max(1, len(args)))(*[ctypes.addressof(s) for s in args])
                    rec = launch(sched.grid, block, argv, sched)
                    stats["schedules"] += 1
                    if rec.status:
                        raise LaunchError(
                            f"kernel {kernel} ({shape}; {sched.describe(grid)}): "
                            f"{_fault_text(rec, allocs, copies, params)}"
                        )
                    if reference is None:
                        reference, copies = copies, {}
                        first = sched
                    else:
                        _compare(kernel, shape, grid, first, sched, allocs, reference, copies, params)
                finally:
                    for c in copies.values():
                        c.close()
            for a in allocs:
                ctypes.memmove(int(a), reference[id(a)].ptr, a.nbytes)
            stats["launches"][kernel] += 1
        finally:
            for c in (reference or {}).values():
                c.close()


def _param_names(indices: list[int]) -> str:
    return " and ".join(f"parameter #{i}" for i in indices)


def _fault_text(rec, allocs, copies, params) -> str:
    text = rec.message.decode(errors="replace")
    if rec.fault_kind != FAULT_MEMORY:
        return text
    address = int(rec.fault_addr)
    for a in allocs:
        off = copies[id(a)].offset_of(address)
        if off is None:
            continue
        n = a.nbytes
        if off >= n:
            where = f"{off - n + 1} byte(s) past its last byte"
        elif off < 0:
            where = f"{-off} byte(s) before its first byte"
        else:
            where = "inside it"  # cannot fault; said rather than hidden
        located = f"at byte offset {off} of {_param_names(params[id(a)])} (a {n}-byte buffer: {where})"
        return text.replace(f"at 0x{address:x}", located, 1)
    return text.replace(
        f"at 0x{address:x}", f"at 0x{address:x}, outside every buffer the kernel was passed", 1
    )


def _compare(kernel, shape, grid, first, sched, allocs, reference, copies, params) -> None:
    for a in allocs:
        want, got = reference[id(a)].view(), copies[id(a)].view()
        if np.array_equal(want, got):
            continue
        diff = np.flatnonzero(want != got)
        raise LaunchError(
            f"kernel {kernel} ({shape}): a race: two schedules disagree on {_param_names(params[id(a)])} "
            f"({a.nbytes}-byte buffer): {diff.size} byte(s) differ, the first at byte offset {int(diff[0])} "
            f"({int(want[diff[0]])} under [{first.describe(grid)}], {int(got[diff[0]])} under "
            f"[{sched.describe(grid)}])"
        )
