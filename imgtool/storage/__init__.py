"""The I/O seam: every read and write of an input or an output goes through a store.

``for_location(text)`` picks the store from a location string: a URL scheme
in ``SCHEMES`` (``s3://...``) names its store's module, anything else is a
local path.  Adding a store is one module implementing ``base.Store`` and
one line in ``SCHEMES``; nothing else branches on where data lives.

``base.py`` is the interface, ``local.py`` the local filesystem, ``names.py``
the rules of which names are inputs (every store lists by them).
"""

from __future__ import annotations

import importlib
import os
import threading

from .base import Input, Location, Output, Store
from .names import PROCESSED_DIR, is_candidate, is_image_name, is_video_name

#: URL scheme -> "module:class" of the store that owns such locations.
SCHEMES: dict[str, str] = {"s3": "imgtool.storage.s3:ObjectStore"}

_stores: dict[str, Store] = {}
_lock = threading.Lock()


def scheme_of(location) -> str:
    """The URL scheme of ``location`` ("" for a local path)."""
    if isinstance(location, str) and "://" in location:
        scheme = location.split("://", 1)[0].lower()
        if scheme in SCHEMES:
            return scheme
    return ""


def for_location(location) -> Store:
    """The store that owns ``location`` (a path or URL as given, or a location a store made)."""
    scheme = scheme_of(location)
    store = _stores.get(scheme)
    if store is None:
        with _lock:
            store = _stores.get(scheme)
            if store is None:
                store = _stores[scheme] = _make(scheme)
    return store


def _make(scheme: str) -> Store:
    if not scheme:
        from .local import LocalStore

        return LocalStore()
    module, _, cls = SCHEMES[scheme].partition(":")
    return getattr(importlib.import_module(module), cls)()


#: The largest object read (``--max-input-bytes``): objects are read into memory, so their size
#: (HEAD) is checked before they are fetched.  Local files are streamed: the pixel limit bounds them.
DEFAULT_MAX_INPUT_BYTES = 256 * 1024 * 1024


def configure(*, max_input_bytes: int | None = None, s3_endpoint: str | None = None) -> None:
    """What the command line says of reading inputs from object storage: the size limit and the endpoint."""
    if max_input_bytes is not None or s3_endpoint is not None:
        from . import s3

        s3.configure(endpoint_url=s3_endpoint, max_input_bytes=max_input_bytes)


def _reset(scheme: str) -> None:
    """Forget the store made for ``scheme``: the next use makes it again (with new settings)."""
    with _lock:
        _stores.pop(scheme, None)


def judge_of(src: Location, out_dir: Location) -> Store:
    """The store that says whether outputs in ``out_dir`` are up to date with ``src``.

    The outputs' store when it is not the local one (it keeps what the
    outputs were made with and knows their times), else the input's.
    """
    return for_location(out_dir) if scheme_of(out_dir) else for_location(src)


def location(text: str | os.PathLike) -> Location:
    """``text`` as its store's location."""
    return for_location(text).location(text)


def name(loc: Location) -> str:
    """The last component of ``loc``."""
    return for_location(loc).name(loc)


def default_out_dir(src: Location) -> Location:
    """``processed/`` beside the input, as the upload server lays it out."""
    store = for_location(src)
    return store.join(store.parent(src), PROCESSED_DIR)


__all__ = [
    "DEFAULT_MAX_INPUT_BYTES", "PROCESSED_DIR", "SCHEMES", "configure", "Input", "Location", "Output", "Store", "default_out_dir",
    "for_location", "is_candidate", "judge_of", "is_image_name", "is_video_name", "location", "name", "scheme_of",
]
