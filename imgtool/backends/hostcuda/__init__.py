"""The CPU build of the kernels: the part of PyCUDA the cuda backend uses, run on the host.

``import imgtool.backends.hostcuda as cuda`` stands in for both
``pycuda.driver`` (devices, contexts, memory, streams, events, errors) and
``pycuda.compiler`` (``SourceModule``), so the cuda backend's own code runs the
real ``kernels/*.cu`` where there is no GPU.  See cuda_compat.h for how the
CUDA threads of a block are run, and compiler.py for how a source is built, sanitizer.py for the check mode (a
GPU sanitizer for machines without a GPU).
"""

from .compiler import SourceModule, default_cache_dir
from .driver import (
    CompileError,
    Context,
    Device,
    DeviceAllocation,
    Error,
    Event,
    LaunchError,
    LogicError,
    MemoryError,
    RuntimeError,
    Stream,
    device_attribute,
    host_threads,
    init,
    mem_alloc,
    mem_get_info,
    memcpy_dtod,
    memcpy_dtod_async,
    memcpy_dtoh,
    memcpy_dtoh_async,
    memcpy_htod,
    memcpy_htod_async,
    memset_d8,
    memset_d32,
    pagelocked_empty,
    pagelocked_zeros,
    set_memory_limit,
)
from .sanitizer import checking, set_enabled as set_check_mode
from .sanitizer import enabled as check_mode
from .toolchain import find_compiler

__all__ = [
    "CompileError", "Context", "Device", "DeviceAllocation", "Error", "Event", "LaunchError",
    "LogicError", "MemoryError", "RuntimeError", "SourceModule", "Stream", "default_cache_dir",
    "device_attribute", "find_compiler", "host_threads", "init", "mem_alloc", "mem_get_info",
    "memcpy_dtod", "memcpy_dtod_async", "memcpy_dtoh", "memcpy_dtoh_async", "memcpy_htod",
    "memcpy_htod_async", "memset_d8", "memset_d32", "pagelocked_empty", "pagelocked_zeros",
    "set_memory_limit", "check_mode", "checking", "set_check_mode",
]
