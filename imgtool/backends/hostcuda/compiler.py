"""SourceModule for the host: build a CUDA source with the host C++ compiler, call its kernels PyCUDA's way.

The source is compiled together with cuda_compat.h (the CUDA language surface
and the grid/fiber scheduler) and a generated launcher per ``__global__``
function.  The kernels are found by preprocessing the source once with
``HOSTCUDA_SCAN`` defined; that preprocessed text, the flags, the compiler and
the header make the cache key of the shared library, which is written to a
temporary name and renamed into the cache, so concurrent processes are safe.

A module built in check mode (``SourceModule(..., check=True)``, or
IMGTOOL_HOSTCUDA_CHECK=1; see sanitizer.py) is another library: the same
source with HC_CHECK=1 and -fsanitize=bounds,object-size, whose launches the
sanitizer runs several times over guarded copies of their buffers.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from . import driver, sanitizer
from .driver import DeviceAllocation
from .errors import CompileError, LaunchError, LogicError, RuntimeError
from .toolchain import compiler_identity, find_compiler

ABI_VERSION = "hostcuda-3"
HEADER_DIR = Path(__file__).resolve().parent
COMPAT_HEADER = HEADER_DIR / "cuda_compat.h"

CXXFLAGS = (
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-shared",
    "-pthread",
    "-fvisibility=hidden",
    "-fno-strict-aliasing",
    # The cpu backend's float sums round after every multiply and add; so do these.
    "-ffp-contract=off",
    "-Wl,-z,defs",
)
# The check build: array indexes and accesses through pointers into objects of
# known size are checked (cuda_compat.h has the handlers; no runtime is linked,
# so it is compiled and linked in two steps).
CHECK_FLAGS = ("-fsanitize=bounds,object-size", "-fno-sanitize-recover=all", "-U_FORTIFY_SOURCE")
_LINK_ONLY = ("-shared", "-Wl,-z,defs")

# nvcc options that take their value as the next argument and mean nothing here.
_NVCC_OPTIONS_WITH_VALUE = {
    "-arch", "--gpu-architecture", "-code", "--gpu-code", "-gencode", "--generate-code",
    "-Xptxas", "--ptxas-options", "-Xcompiler", "--compiler-options", "-maxrregcount",
    "--maxrregcount", "-ccbin", "--compiler-bindir", "-Xlinker", "--linker-options",
}

_GLOBAL_RE = re.compile(r"__hostcuda_global__\s+((?:\w+\s+)*?)void\s+(\w+)\s*\(")
_BARRIER_RE = re.compile(r"\b__syncthreads(?:_count|_and|_or)?\s*\(")
_GRID_DIM_RE = re.compile(r"\bgridDim\s*\.\s*([xyz])\b")


def default_cache_dir() -> Path:
    """Where built modules are kept: IMGTOOL_HOSTCUDA_CACHE, else $XDG_CACHE_HOME/imgtool/hostcuda."""
    env = os.environ.get("IMGTOOL_HOSTCUDA_CACHE")
    if env:
        candidates = [Path(env)]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [Path(base) / "imgtool" / "hostcuda"]
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    candidates.append(Path(tempfile.gettempdir()) / f"imgtool-hostcuda-{uid}")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise RuntimeError("no writable cache directory for the CPU build of the kernels")


def _translate_options(options) -> list[str]:
    """Keep the options that mean something to the host compiler (-D, -U, -I)."""
    out: list[str] = []
    items = list(options or ())
    i = 0
    while i < len(items):
        opt = str(items[i])
        if opt in ("-D", "-U", "-I"):
            if i + 1 >= len(items):
                raise LogicError(f"option {opt} needs a value")
            out += [opt, str(items[i + 1])]
            i += 2
            continue
        if opt.startswith(("-D", "-U", "-I")):
            out.append(opt)
        elif opt in _NVCC_OPTIONS_WITH_VALUE:
            i += 1  # skip its value too
        # every other nvcc option (-O3, --use_fast_math, -lineinfo, ...) is GPU-only
        i += 1
    return out


def _find_kernels(scan: str) -> list[str]:
    names: list[str] = []
    for m in _GLOBAL_RE.finditer(scan):
        before = scan[: m.start()].rstrip()
        if before.endswith('extern "C"'):
            before = before[: -len('extern "C"')].rstrip()
        if before.endswith(">"):
            continue  # a template kernel: not launchable by name
        if m.group(2) not in names:
            names.append(m.group(2))
    return names


def _matching(text: str, start: int, open_: str, close: str) -> int:
    """The index just past the bracket that closes the one at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _grid_strides(scan: str, kernels: list[str]) -> dict[str, frozenset[int]]:
    """The grid dimensions each kernel reads (gridDim.x/y/z): those it strides over.

    A dimension a kernel reads is taken to be a grid-stride dimension, whose
    result must not depend on how many blocks the grid has along it; the
    sanitizer caps it.  Code outside every kernel body (device functions)
    counts for every kernel.
    """
    bodies: dict[str, tuple[int, int]] = {}
    for m in _GLOBAL_RE.finditer(scan):
        name = m.group(2)
        if name not in kernels or name in bodies:
            continue
        params_end = _matching(scan, m.end() - 1, "(", ")")
        brace = scan.find("{", params_end)
        semi = scan.find(";", params_end)
        if brace < 0 or (0 <= semi < brace):
            continue  # a declaration only
        bodies[name] = (brace, _matching(scan, brace, "{", "}"))
    outside, pos = [], 0
    for lo, hi in sorted(bodies.values()):
        outside.append(scan[pos:lo])
        pos = max(pos, hi)
    outside.append(scan[pos:])
    axes = {"x": 0, "y": 1, "z": 2}
    shared = {axes[a] for a in _GRID_DIM_RE.findall("".join(outside))}
    out = {}
    for name in kernels:
        lo, hi = bodies.get(name, (0, 0))
        out[name] = frozenset(shared | {axes[a] for a in _GRID_DIM_RE.findall(scan[lo:hi])})
    return out


# ---- the check build's source ---------------------------------------------------

_SHARED_DECL_RE = re.compile(
    r"\b__shared__\s+(?P<type>(?:[A-Za-z_][\w:]*(?:\s*<[^;{}]*?>)?[\s*&]+)+?)(?P<name>[A-Za-z_]\w*)\s*"
    r"(?P<dims>(?:\[[^\[\];{}]*\]\s*)*);"
)
_BARRIER_CALL_RE = re.compile(r"\b__syncthreads(_count|_and|_or)?(?=\s*\()")
_NAMESPACE_BRACE_RE = re.compile(r"(?:\bextern\s*|\bnamespace(?:\s+[\w:]+)?\s*)$")


def _blank_comments(text: str) -> str:
    """``text`` with comments and string and character literals turned to spaces (newlines kept)."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(n, j + 1)
        else:
            i += 1
            continue
        for k in range(i, j):
            if out[k] != "\n":
                out[k] = " "
        i = j
    return "".join(out)


def check_source(source: str) -> str:
    """The source the check build compiles: ``source`` with two rewrites, line numbers kept.

    A ``__shared__`` declaration of one variable inside a function body becomes
    a reference to its own guarded slot (cuda_compat.h's hc::shared_array), so
    that an access past either end of the array faults, through a pointer too;
    every other ``__shared__`` stays a static of the section the scheduler
    poisons.  Each ``__syncthreads*(`` call becomes ``hc_syncthreads*<column>(``,
    so that the synccheck tells apart two barriers on one line.
    """
    blank = _blank_comments(source)
    edits: list[tuple[int, int, str]] = []
    # Which braces are function bodies (or blocks in them), not extern "C" or namespace scopes.
    stack: list[bool] = []
    code_depth = 0
    pos = 0
    slot = 0
    for m in _SHARED_DECL_RE.finditer(blank):
        for i in range(pos, m.start()):
            ch = blank[i]
            if ch == "{":
                is_code = not _NAMESPACE_BRACE_RE.search(blank[max(0, i - 64):i])
                stack.append(is_code)
                code_depth += is_code
            elif ch == "}" and stack:
                code_depth -= stack.pop()
        pos = m.start()
        if not code_depth:
            continue
        ctype = " ".join(m.group("type").split())
        dims = "".join(m.group("dims").split())
        name = m.group("name")
        newlines = "\n" * source.count("\n", m.start(), m.end())
        edits.append((m.start(), m.end(),
                      f'auto& {name} = *hc::shared_array<{ctype}{dims}, {slot}>("{name}");{newlines}'))
        slot += 1
    for m in _BARRIER_CALL_RE.finditer(blank):
        column = m.start() - (source.rfind("\n", 0, m.start()) + 1) + 1
        edits.append((m.start(), m.end(), f"hc_syncthreads{m.group(1) or ''}<{column}>"))
    out, last = [], 0
    for start, end, text in sorted(edits):
        out.append(source[last:start])
        out.append(text)
        last = end
    out.append(source[last:])
    return "".join(out)


def _launcher(name: str) -> str:
    return (
        f"HC_EXPORT int hc_sig_{name}(char* out, int cap) {{ return hc::signature(&{name}, out, cap); }}\n"
        f"HC_EXPORT int hc_launch_{name}(hc_launch* L, int host_threads) {{\n"
        f"    return hc::launch(L, host_threads, [](void* const* a) {{ hc::invoke(&{name}, a); }});\n"
        f"}}\n"
    )


class _Launch(ctypes.Structure):
    """cuda_compat.h's hc_launch."""

    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("args", ctypes.c_void_p),
        ("status", ctypes.c_int),
        ("message", ctypes.c_char * 512),
        ("thread_order", ctypes.c_int),
        ("block_order", ctypes.c_int),
        ("seed", ctypes.c_ulonglong),
        ("shared_poison", ctypes.c_int),
        ("shared_layout", ctypes.c_int),
        ("fault_kind", ctypes.c_int),
        ("fault_write", ctypes.c_int),
        ("fault_addr", ctypes.c_ulonglong),
    ]


class _Built:
    """A loaded shared library and what is known about it."""

    def __init__(self, path: Path, kernels: list[str], uses_barrier: bool, cache_hit: bool,
                 check: bool, grid_strides: dict[str, frozenset[int]]):
        self.path = path
        self.kernels = kernels
        self.uses_barrier = uses_barrier
        self.cache_hit = cache_hit
        self.check = check
        self.grid_strides = grid_strides
        self.lib = ctypes.CDLL(str(path))


_loaded: dict[str, _Built] = {}
_loaded_lock = threading.Lock()
_build_stats = {"compiles": 0}


def _run_compiler(cmd: list[str], cwd: str, what: str) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run the host C++ compiler: {exc}") from None
    if proc.returncode != 0:
        raise CompileError(f"{what} failed (exit {proc.returncode})", cmd, proc.stdout, proc.stderr)
    return proc.stdout


def _build(source: str, options, no_extern_c: bool, include_dirs, cache: Path, keep: bool, check: bool) -> _Built:
    cxx = find_compiler()
    identity = compiler_identity(tuple(cxx))
    user_flags = _translate_options(options)
    for d in include_dirs or ():
        user_flags += ["-I", str(d)]
    extra = shlex.split(os.environ.get("IMGTOOL_HOSTCUDA_CXXFLAGS", ""))

    def wrapped(src: str) -> str:
        # (The #line keeps the source's own line numbers in messages: barriers, bounds.)
        return src if no_extern_c else 'extern "C" {\n#line 1 "kernel.cu"\n' + src + '\n}\n'

    text = wrapped(source)
    module_text = wrapped(check_source(source)) if check else text

    build = tempfile.mkdtemp(prefix="build-", dir=cache)
    try:
        Path(build, "kernel.cu").write_text(text)
        Path(build, "scan.cpp").write_text(
            '#define HOSTCUDA_SCAN 1\n#include "cuda_compat.h"\n#include "kernel.cu"\n'
        )
        scan = _run_compiler(
            [*cxx, "-E", "-P", "-std=c++17", "-I", str(HEADER_DIR), *user_flags, "scan.cpp"],
            build,
            "preprocessing the kernel source",
        )
        kernels = _find_kernels(scan)
        uses_barrier = bool(_BARRIER_RE.search(scan))
        strides = _grid_strides(scan, kernels)
        mode = ["check", *CHECK_FLAGS, module_text] if check else ["normal"]
        key = hashlib.sha256(
            "\0".join(
                [ABI_VERSION, identity, *CXXFLAGS, *mode, *extra, *user_flags, str(uses_barrier), scan]
            ).encode()
            + COMPAT_HEADER.read_bytes()
        ).hexdigest()[:32]
        target = cache / f"{key}.so"
        with _loaded_lock:
            if str(target) in _loaded:
                return _loaded[str(target)]
        cache_hit = target.exists()
        if cache_hit:
            try:
                built = _Built(target, kernels, uses_barrier, True, check, strides)
            except OSError:  # unloadable (damaged on disk): build it again
                cache_hit = False
                target.unlink(missing_ok=True)
            else:
                with _loaded_lock:
                    return _loaded.setdefault(str(target), built)
        if not cache_hit:
            Path(build, "kernel.cu").write_text(module_text)
            Path(build, "module.cpp").write_text(
                f"#define HC_USES_BARRIER {int(uses_barrier)}\n"
                f"#define HC_CHECK {int(check)}\n"
                '#include "cuda_compat.h"\n'
                '#include "kernel.cu"\n' + "".join(_launcher(k) for k in kernels)
            )
            out = Path(build, "module.so")
            what = "compiling the kernel source for the host"
            if check:
                compile_flags = [f for f in CXXFLAGS if f not in _LINK_ONLY]
                _run_compiler(
                    [*cxx, *compile_flags, *CHECK_FLAGS, *extra, "-I", str(HEADER_DIR), *user_flags,
                     "-c", "module.cpp", "-o", "module.o"],
                    build, what + " (check build)",
                )
                _run_compiler([*cxx, *CXXFLAGS, *extra, "module.o", "-o", str(out)], build, what + " (check build, linking)")
            else:
                _run_compiler(
                    [*cxx, *CXXFLAGS, *extra, "-I", str(HEADER_DIR), *user_flags, "module.cpp", "-o", str(out)],
                    build, what,
                )
            _build_stats["compiles"] += 1
            os.replace(out, target)  # atomic: a concurrent build of the same key is identical
        built = _Built(target, kernels, uses_barrier, cache_hit, check, strides)
        with _loaded_lock:
            return _loaded.setdefault(str(target), built)
    finally:
        if keep:
            print(f"hostcuda: build directory kept at {build}")
        else:
            shutil.rmtree(build, ignore_errors=True)


class SourceModule:
    """pycuda.compiler.SourceModule, compiled for the host."""

    def __init__(
        self,
        source: str,
        nvcc: str = "nvcc",
        options=None,
        keep: bool = False,
        no_extern_c: bool = False,
        arch=None,
        code=None,
        cache_dir: str | os.PathLike | None = None,
        include_dirs=(),
        *,
        check: bool | None = None,
    ):
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        check = sanitizer.enabled() if check is None else bool(check)
        self._built = _build(source, options, no_extern_c, include_dirs, cache, keep, check)
        self._functions: dict[str, Function] = {}

    @property
    def kernel_names(self) -> list[str]:
        return list(self._built.kernels)

    @property
    def uses_barrier(self) -> bool:
        return self._built.uses_barrier

    @property
    def check(self) -> bool:
        """True when this is the check build, whose launches the sanitizer runs."""
        return self._built.check

    @property
    def cache_hit(self) -> bool:
        """True when the library came from the on-disk cache, not the compiler."""
        return self._built.cache_hit

    @property
    def library_path(self) -> Path:
        return self._built.path

    def get_function(self, name: str) -> "Function":
        if name not in self._built.kernels:
            raise LogicError(f"cuModuleGetFunction failed: named symbol not found ({name})")
        fn = self._functions.get(name)
        if fn is None:
            fn = self._functions[name] = Function(self._built, name)
        return fn

    def get_global(self, name: str):
        raise LogicError("hostcuda does not support module globals (get_global)")


def _parse_signature(text: str) -> list[tuple[str, int]]:
    if not text:
        return []
    return [(part[0], int(part[1:])) for part in text.split(",")]


def _dims(value, limits, what: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{what} must be a tuple of 1 to 3 integers, not {value!r}") from None
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"{what} must be a tuple of 1 to 3 integers, not {value!r}")
    dims = dims + (1,) * (3 - len(dims))
    for d, hi in zip(dims, limits):
        if not 1 <= d <= hi:
            raise LogicError(f"cuLaunchKernel failed: invalid argument ({what} {dims} outside 1..{limits})")
    return dims


class Function:
    """A kernel: ``f(*args, block=(x, y, z), grid=(x, y[, z]), stream=None, shared=0)``."""

    def __init__(self, built: _Built, name: str):
        self.name = name
        self._built = built
        self._launch = getattr(built.lib, f"hc_launch_{name}")
        self._launch.argtypes = [ctypes.POINTER(_Launch), ctypes.c_int]
        self._launch.restype = ctypes.c_int
        sig = getattr(built.lib, f"hc_sig_{name}")
        sig.argtypes = [ctypes.c_char_p, ctypes.c_int]
        sig.restype = ctypes.c_int
        text = ctypes.create_string_buffer(4096)
        if sig(text, len(text)) >= len(text) - 1:
            raise LogicError(f"kernel {name} has too many parameters")
        self.params = _parse_signature(text.value.decode())
        self._arg_types: str | None = None
        self.shared_size_bytes = 0
        self.num_regs = 0
        self.max_threads_per_block = driver.MAX_THREADS_PER_BLOCK

    def _marshal(self, args) -> tuple[list, list[tuple[int, int, DeviceAllocation | None]]]:
        """The arguments as ctypes storage, and (parameter, address, allocation) of each pointer."""
        if len(args) != len(self.params):
            raise TypeError(f"kernel {self.name} takes {len(self.params)} arguments, {len(args)} given")
        storage: list = []
        pointers: list[tuple[int, int, DeviceAllocation | None]] = []
        for i, (arg, (kind, size)) in enumerate(zip(args, self.params)):
            if kind == "p":
                if isinstance(arg, DeviceAllocation):
                    if arg.freed:
                        raise LogicError(f"parameter #{i} of {self.name}: the device allocation was freed")
                    address, alloc = int(arg), arg
                elif hasattr(arg, "gpudata"):
                    address = int(arg.gpudata)
                    alloc = driver.find_allocation(address)
                elif isinstance(arg, np.integer) and arg.dtype.itemsize == size:
                    address = int(arg)
                    alloc = driver.find_allocation(address) if address else None
                    if address and alloc is None:
                        raise LogicError(
                            f"parameter #{i} of {self.name}: 0x{address:x} is not in a device allocation"
                        )
                else:
                    raise TypeError(
                        f"invalid type on parameter #{i} (0-based) of {self.name}: it is a pointer, "
                        f"pass a device allocation, not {type(arg).__name__}"
                    )
                pointers.append((i, address, alloc))
                storage.append(ctypes.c_void_p(address))
                continue
            want = {"i": np.integer, "u": np.integer, "f": np.floating, "s": (np.void, np.ndarray)}[kind]
            if not isinstance(arg, want):
                raise TypeError(
                    f"invalid type on parameter #{i} (0-based) of {self.name}: pass a numpy "
                    f"{'integer' if kind in 'iu' else 'float' if kind == 'f' else 'struct'} scalar of "
                    f"{size} bytes (e.g. np.int32(x)), not {type(arg).__name__}"
                )
            raw = arg.tobytes()
            if len(raw) != size:
                raise TypeError(
                    f"parameter #{i} (0-based) of {self.name} is {size} bytes, the argument is {len(raw)}"
                )
            storage.append((ctypes.c_char * size).from_buffer_copy(raw))
        return storage, pointers

    def _launch_once(self, grid, block, argv, schedule=None) -> _Launch:
        """One run of the launcher; ``schedule`` (a sanitizer.Schedule) only for the check build."""
        rec = _Launch((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), ctypes.addressof(argv), 0, b"")
        if schedule is None:
            self._launch(ctypes.byref(rec), driver.host_threads())
        else:
            rec.thread_order, rec.block_order = schedule.threads, schedule.blocks
            rec.seed, rec.shared_poison = schedule.seed, schedule.poison
            rec.shared_layout = sanitizer.LAYOUTS.index(schedule.layout)
            self._launch(ctypes.byref(rec), 1)
        return rec

    def __call__(self, *args, block=None, grid=(1, 1), stream=None, shared=0, texrefs=(), time_kernel=False):
        if block is None:
            raise ValueError("must specify block size")
        blk = _dims(block, driver.MAX_BLOCK, "block")
        if blk[0] * blk[1] * blk[2] > driver.MAX_THREADS_PER_BLOCK:
            raise LogicError(f"cuLaunchKernel failed: invalid argument (block {blk} has over 1024 threads)")
        grd = _dims(grid, driver.MAX_GRID, "grid")
        if shared:
            raise LogicError("hostcuda does not support dynamic shared memory (shared=...); use __shared__ arrays")
        storage, pointers = self._marshal(args)
        name = self.name
        if self._built.check:
            strides = self._built.grid_strides.get(name, frozenset())

            def run():
                sanitizer.run_checked(name, self._launch_once, grd, blk, storage, pointers, strides)
        else:
            allocs = [alloc for _, _, alloc in pointers if alloc is not None]
            argv = (ctypes.c_void_p * max(1, len(storage)))(*[ctypes.addressof(s) for s in storage])

            def run():
                keep = (storage, argv)  # alive until the launch is done
                rec = self._launch_once(grd, blk, argv)
                del keep
                for alloc in allocs:
                    if not alloc.canaries_intact():
                        raise LaunchError(f"kernel {name} wrote outside a device allocation it was passed ({alloc!r})")
                if rec.status:
                    raise LaunchError(f"kernel {name} failed: {rec.message.decode(errors='replace')}")

        if time_kernel:
            driver._sync_all_streams()
            t0 = time.perf_counter()
            driver._run(None, run)
            return time.perf_counter() - t0
        driver._run(stream, run)
        return None

    # PyCUDA's prepared-call interface: argument types as struct format characters.
    def prepare(self, arg_types) -> "Function":
        self._arg_types = "".join(arg_types) if not isinstance(arg_types, str) else arg_types
        return self

    def _prepared_args(self, args) -> list:
        if self._arg_types is None:
            raise LogicError("call prepare() before prepared_call()")
        if len(args) != len(self._arg_types):
            raise TypeError(f"prepared for {len(self._arg_types)} arguments, {len(args)} given")
        out = []
        for code, arg in zip(self._arg_types, args):
            if code == "P":
                out.append(arg if isinstance(arg, DeviceAllocation) else np.uintp(int(arg)))
            else:
                out.append(np.dtype(code).type(arg))
        return out

    def prepared_call(self, grid, block, *args, shared_size=0):
        return self(*self._prepared_args(args), block=block, grid=grid, shared=shared_size)

    def prepared_async_call(self, grid, block, stream, *args, shared_size=0):
        return self(*self._prepared_args(args), block=block, grid=grid, stream=stream, shared=shared_size)

    def prepared_timed_call(self, grid, block, *args, shared_size=0):
        elapsed = self(*self._prepared_args(args), block=block, grid=grid, shared=shared_size, time_kernel=True)
        return lambda: elapsed
