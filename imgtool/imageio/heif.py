"""What libheif says of a HEIF file's items before it is decoded: a tile cut off is an error, not a green square.

libheif decodes a grid image (what phones write: 512x512 tiles) even when
tiles lie past the end of the file, painting them in and reporting each as a
decoding warning that pillow-heif drops.  Asked for an item's data, libheif
says the same thing as an error ("Extent in iloc box references data outside
of file bounds").  This asks it for every item's data, through the copy of
libheif that pillow-heif loaded (ctypes; no second build), without decoding
any: a memory copy of the file's items, next to nothing beside the decode.
"""

from __future__ import annotations

import ctypes
import functools
import logging

from ..errors import CorruptImage

log = logging.getLogger("imgtool")


class _HeifError(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("subcode", ctypes.c_int), ("message", ctypes.c_char_p)]


_u8p = ctypes.POINTER(ctypes.c_uint8)

# libheif's heif_error_Invalid_input and heif_suberror_End_of_data (heif_error.h).
HEIF_ERROR_INVALID_INPUT = 2
HEIF_SUBERROR_END_OF_DATA = 100


@functools.lru_cache(maxsize=1)
def _libheif():
    """The libheif pillow-heif uses (found in this process's memory map once pillow-heif is loaded), or None."""
    import pillow_heif  # noqa: F401 - loads its libheif

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({f for f in (line.split()[-1] for line in maps)
                            if "libheif" in f.rsplit("/", 1)[-1] and f.startswith("/")})
    except OSError:
        paths = []
    if not paths:
        from ctypes.util import find_library

        found = find_library("heif")
        paths = [found] if found else []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            lib.heif_context_alloc.restype = ctypes.c_void_p
            lib.heif_context_free.argtypes = [ctypes.c_void_p]
            lib.heif_context_read_from_memory_without_copy.restype = _HeifError
            lib.heif_context_read_from_memory_without_copy.argtypes = [
                ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
            lib.heif_context_get_number_of_items.argtypes = [ctypes.c_void_p]
            lib.heif_context_get_list_of_item_IDs.argtypes = [
                ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_int]
            lib.heif_item_get_item_data.restype = _HeifError
            lib.heif_item_get_item_data.argtypes = [
                ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(_u8p),
                ctypes.POINTER(ctypes.c_size_t)]
            lib.heif_release_item_data.argtypes = [ctypes.c_void_p, ctypes.POINTER(_u8p)]
            lib.heif_item_get_item_type.restype = ctypes.c_uint32
            lib.heif_item_get_item_type.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
            return lib
        except (OSError, AttributeError) as exc:  # an older libheif (no item API): say so once
            log.debug("libheif at %s cannot check items: %s", path, exc)
    return None


def check_items(data: bytes, name) -> None:
    """Raise CorruptImage naming the first item of ``data`` (a HEIF/AVIF file) whose data libheif cannot read."""
    lib = _libheif()
    if lib is None:
        return
    ctx = lib.heif_context_alloc()
    if not ctx:
        raise MemoryError("libheif could not allocate a context")
    try:
        err = lib.heif_context_read_from_memory_without_copy(ctx, data, len(data), None)
        if err.code:
            raise CorruptImage(f"truncated or corrupt HEIF file ({_message(err)})", name)
        count = lib.heif_context_get_number_of_items(ctx)
        ids = (ctypes.c_uint32 * max(count, 1))()
        count = lib.heif_context_get_list_of_item_IDs(ctx, ids, count)
        for index in range(count):
            item = ids[index]
            compression, out, size = ctypes.c_int(), _u8p(), ctypes.c_size_t()
            err = lib.heif_item_get_item_data(ctx, item, ctypes.byref(compression), ctypes.byref(out),
                                              ctypes.byref(size))
            if out:
                lib.heif_release_item_data(ctx, ctypes.byref(out))
            if err.code == HEIF_ERROR_INVALID_INPUT and err.subcode == HEIF_SUBERROR_END_OF_DATA:
                # libheif: "Extent in iloc box references data outside of file bounds".
                kind = lib.heif_item_get_item_type(ctx, item).to_bytes(4, "big").decode("latin-1").strip()
                raise CorruptImage(f"truncated HEIF file: the data of its {kind or 'item'} item {item} "
                                   f"(of {count} items) lies past the end of the file", name)
            # Anything else (an item without data of its own, a type this libheif does not know)
            # is for the decode to judge: only a cut-off file is said here.
    finally:
        lib.heif_context_free(ctx)


def _message(err: _HeifError) -> str:
    text = (err.message or b"").decode("utf-8", "replace")
    return " ".join(text.split()) or f"libheif error {err.code}.{err.subcode}"
