"""Objects in S3-compatible storage as inputs and outputs: s3:// URLs, bounded reads, atomic writes, freshness.

The second implementation of the storage seam beside local files (boto3, the
``s3`` extra).  What holds for files holds here:

- an input's size is checked (HEAD) against ``max_input_bytes`` before it is
  fetched, and the GET never reads more than that, whatever the server says;
- each output is one PUT (atomic in S3: a reader sees the old object or the
  new one), with its Content-Type; a job's outputs are all-or-nothing: when
  one PUT fails, the objects this attempt wrote are deleted;
- an output is up to date when it is at least as new as its input, was made
  from that input (its ETag) and with the same settings: both are kept as
  the object's user metadata (``x-amz-meta-imgtool-source`` and
  ``x-amz-meta-imgtool-settings``), read back by HEAD;
- ``--allow-root s3://bucket/prefix`` confines to a prefix on whole key
  components;
- every failure is one of imgtool's errors: a missing object is retryable
  ``input_not_found`` (it may not be there yet), a missing bucket or refused
  credentials are permanent, 5xx, throttling, timeouts and refused
  connections are retryable ``io_error``.

Keys are validated as hostile input: a key with ``.``/``..`` or empty
components, a backslash, or a control character is refused, because
S3-compatible servers backed by a file system (SeaweedFS's filer, MinIO on a
disk) normalise such keys into other keys, which would defeat the prefix
confinement, and because such a name would break a log line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from ..errors import (
    CorruptImage,
    ImageTooLarge,
    ImgtoolError,
    InputNotFound,
    InvalidJob,
    PathNotAllowed,
    PermanentError,
    TransientIOError,
    UnsupportedFormat,
)
from .base import Input as _Input
from .base import Store as _StoreBase

log = logging.getLogger("imgtool")

SCHEME = "s3://"
DEFAULT_MAX_INPUT_BYTES = 256 * 1024 * 1024
# How a client talks to the server: each call gives up after these (seconds);
# botocore's "standard" retry mode tries a throttled, 5xx or broken call this
# many times in all, with its own jittered backoff, before imgtool sees it.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_REGION = "us-east-1"
READ_CHUNK = 1 << 20

# User metadata (x-amz-meta-<name>) on every output object.
SETTINGS_META = "imgtool-settings"
SOURCE_META = "imgtool-source"
MAX_META_VALUE = 512

CONTENT_TYPES = {".webp": "image/webp", ".avif": "image/avif"}
PROCESSED_DIR = "processed"
MAX_KEY_BYTES = 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# AWS reserves these; no S3-compatible server accepts them either.
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
# Bidirectional overrides make a name read differently from what it is.
_SPOOF_CHARS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")

# AWS endpoints keep virtual-hosted addressing; any other is addressed by path.
_AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn")


class InvalidS3Url(InvalidJob):
    """An ``s3://`` URL that names no object or prefix imgtool will touch (permanent)."""


# --------------------------------------------------------------------------- URLs


def is_s3_url(text: object) -> bool:
    """True for a string that starts with ``s3://`` (any case): it is an object URL, not a path."""
    return isinstance(text, str) and text[:5].lower() == SCHEME


@dataclass(frozen=True, order=True)
class S3Url:
    """A bucket and a key; a key ending in ``/`` (or empty) is a prefix, a "folder"."""

    bucket: str
    key: str = ""

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    @property
    def name(self) -> str:
        """The last component (a file name), "" for a prefix."""
        return "" if self.is_prefix else self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "S3Url":
        """The prefix the object is in (its folder)."""
        base = self.key[:-1] if self.key.endswith("/") else self.key
        head = base.rsplit("/", 1)[0] + "/" if "/" in base else ""
        return S3Url(self.bucket, head)

    def as_prefix(self) -> "S3Url":
        """This URL as a folder: ``s3://b/u1`` -> ``s3://b/u1/`` (so it never matches ``u10/``)."""
        return self if self.is_prefix else S3Url(self.bucket, self.key + "/")

    def join(self, *parts: str) -> "S3Url":
        """A key below this prefix, validated; ``parts`` are ``/``-separated relative names."""
        key = self.as_prefix().key + "/".join(parts)
        shown = _printable(f"{SCHEME}{self.bucket}/{key}")
        return S3Url(self.bucket, _check_key(key, shown, prefix=key.endswith("/")))

    def is_within(self, root: "S3Url") -> bool:
        """True when this URL is below ``root`` (taken as a folder), on whole key components.

        ``s3://b/u1/`` is within ``s3://b/u1``; the object ``s3://b/u1`` is not
        (it sits beside that folder), nor is ``s3://b/u10/x``.
        """
        if self.bucket != root.bucket:
            return False
        prefix = root.as_prefix().key
        return prefix == "" or self.key.startswith(prefix)

    def relative_to(self, root: "S3Url") -> str:
        """The key below ``root`` (``root`` must contain it)."""
        if not self.is_within(root):
            raise ValueError(f"{self} is not within {root}")
        return self.key[len(root.as_prefix().key):]


def parse_s3_url(text: str, prefix: bool | None = None) -> S3Url:
    """``s3://bucket/key`` as an S3Url; InvalidS3Url (permanent, a job's invalid_job) for anything else.

    ``prefix=True`` takes a folder (an empty key or one ending in ``/`` is
    allowed; ``s3://b/u1`` becomes ``s3://b/u1/``), ``prefix=False`` an
    object (a key is required and may not end in ``/``), ``None`` either as
    written.  No percent-decoding is done: a key is taken as written.
    """
    if not isinstance(text, str):
        raise InvalidS3Url(f"an s3:// URL must be a string, not {type(text).__name__}")
    shown = _printable(text)
    if not is_s3_url(text):
        raise InvalidS3Url("not an s3:// URL", shown)
    rest = text[len(SCHEME):]
    bucket, sep, key = rest.partition("/")
    _check_bucket(bucket, shown)
    if prefix is False and (not key or key.endswith("/")):
        raise InvalidS3Url("names a prefix (a folder), not an object", shown)
    if key:
        _check_key(key, shown, prefix=prefix is not False)
    url = S3Url(bucket, key)
    return url.as_prefix() if prefix else url


def _printable(text: str) -> str:
    """``text`` safe for one log line: control and spoofing characters escaped, length capped."""
    out = "".join(ch if _safe_char(ch) else ascii(ch)[1:-1] for ch in text[:300])
    return out + ("..." if len(text) > 300 else "")


def _safe_char(ch: str) -> bool:
    return unicodedata.category(ch) not in ("Cc", "Cs") and ch not in _SPOOF_CHARS


def _check_bucket(bucket: str, shown: str) -> None:
    if not bucket:
        raise InvalidS3Url("no bucket name", shown)
    if (not _BUCKET_RE.match(bucket) or ".." in bucket or _IPV4_RE.match(bucket)
            or bucket.startswith(_BUCKET_RESERVED_PREFIXES) or bucket.endswith(_BUCKET_RESERVED_SUFFIXES)):
        raise InvalidS3Url(
            "invalid bucket name (3-63 lower-case letters, digits, '.' and '-', "
            "starting and ending with a letter or digit)", shown)


def _check_key(key: str, shown: str, prefix: bool) -> str:
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidS3Url("key is not valid UTF-8", shown) from None
    if size > MAX_KEY_BYTES:
        raise InvalidS3Url(f"key longer than {MAX_KEY_BYTES} bytes", shown)
    bad = next((ch for ch in key if not _safe_char(ch)), None)
    if bad is not None:
        raise InvalidS3Url(f"key holds a control character ({ascii(bad)})", shown)
    if "\\" in key:
        raise InvalidS3Url("key holds a backslash", shown)
    parts = key.split("/")
    if prefix and parts[-1] == "":
        parts = parts[:-1]
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidS3Url("key has an empty, '.' or '..' component", shown)
    return key


# --------------------------------------------------------------------------- roots


def check_allowed(url: S3Url, roots: Iterable[S3Url], field: str = "path") -> S3Url:
    """``url`` when it lies within one of ``roots`` (prefixes, whole components); else PathNotAllowed."""
    roots = tuple(roots)
    if any(url.is_within(r) for r in roots):
        return url
    raise PathNotAllowed(f"{field} is outside the allowed roots ({', '.join(map(str, roots))})", url)


# --------------------------------------------------------------------------- client


def make_client(
    endpoint_url: str | None = None,
    *,
    profile: str | None = None,
    region: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
):
    """A boto3 S3 client from the standard AWS settings, ``endpoint_url`` (``--s3-endpoint``) first.

    Credentials, region and endpoint come from where every AWS tool reads
    them (``AWS_ENDPOINT_URL[_S3]``, ``AWS_ACCESS_KEY_ID``/``..._SECRET_...``,
    ``AWS_PROFILE`` or ``profile``, the shared config files, an instance
    role).  A non-AWS endpoint (MinIO, Ceph, SeaweedFS, R2) is addressed by
    path (``http://host/bucket/key``: such servers rarely have a DNS name per
    bucket) and sent checksums only where the API requires them (older
    servers refuse the newer default ones).  The client is thread-safe;
    ``max_connections`` should cover every transfer in flight at once.
    A missing boto3 or profile is a PermanentError.
    """
    try:
        import boto3
        import botocore.exceptions
        import botocore.session
        from botocore.config import Config
    except ImportError:
        raise PermanentError("s3:// needs boto3: pip install 'imgtool[s3]'") from None
    if endpoint_url is not None:
        _check_endpoint(endpoint_url)
    try:
        core = botocore.session.Session(profile=profile)
        scoped = core.get_scoped_config()
    except botocore.exceptions.ProfileNotFound as exc:
        raise PermanentError(f"AWS profile not found ({exc})") from None
    session = boto3.session.Session(botocore_session=core)
    region = region or session.region_name or DEFAULT_REGION

    def build(path_style: bool):
        extra = {}
        if path_style:
            extra = dict(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                         response_checksum_validation="when_required")
        config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                        retries={"total_max_attempts": max_attempts, "mode": "standard"},
                        max_pool_connections=max_connections, **extra)
        return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

    # Where the endpoint is set (the option, AWS_ENDPOINT_URL[_S3], the profile)
    # it decides the addressing at once; else botocore resolves it (AWS, or a
    # services section of the config file), and a non-AWS answer is built again.
    try:
        known = endpoint_url or _configured_endpoint(scoped)
        if known is not None:
            return build(path_style=not _is_aws(known))
        client = build(path_style=False)
        return client if _is_aws(client.meta.endpoint_url) else build(path_style=True)
    except botocore.exceptions.BotoCoreError as exc:  # a bad setting (CA bundle, region, config file)
        raise PermanentError(f"the S3 client cannot be set up ({_short(exc)})") from None


def _configured_endpoint(scoped: Mapping) -> str | None:
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    if scoped.get("ignore_configured_endpoint_urls", "").lower() == "true":
        return None
    return scoped.get("endpoint_url") or None


def _is_aws(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower().endswith(_AWS_HOST_SUFFIXES)


def _check_endpoint(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"S3 endpoint must be an http:// or https:// URL, not {_printable(url)!r}")


# --------------------------------------------------------------------------- errors

_CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired",
    "AuthorizationHeaderMalformed", "InvalidSecurity", "MissingSecurityHeader", "RequestTimeTooSkewed",
    "InvalidClientTokenId", "UnrecognizedClientException",
})
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidPayer", "Forbidden"})
_THROTTLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequests", "TooManyRequestsException", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "ProvisionedThroughputExceededException", "ErrTooManyRequest",
    "ErrRequestBytesExceed", "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
    "InternalError", "ServiceUnavailable", "XMinioServerNotInitialized",
})


def _short(text: object, limit: int = 200) -> str:
    """A server's text as part of one line."""
    s = " ".join(str(text).split())
    return _printable(s[:limit] + ("..." if len(s) > limit else ""))


def error_from_boto(exc: BaseException, url: S3Url | str, writing: bool = False) -> ImgtoolError:
    """Map what boto3 raised while reading (or, with ``writing``, writing) ``url`` to a named error.

    One line, naming the URL; never a traceback.  A 404 here is "no such
    object" (retryable ``input_not_found``) unless the server said
    NoSuchBucket; callers that made a HEAD, which carries no error code,
    ask the bucket first (S3Store does).
    """
    import botocore.exceptions as bce

    if isinstance(exc, ImgtoolError):
        return exc
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code", ""))
        message = err.get("Message") or ""
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = _short(f"{code}: {message}" if message and message != code else code or status)
        bucket = url.bucket if isinstance(url, S3Url) else ""
        if code == "NoSuchBucket":
            return PermanentError(f"no such bucket {bucket!r}", url)
        if code in _CREDENTIAL_CODES:
            return PermanentError(f"credentials refused by the server ({detail})", url)
        if code in _DENIED_CODES or status == 403:
            if code in ("", "403", "Forbidden"):
                detail = "403 Forbidden: the credentials are wrong or lack the permission"
            return PermanentError(f"access denied ({detail})", url)
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            if writing:
                return PermanentError(f"not found on write ({detail})", url)
            return InputNotFound("no such object", url)
        if code in ("PreconditionFailed", "412") or status == 412:
            return TransientIOError("the object changed while it was being read", url)
        if code in _THROTTLE_CODES or status == 429 or status >= 500:
            return TransientIOError(f"server busy or failing ({status or '?'} {detail})", url)
        if code == "InvalidBucketName":
            return PermanentError(f"invalid bucket name ({detail})", url)
        return PermanentError(f"refused by the server ({status} {detail})", url)
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return PermanentError(
            "no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)", url)
    if isinstance(exc, bce.CredentialRetrievalError):
        return PermanentError(f"AWS credentials could not be loaded ({_short(exc)})", url)
    if isinstance(exc, bce.ProfileNotFound):
        return PermanentError(f"AWS profile not found ({_short(exc)})", url)
    if isinstance(exc, bce.SSLError):
        return PermanentError(f"TLS failed ({_short(exc)})", url)
    if isinstance(exc, (bce.ConnectTimeoutError, bce.ReadTimeoutError)):
        return TransientIOError(f"timed out ({_short(exc)})", url)
    if isinstance(exc, bce.EndpointConnectionError):
        return TransientIOError(f"cannot connect ({_short(exc)})", url)
    if isinstance(exc, bce.ParamValidationError):
        return PermanentError(f"invalid request ({_short(exc)})", url)
    if isinstance(exc, (bce.BotoCoreError, OSError)):
        # Broken connections, short reads, streaming errors: the network's doing.
        return TransientIOError(f"transfer failed ({type(exc).__name__}: {_short(exc)})", url)
    try:
        import urllib3.exceptions
    except ImportError:  # pragma: no cover - botocore depends on urllib3
        urllib3 = None
    if urllib3 is not None and isinstance(exc, urllib3.exceptions.HTTPError):
        return TransientIOError(f"transfer failed ({type(exc).__name__}: {_short(exc)})", url)
    raise exc


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD or a listing says of one object."""

    url: S3Url
    size: int
    mtime: float  # LastModified as POSIX seconds (S3 keeps whole seconds)
    etag: str | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Output:
    """One object to write: its URL, bytes, Content-Type (from the suffix) and settings fingerprint."""

    url: S3Url
    data: bytes
    fingerprint: str = ""
    content_type: str | None = None

    def __post_init__(self):
        if self.url.is_prefix:
            raise ValueError(f"{self.url} is a prefix, not an output object")
        if self.content_type is None:
            suffix = "." + self.url.name.rsplit(".", 1)[-1].lower() if "." in self.url.name else ""
            if suffix not in CONTENT_TYPES:
                # SPEC: nothing but <jobId>_<operation>[-<W>].<webp|avif> is ever written.
                raise ValueError(f"{self.url}: an output must be .webp or .avif")
            object.__setattr__(self, "content_type", CONTENT_TYPES[suffix])


def meta_value(fingerprint: str) -> str:
    """``fingerprint`` as S3 user metadata keeps it: printable ASCII as is, anything else as its SHA-256."""
    if (len(fingerprint) <= MAX_META_VALUE and fingerprint == fingerprint.strip()
            and all(" " <= ch <= "~" for ch in fingerprint)):
        return fingerprint
    return "sha256:" + hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()


def _etag(value: object) -> str | None:
    return str(value).strip('"') if value else None


def _default_accept(name: str) -> bool:
    from .names import is_image_name

    return is_image_name(name)


class S3Store:
    """Reads inputs from and writes outputs to one S3 client's endpoint."""

    def __init__(self, client=None, *, max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES, **client_options):
        if not isinstance(max_input_bytes, int) or max_input_bytes < 1:
            raise ValueError("max_input_bytes must be a positive integer")
        self.client = client if client is not None else make_client(**client_options)
        self.max_input_bytes = max_input_bytes
        self._buckets_seen: set[str] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    # ------------------------------------------------------------------ reading

    def stat(self, url: S3Url) -> ObjectInfo:
        """HEAD ``url``: its size, time, ETag and metadata; a named error when it cannot be had."""
        try:
            head = self.client.head_object(Bucket=url.bucket, Key=url.key)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped, none escapes raw
            raise self._head_error(exc, url) from None
        return ObjectInfo(
            url=url, size=int(head.get("ContentLength", 0)), mtime=head["LastModified"].timestamp(),
            etag=_etag(head.get("ETag")), content_type=head.get("ContentType"),
            metadata=dict(head.get("Metadata") or {}),
        )

    def _head_error(self, exc: Exception, url: S3Url) -> ImgtoolError:
        err = error_from_boto(exc, url)
        if isinstance(err, InputNotFound) and self._bucket_missing(url):
            # HEAD answers a bare 404 for both; the bucket's own HEAD tells them apart.
            return PermanentError(f"no such bucket {url.bucket!r}", url)
        return err

    def _bucket_missing(self, url: S3Url) -> bool:
        """True only when the server says the bucket does not exist (a policy may refuse to say)."""
        try:
            return not self._bucket_exists(url)
        except ImgtoolError:
            return False

    def _bucket_exists(self, url: S3Url) -> bool:
        try:
            self.client.head_bucket(Bucket=url.bucket)
        except Exception as exc:  # noqa: BLE001
            err = error_from_boto(exc, url)
            if isinstance(err, InputNotFound):
                return False
            raise err from None
        return True

    def read(self, url: S3Url, info: ObjectInfo | None = None) -> bytes:
        """The object's bytes, at most ``max_input_bytes`` of them.

        The size is checked by HEAD (or from ``info``, a listing's or an
        earlier stat's) before the GET; the GET asks for no more than the limit
        allows, stops reading one byte past it whatever the server sends, and
        is conditional on the ETag seen, so an object replaced in between is a
        retryable error, never half of one and half of the other.
        """
        if info is None:
            info = self.stat(url)
        limit = self.max_input_bytes
        if info.size > limit:
            raise ImageTooLarge(f"is {info.size} bytes, over the input limit of {limit} bytes", url)
        if info.size == 0:
            return b""
        args = {"Bucket": url.bucket, "Key": url.key, "Range": f"bytes=0-{limit}"}
        if info.etag:
            args["IfMatch"] = f'"{info.etag}"'
        chunks: list[bytes] = []
        got = 0
        try:
            body = self.client.get_object(**args)["Body"]
            try:
                while got <= limit:
                    chunk = body.read(min(READ_CHUNK, limit + 1 - got))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
            finally:
                body.close()
        except Exception as exc:  # noqa: BLE001
            raise error_from_boto(exc, url) from None
        if got > limit:
            raise ImageTooLarge(f"is over the input limit of {limit} bytes (the server sent more)", url)
        if got != info.size:
            raise TransientIOError(f"read {got} bytes of {info.size}: the object changed or the transfer broke",
                                   url)
        return b"".join(chunks)

    def inputs(self, url: S3Url, accept: Callable[[str], bool] | None = None) -> Iterator[ObjectInfo]:
        """The inputs ``url`` names, as ``process`` takes a path: the object itself, or every input below it.

        A URL not ending in ``/`` is first tried as an object (taken whatever
        its name, as a file named on the command line is); when there is none
        it is a prefix.
        """
        if not url.is_prefix:
            try:
                yield self.stat(url)
                return
            except InputNotFound:
                pass
        yield from self.list_inputs(url.as_prefix(), accept)

    def list_inputs(
        self, prefix: S3Url, accept: Callable[[str], bool] | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Every input under ``prefix``, page by page as the consumer takes them.

        The names process and watch take from folders: keys inside a
        ``processed/`` or hidden folder below the prefix, hidden names,
        temporary names and imgtool's own outputs are skipped (``accept``, by
        default storage/names.py's rule for a file name, decides on the last
        component).  A key this module would refuse as a URL is skipped with
        a warning.  Keys come in the server's order (by key), ``page_size``
        to a request.
        """
        prefix = prefix.as_prefix()
        accept = accept or _default_accept
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key,
                                   PaginationConfig={"PageSize": page_size})
        try:
            for page in pages:
                for entry in page.get("Contents", ()):
                    info = self._listed(prefix, entry, accept)
                    if info is not None:
                        yield info
        except ImgtoolError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise error_from_boto(exc, prefix) from None

    def _listed(self, prefix: S3Url, entry: Mapping, accept: Callable[[str], bool]) -> ObjectInfo | None:
        key = entry["Key"]
        rel = key[len(prefix.key):]
        parts = rel.split("/")
        if not rel or rel.endswith("/"):
            return None  # a "folder" marker object
        if any(p == PROCESSED_DIR or p.startswith(".") for p in parts[:-1]) or not accept(parts[-1]):
            return None
        try:
            url = S3Url(prefix.bucket, _check_key(key, _printable(f"{SCHEME}{prefix.bucket}/{key}"), False))
        except InvalidS3Url as exc:
            log.warning("skipped: %s", exc)
            return None
        return ObjectInfo(url=url, size=int(entry.get("Size", 0)), mtime=entry["LastModified"].timestamp(),
                          etag=_etag(entry.get("ETag")))

    # ------------------------------------------------------------------ writing

    def check_output_dir(self, url: S3Url) -> None:
        """Fail once, before any work, when ``url``'s bucket is missing or refused.

        S3 has no folders to create and no way to test a write without
        writing; the bucket's HEAD is what can be known up front.
        """
        if url.bucket in self._buckets_seen:
            return
        if not self._bucket_exists(url):
            raise PermanentError(f"no such bucket {url.bucket!r}", url)
        with self._lock:
            self._buckets_seen.add(url.bucket)

    def write_outputs(self, outputs: Sequence[Output], source: ObjectInfo | None = None) -> list[S3Url]:
        """PUT every output (one PUT each, atomic there), or none.

        Each object carries its Content-Type, its settings fingerprint and the
        source's ETag as user metadata, which ``up_to_date`` reads back.  When
        a PUT fails (or the thread is interrupted), the objects this call has
        written are deleted before the error goes on.
        """
        written: list[S3Url] = []
        try:
            for out in outputs:
                metadata = {SETTINGS_META: meta_value(out.fingerprint)}
                if source is not None and source.etag:
                    metadata[SOURCE_META] = source.etag
                try:
                    self.client.put_object(Bucket=out.url.bucket, Key=out.url.key, Body=out.data,
                                           ContentType=out.content_type, Metadata=metadata)
                except Exception as exc:  # noqa: BLE001
                    raise error_from_boto(exc, out.url, writing=True) from None
                written.append(out.url)
        except BaseException:
            self._undo(written)
            raise
        return written

    def _undo(self, urls: Iterable[S3Url]) -> None:
        for url in urls:
            try:
                self.remove(url)
            except ImgtoolError as exc:
                log.warning("could not remove %s after a failed write: %s", url, exc)

    def remove(self, url: S3Url) -> None:
        """DELETE one object (S3 answers success when it is already gone)."""
        try:
            self.client.delete_object(Bucket=url.bucket, Key=url.key)
        except Exception as exc:  # noqa: BLE001
            raise error_from_boto(exc, url, writing=True) from None

    def up_to_date(self, source: ObjectInfo, outputs: Mapping[S3Url, str]) -> bool:
        """True when every output exists, is at least as new as ``source``, and was made from it
        with the same settings (``outputs`` maps each output URL to its settings fingerprint).

        A missing output is False; any other failure to look is raised (a
        server that cannot answer HEAD cannot take the PUTs either).
        """
        for url, fingerprint in outputs.items():
            try:
                out = self.stat(url)
            except InputNotFound:
                return False
            if out.mtime < source.mtime:
                return False
            if out.metadata.get(SETTINGS_META) != meta_value(fingerprint):
                return False
            made_from = out.metadata.get(SOURCE_META)
            if source.etag and made_from != source.etag:
                return False
        return True


# --------------------------------------------------------------------------- the store seam

#: Objects fetched ahead of the workers (``prefetch``) at most, and the transfers run at once.
PREFETCH_LIMIT = 16
TRANSFER_THREADS = 8
#: The most bytes held by fetches ahead; an input that would pass it is fetched when it is opened.
PREFETCH_BYTES = 256 * 1024 * 1024

# What ``configure`` set: the next ObjectStore made takes these.
_config: dict = {}


def configure(*, endpoint_url: str | None = None, max_input_bytes: int | None = None) -> None:
    """The command line's ``--s3-endpoint`` and ``--max-input-bytes``, for every s3:// location after this."""
    from . import _reset

    if endpoint_url is not None:
        _check_endpoint(endpoint_url)
        _config["endpoint_url"] = endpoint_url
    if max_input_bytes is not None:
        _config["max_input_bytes"] = max_input_bytes
    _reset("s3")


class S3Input(_Input):
    """An object read into memory (it is at most ``max_input_bytes``): the Input of the seam."""

    def __init__(self, url: S3Url, data: bytes, info: ObjectInfo):
        import io

        self.name = str(url)
        self.file = io.BytesIO(data)
        self.size = len(data)
        self.mtime_ns = int(info.mtime * 1_000_000_000)
        self.info = info


class ObjectStore(_StoreBase):
    """``s3://bucket/key`` locations: the storage seam's implementation over an S3Store.

    Locations are the URLs as strings (``s3://bucket/key``; a prefix ends in
    ``/``).  The client is made on first use, from the standard AWS settings
    and what ``configure`` set.  Transfers overlap with the image work: the
    pipeline asks for the inputs its pool has taken (``prefetch``), which are
    fetched a few at a time on this store's threads, and a job's outputs are
    PUT at once, in parallel.
    """

    def __init__(self, s3: S3Store | None = None, **options):
        self._s3 = s3
        self._options = {**_config, **options}
        self._lock = threading.Lock()
        self._pools: dict = {}
        self._ahead: dict[str, object] = {}  # URL -> Future of (info, data), oldest first
        self._ahead_bytes = 0  # what the fetches ahead hold (or have claimed)
        self._source = threading.local()  # the input this thread read last: its ETag goes on the outputs

    @property
    def s3(self) -> S3Store:
        if self._s3 is None:
            with self._lock:
                if self._s3 is None:
                    opts = dict(self._options)
                    limit = opts.pop("max_input_bytes", DEFAULT_MAX_INPUT_BYTES)
                    opts.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
                    self._s3 = S3Store(max_input_bytes=limit, **opts)
        return self._s3

    def _executor(self):
        """The threads of the downloads ahead."""
        pool = self._pools.get("get")
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor

            with self._lock:
                pool = self._pools.get("get")
                if pool is None:
                    pool = self._pools["get"] = ThreadPoolExecutor(TRANSFER_THREADS,
                                                                  thread_name_prefix="imgtool-s3-get")
        return pool

    def _uploads(self):
        """The uploads' threads (apart from the downloads', so neither waits on the other): at most
        TRANSFER_THREADS PUTs in flight, whatever the number of workers writing."""
        writer = self._pools.get("put")
        if writer is None:
            from .transfer import BackgroundWriter

            with self._lock:
                writer = self._pools.get("put")
                if writer is None:
                    writer = self._pools["put"] = BackgroundWriter(TRANSFER_THREADS, name="s3-put")
        return writer

    # -- locations -----------------------------------------------------------------

    @staticmethod
    def url(location) -> S3Url:
        return location if isinstance(location, S3Url) else parse_s3_url(str(location))

    def location(self, text) -> str:
        return str(parse_s3_url(os.fspath(text)))

    def name(self, location) -> str:
        url = self.url(location)
        return url.name or url.key.rstrip("/").rsplit("/", 1)[-1] or url.bucket

    def parent(self, location) -> str:
        return str(self.url(location).parent)

    def join(self, folder, *names: str) -> str:
        return str(self.url(folder).join(*names))

    def relative(self, location, base) -> tuple[str, ...]:
        rel = self.url(location).as_prefix().relative_to(self.url(base))
        return tuple(p for p in rel.split("/") if p)

    def absolute(self, location) -> str:
        return str(self.url(location))

    # -- inputs ----------------------------------------------------------------------

    def kind(self, location) -> str:
        """An object is a "file"; a prefix (any URL ending in ``/``, or one with keys below it) a "folder".

        A missing bucket or refused credentials raise their error: nothing there can be listed.
        """
        url = self.url(location)
        if not url.is_prefix:
            try:
                self.s3.stat(url)
                return "file"
            except InputNotFound:
                pass
            return "folder" if self._has_keys(url.as_prefix()) else "missing"
        self.s3.check_output_dir(url)  # the bucket's HEAD, once: a missing one is said here
        return "folder"

    def _has_keys(self, prefix: S3Url) -> bool:
        try:
            page = self.s3.client.list_objects_v2(Bucket=prefix.bucket, Prefix=prefix.key, MaxKeys=1)
        except Exception as exc:  # noqa: BLE001
            raise error_from_boto(exc, prefix) from None
        return bool(page.get("KeyCount") or page.get("Contents"))

    def identity(self, location) -> str:
        return str(self.url(location))

    def open_input(self, location) -> S3Input:
        """HEAD (the size against the limit), then GET into memory; or what ``prefetch`` fetched."""
        url = self.url(location)
        if url.is_prefix:
            raise UnsupportedFormat("is a prefix (a folder), not an object", url)
        ahead = None
        if not getattr(self._source, "ahead", False):  # not the fetch ahead itself, looking at the header
            with self._lock:
                ahead = self._ahead.pop(str(url), None)
        got = ahead.result() if ahead is not None else None
        if got is not None:
            self._release(len(got[1]))
        info, data = got if got is not None else self._fetch(url)
        if not data:
            raise CorruptImage("empty object (0 bytes)", url)
        self._source.info = info
        return S3Input(url, data, info)

    def _fetch(self, url: S3Url) -> tuple[ObjectInfo, bytes]:
        info = self.s3.stat(url)
        return info, self.s3.read(url, info)

    def prefetch(self, location, skip: Callable[[], bool] | None = None) -> None:
        """Start fetching ``location`` on this store's threads, unless ``skip()`` (run there first) says
        it is not needed; ``open_input`` then takes what was fetched.

        At most PREFETCH_LIMIT fetches are held; past it the oldest finished
        one is dropped (an input whose task never opened it), or nothing is
        fetched ahead (``open_input`` fetches itself).
        """
        try:
            url = self.url(location)
        except ImgtoolError:
            return
        key = str(url)
        pool = self._executor()
        with self._lock:
            if url.is_prefix or key in self._ahead:
                return
            if len(self._ahead) >= PREFETCH_LIMIT:
                oldest = next(iter(self._ahead))
                if not self._ahead[oldest].done():
                    return
                dropped = self._ahead.pop(oldest).result()
                if dropped is not None:
                    self._ahead_bytes -= len(dropped[1])
            self._ahead[key] = pool.submit(self._fetch_ahead, url, key, skip)

    def _fetch_ahead(self, url: S3Url, key: str, skip) -> tuple[ObjectInfo, bytes] | None:
        got = None
        self._source.ahead = True
        try:
            if skip is None or not skip():
                info = self.s3.stat(url)
                with self._lock:
                    room = self._ahead_bytes + info.size <= PREFETCH_BYTES
                    if room:
                        self._ahead_bytes += info.size
                if room:
                    try:
                        data = self.s3.read(url, info)
                    finally:
                        self._release(info.size)
                    with self._lock:
                        self._ahead_bytes += len(data)
                    got = (info, data)
        except Exception:  # noqa: BLE001 - open_input tries again and says what is wrong
            pass
        finally:
            self._source.ahead = False
        if got is None:
            with self._lock:
                self._ahead.pop(key, None)
        return got

    def _release(self, size: int) -> None:
        with self._lock:
            self._ahead_bytes -= size

    def list_images(self, root, *, ordered: bool = True, rank=None, on_error=None) -> Iterator[str]:
        """Every input under the prefix, prefix by prefix as the local store walks folders.

        A prefix's own images come first, largest first (the listing's sizes:
        no header is read from object storage to order them), then its
        sub-prefixes in name order; ``processed/`` and hidden ones are not
        entered.  A prefix that cannot be listed goes to ``on_error`` (without one, a warning).
        """
        from .names import is_image_name, is_walked_folder

        stack = [self.url(root).as_prefix()]
        while stack:
            prefix = stack.pop()
            files: list[tuple[int, str]] = []
            subdirs: list[S3Url] = []
            try:
                pages = self.s3.client.get_paginator("list_objects_v2").paginate(
                    Bucket=prefix.bucket, Prefix=prefix.key, Delimiter="/")
                for page in pages:
                    for entry in page.get("Contents", ()):
                        info = self.s3._listed(prefix, entry, is_image_name)
                        if info is not None:
                            files.append((-info.size if ordered else 0, str(info.url)))
                    for common in page.get("CommonPrefixes", ()):
                        name = common["Prefix"][len(prefix.key):].rstrip("/")
                        if not name or not is_walked_folder(name):
                            continue
                        try:
                            subdirs.append(prefix.join(name + "/"))
                        except InvalidS3Url as exc:
                            log.warning("skipped: %s", exc)
            except Exception as exc:  # noqa: BLE001 - every failure is the prefix's, named
                err = error_from_boto(exc, prefix)
                if on_error is None:
                    log.warning("cannot list %s", err)
                else:
                    on_error(str(prefix), OSError(err.message))
                continue
            for _size, url in sorted(files):
                yield url
            stack.extend(sorted(subdirs, reverse=True))

    # -- outputs -----------------------------------------------------------------------

    def check_writable(self, folder) -> None:
        self.s3.check_output_dir(self.url(folder))

    def write_outputs(self, outputs) -> list[str]:
        """PUT every output at once (one PUT each, atomic there), with its Content-Type and settings; all or none.

        When one PUT fails, every object of this attempt is deleted, those
        whose PUT seemed to fail too (a timed-out PUT may still have landed).
        """
        source = getattr(self._source, "info", None)
        self._source.info = None
        objects = [Output(self.url(o.location), o.data, getattr(o, "fingerprint", "") or "", o.content_type)
                   for o in outputs]
        if len(objects) <= 1:
            return [str(u) for u in self.s3.write_outputs(objects, source)]
        futures = [self._uploads().submit(self.s3.write_outputs, [obj], source) for obj in objects]
        errors = []
        for f in futures:
            try:
                f.result()
            except BaseException as exc:  # noqa: BLE001 - the first is raised below, after the undo
                errors.append(exc)
        if errors:
            self.s3._undo(obj.url for obj in objects)
            raise errors[0]
        return [str(obj.url) for obj in objects]

    def remove(self, locations) -> None:
        for loc in locations:
            try:
                self.s3.remove(self.url(loc))
            except ImgtoolError as exc:
                log.warning("could not remove %s: %s", loc, exc)

    def fresh(self, src, outputs: Mapping) -> bool:
        """Every output exists, is at least as new as ``src`` and was made from it with the same settings.

        Output objects keep the settings' fingerprint and the source's ETag in
        their user metadata (``x-amz-meta-imgtool-settings``,
        ``x-amz-meta-imgtool-source``).  ``src`` may be a local file (``-o
        s3://``) and outputs local files (``process s3://... -o DIR``): those
        are compared by their times (S3 keeps whole seconds).
        """
        from . import scheme_of

        try:
            if scheme_of(src) == "s3":
                source = self.s3.stat(self.url(src))
            else:
                st = os.stat(src)
                source = ObjectInfo(url=src, size=st.st_size, mtime=float(int(st.st_mtime)))
            remote = {self.url(loc): fp for loc, fp in outputs.items() if scheme_of(loc) == "s3"}
            for loc in outputs:
                if scheme_of(loc) != "s3" and (os.stat(loc).st_mtime < source.mtime or os.path.islink(loc)):
                    return False
            return self.s3.up_to_date(source, remote)
        except (ImgtoolError, OSError):
            # Not known to be up to date: processing it says what is wrong (a missing
            # object, a server down), as that input's failure.
            return False

    # -- confinement -------------------------------------------------------------------

    def root(self, text) -> str:
        try:
            return str(parse_s3_url(os.fspath(text), prefix=True))
        except InvalidS3Url as exc:
            raise ValueError(str(exc)) from None

    def confine(self, location, roots, field: str) -> str:
        url = self.url(location)
        if not roots:
            return str(url)
        mine = [parse_s3_url(r, prefix=True) for r in map(str, roots) if is_s3_url(r)]
        if not any(url.is_within(r) for r in mine):
            shown = ", ".join(map(str, roots))
            raise PathNotAllowed(f"{field} is outside the allowed roots ({shown})", url)
        return str(url)
