"""errors: a few named errors, each permanent or retryable, that survive pickling and JSON."""

from __future__ import annotations

import errno
import json
import pickle

import pytest

from imgtool import errors
from imgtool.errors import (
    BackendUnavailable,
    CorruptImage,
    GPUError,
    ImageTooLarge,
    ImgtoolError,
    InputNotFound,
    InvalidJob,
    JobTimeout,
    NoSpace,
    PathNotAllowed,
    PermanentError,
    ResourceExhausted,
    RetryableError,
    TransientIOError,
    UnsupportedFormat,
    from_os_error,
)

PERMANENT = [UnsupportedFormat, CorruptImage, ImageTooLarge, InvalidJob, PathNotAllowed, BackendUnavailable,
             JobTimeout]
RETRYABLE = [InputNotFound, TransientIOError, NoSpace, GPUError, ResourceExhausted]


@pytest.mark.parametrize("cls", PERMANENT)
def test_permanent_errors(cls):
    assert issubclass(cls, PermanentError) and not cls.retryable


@pytest.mark.parametrize("cls", RETRYABLE)
def test_retryable_errors(cls):
    assert issubclass(cls, RetryableError) and cls.retryable


def test_every_named_error_is_listed_here_and_has_its_own_code():
    named = {
        obj for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, ImgtoolError)
        and obj not in (ImgtoolError, PermanentError, RetryableError)
    }
    assert named == set(PERMANENT) | set(RETRYABLE)
    codes = [cls.code for cls in named]
    assert len(set(codes)) == len(codes)
    assert all(code.isidentifier() and code.islower() for code in codes)


def test_message_names_the_file():
    exc = CorruptImage("truncated", "/up/a.jpg")
    assert str(exc) == "/up/a.jpg: truncated"
    assert exc.message == "truncated" and exc.path == "/up/a.jpg"
    assert str(InvalidJob("no jobId")) == "no jobId"


def test_to_dict_is_json_ready():
    d = ImageTooLarge("too big", "/x.png").to_dict()
    assert d == {"type": "too_large", "message": "/x.png: too big", "retryable": False}
    assert json.loads(json.dumps(d)) == d
    assert InputNotFound("no such file", "/y").to_dict()["retryable"] is True


@pytest.mark.parametrize("cls", PERMANENT + RETRYABLE)
def test_pickling_keeps_message_and_path(cls):
    back = pickle.loads(pickle.dumps(cls("why", "/some/file")))
    assert type(back) is cls
    assert (back.message, back.path, str(back)) == ("why", "/some/file", "/some/file: why")


@pytest.mark.parametrize(
    "code,writing,cls",
    [
        (errno.ENOENT, False, InputNotFound),
        (errno.ENOTDIR, False, InputNotFound),
        (errno.EACCES, False, TransientIOError),
        (errno.EPERM, False, TransientIOError),
        (errno.EIO, False, TransientIOError),
        (errno.EISDIR, False, UnsupportedFormat),
        (errno.ENAMETOOLONG, False, PermanentError),
        (errno.ENOENT, True, TransientIOError),
        (errno.ENOSPC, True, NoSpace),
        (errno.EDQUOT, True, NoSpace),
        (errno.EACCES, True, TransientIOError),
        (errno.EISDIR, True, PermanentError),
    ],
)
def test_os_errors_map_to_named_errors(code, writing, cls):
    exc = from_os_error(OSError(code, "strerror text"), "/p", writing=writing)
    assert type(exc) is cls and exc.path == "/p"
    assert "\n" not in str(exc)


def test_a_full_disk_says_so():
    exc = from_os_error(OSError(errno.ENOSPC, "No space left on device"), "/out/a_blur.webp", writing=True)
    assert str(exc) == "/out/a_blur.webp: cannot be written: no space left on device (ENOSPC)"
    assert isinstance(exc, TransientIOError) and exc.to_dict()["type"] == "no_space"
