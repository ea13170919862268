"""Queue jobs: parsing and validating the upload server's JSON, and the entries written back.

A job as the upload server makes it::

    {"jobId": "...", "inputPath": "/abs/...", "outputDir": "/abs/.../processed",
     "operations": ["thumbnail", "blur", "low-quality"], "timestamp": 1737158400000,
     "retryCount": 0}

plus an optional ``options`` object.  Unknown fields are kept, and come back
in the ``image:done`` / ``image:failed`` entries and in retried jobs.
``timestamp`` and ``retryCount`` may be left out (hand-pushed jobs; the retry
count is then 0) but are refused when present with the wrong type.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .. import storage
from ..errors import ImgtoolError, InvalidJob
from .. import ops as registry
from ..ops import Settings, output_names
from .defaults import ALLOW_ROOTS_ENV, FAILED_PAYLOAD_EXCERPT, MAX_PATH_LENGTH, MAX_PAYLOAD_BYTES

# SPEC: a jobId is a plain file name; with no "..", so it can never climb out
# of outputDir once "_<operation>.webp" is appended.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
REQUIRED_FIELDS = ("jobId", "inputPath", "outputDir", "operations")
# The most digits an integer in a job may have (2**63 has 19).
MAX_INT_DIGITS = 19
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Job:
    """A valid job, ready for the pipeline."""

    raw: bytes  # the payload exactly as taken: the in-flight list holds these bytes
    data: dict  # the parsed object, unknown fields and all
    job_id: str
    input_path: str  # as the producer wrote them
    output_dir: str
    operations: tuple[str, ...]
    retry_count: int
    settings: Settings
    src: Path | str  # inputPath and outputDir with symlinks resolved: what is opened (s3:// URLs as given)
    out_dir: Path | str

    def output_paths(self) -> dict[str, str]:
        """Each output under outputDir as the producer named it (the convention), by output key."""
        if storage.scheme_of(self.output_dir):
            store = storage.for_location(self.output_dir)
            return {key: store.join(self.output_dir, name)
                    for key, name in output_names(self.job_id, self.settings).items()}
        return {key: os.path.join(self.output_dir, name)
                for key, name in output_names(self.job_id, self.settings).items()}


# --------------------------------------------------------------------------- roots


class AllowRoots:
    """The folders jobs may read from and write to, as their stores compare them (after symlinks)."""

    def __init__(self, roots: Iterable[str | os.PathLike] | None):
        # ValueError for a root its store cannot use (a local one that is no folder).
        self.roots = tuple(storage.for_location(r).root(r) for r in (roots or ()))

    @classmethod
    def from_options(cls, roots: Sequence[str], env: Mapping[str, str] | None = None) -> "AllowRoots":
        """``--allow-root`` when given, else ``IMGTOOL_ALLOW_ROOTS`` (os.pathsep-separated)."""
        env = os.environ if env is None else env
        if not roots:
            roots = split_roots(env.get(ALLOW_ROOTS_ENV, ""))
        return cls(roots)

    def __bool__(self) -> bool:
        return bool(self.roots)

    def resolve(self, path: str, field: str):
        """``path`` as it will be opened (symlinks resolved); PathNotAllowed when it lands outside every root."""
        return storage.for_location(path).confine(path, self.roots, field)


def split_roots(text: str) -> list[str]:
    """``IMGTOOL_ALLOW_ROOTS`` as roots: os.pathsep-separated, an ``s3://`` URL's own ':' kept."""
    parts = text.split(os.pathsep)
    roots: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if part.lower() in storage.SCHEMES and i + 1 < len(parts) and parts[i + 1].startswith("//"):
            part = f"{part}:{parts[i + 1]}"
            i += 1
        if part:
            roots.append(part)
        i += 1
    return roots


# --------------------------------------------------------------------------- parsing


def load(raw: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict:
    """The JSON object in ``raw``; InvalidJob when it is too large, not UTF-8, not JSON or no object."""
    if len(raw) > max_bytes:
        raise InvalidJob(f"payload is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJob(f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise InvalidJob(f"payload is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise InvalidJob("payload is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidJob(f"payload must be a JSON object, not {_kind(data)}")
    _refuse_surrogates(data)
    return data


def _bounded_int(text: str) -> int:
    # Python refuses over 4300 digits with a ValueError of its own; a job's numbers are
    # milliseconds and counts, so anything past 64 bits is refused by name first.
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidJob(f"payload holds a number of {len(text)} digits, over {MAX_INT_DIGITS}")
    return int(text)


def _refuse_surrogates(value) -> None:
    """JSON may spell lone UTF-16 surrogates ("\ud800"), which no path or UTF-8 entry can hold."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                raise InvalidJob("payload holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _refuse_constant(name: str):
    raise InvalidJob(f"payload holds {name}, which is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJob(f"payload holds the number {text}, too large for a float")
    return value


def parse(raw: bytes, base: Settings, roots: AllowRoots, max_bytes: int = MAX_PAYLOAD_BYTES) -> Job:
    """Validate ``raw`` into a Job.  Raises InvalidJob or PathNotAllowed (both permanent)."""
    data = load(raw, max_bytes)
    return validate(raw, data, base, roots)


def validate(raw: bytes, data: dict, base: Settings, roots: AllowRoots) -> Job:
    missing = [f for f in REQUIRED_FIELDS if f not in data]
    if missing:
        raise InvalidJob(f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    job_id = _job_id(data["jobId"])
    input_path = _abs_path("inputPath", data["inputPath"])
    output_dir = _abs_path("outputDir", data["outputDir"])
    operations = _operations(data["operations"], base)
    retry_count = _retry_count(data)
    if "timestamp" in data:
        ts = data["timestamp"]
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts < 0:
            raise InvalidJob(f"timestamp must be a non-negative number (ms), not {_show(ts)}")
    options = data.get("options")
    settings = base.with_job_options(options).replace(ops=operations)
    src = roots.resolve(input_path, "inputPath")
    out_dir = roots.resolve(output_dir, "outputDir")
    store = storage.for_location(out_dir)
    # A local file in the way fails the job at once (a stat); an object store's prefixes have
    # nothing in their way, and asking it would cost a request per job.
    if not storage.scheme_of(out_dir) and store.kind(out_dir) == "file":
        raise InvalidJob("outputDir is a file, not a folder", output_dir)
    outputs = {store.join(out_dir, name) for name in output_names(job_id, settings).values()}
    if src in outputs:
        raise InvalidJob("inputPath is one of the job's own outputs", input_path)
    return Job(raw, data, job_id, input_path, output_dir, operations, retry_count, settings, src, out_dir)


def _job_id(value) -> str:
    if not isinstance(value, str):
        raise InvalidJob(f"jobId must be a string, not {_kind(value)}")
    # fullmatch: "$" alone would let a final newline through ("nl\n").
    if ".." in value or not JOB_ID_RE.fullmatch(value):
        raise InvalidJob(f"jobId {_show(value)} is not a plain file name "
                         "(letters, digits, '.', '_', '-'; up to 200; no '..')")
    return value


def _abs_path(field: str, value) -> str:
    if not isinstance(value, str):
        raise InvalidJob(f"{field} must be a string, not {_kind(value)}")
    if not value:
        raise InvalidJob(f"{field} is empty")
    if "\0" in value:
        raise InvalidJob(f"{field} contains a NUL character")
    if len(value) > MAX_PATH_LENGTH:
        raise InvalidJob(f"{field} is {len(value)} characters, over {MAX_PATH_LENGTH}")
    if storage.scheme_of(value):
        storage.location(value)  # a URL its store refuses is an invalid job (InvalidJob)
        return value
    if not os.path.isabs(value):
        raise InvalidJob(f"{field} {_show(value)} is not an absolute path or an s3:// URL")
    return value


def _operations(value, base: Settings) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidJob(f"operations must be a list, not {_kind(value)}")
    if not value:
        raise InvalidJob("operations is empty")
    ops = []
    for op in value:
        if not isinstance(op, str):
            raise InvalidJob(f"operations holds {_kind(op)}, not an operation name")
        if registry.find(op) is None:
            raise InvalidJob(f"unknown operation {_show(op)} (known: {', '.join(registry.names())})")
        if op not in base.ops:
            raise InvalidJob(f"operation {op!r} is not enabled on this worker (--ops {','.join(base.ops)})")
        if op in ops:
            raise InvalidJob(f"operation {op!r} is named twice")
        ops.append(op)
    return tuple(ops)


def _retry_count(data: dict) -> int:
    value = data.get("retryCount", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidJob(f"retryCount must be a non-negative integer, not {_show(value)}")
    return value


def retry_count_of(data: dict | None) -> int:
    """The job's retry count when it has a usable one, else 0 (for failed entries)."""
    value = (data or {}).get("retryCount", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _show(value, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, (dict, list)) else _kind(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- entries


def now_ms() -> int:
    return int(time.time() * 1000)


def dumps(obj) -> bytes:
    """Compact JSON, as JSON.stringify writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def done_entry(job: Job, outputs: Mapping[str, str], duration_ms: float, worker: str,
               details: Mapping | None = None) -> bytes:
    """The job plus its result; ``details``: what the pipeline says of the image (its width and
    height, ``skippedOutputs``, ``placeholders``)."""
    entry = dict(job.data)
    entry.update(status="done", outputs=dict(outputs), durationMs=round(duration_ms, 1),
                 finishedAt=now_ms(), worker=worker)
    entry.update(details or {})
    return dumps(entry)


def failed_entry(raw: bytes, data: dict | None, error: ImgtoolError | Mapping, worker: str,
                 retry_count: int | None = None) -> bytes:
    """The job (or the raw payload when it is no JSON object) plus the failure."""
    if data is not None:
        entry = dict(data)
    else:
        text = raw.decode("utf-8", "replace")
        entry = {"payload": text[:FAILED_PAYLOAD_EXCERPT]}
        if len(text) > FAILED_PAYLOAD_EXCERPT:
            entry.update(payloadTruncated=True, payloadBytes=len(raw))
    err = {"type": error.code, "message": str(error)} if isinstance(error, ImgtoolError) else dict(error)
    entry.update(status="failed", error=err, failedAt=now_ms(),
                 retryCount=retry_count_of(data) if retry_count is None else retry_count, worker=worker)
    return dumps(entry)


def retry_payload(job: Job) -> bytes:
    """The job as it goes back to the queue: the same fields, retryCount one higher."""
    data = dict(job.data)
    data["retryCount"] = job.retry_count + 1
    return dumps(data)


def try_load(raw: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict | None:
    """The job object when ``raw`` holds one, else None (for failed entries)."""
    try:
        return load(raw, max_bytes)
    except InvalidJob:
        return None
