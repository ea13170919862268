"""The store interface: everything imgtool does to inputs and outputs, whatever holds them.

A *location* is what a user or a job wrote for an input, an output or a
folder, as the store that owns it normalised it (``Store.location``).  Only
that store looks inside it: the pipeline and the commands hand locations
back to their store (``imgtool.storage.for_location`` picks it from the
location string) and never take one apart themselves.  The local
filesystem's locations are ``pathlib.Path`` objects; another store's may be
strings such as ``s3://bucket/key``.

Errors are imgtool's named errors (``imgtool.errors``): a missing input is
retryable, a folder that cannot be written says so, and so on; a store never
lets an OSError (or its client library's exception) out.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Mapping, Sequence, Union

#: A location as its store normalised it.  Opaque outside that store.
Location = Union[os.PathLike, str]

#: ``rank(location)``: how large an input is (its header's pixel count), or
#: None when that is unknown; listings put larger inputs first.
Rank = Callable[[Location], Union[int, None]]

#: ``on_error(folder, exc)``: a folder a listing could not read.
OnListError = Callable[[Location, OSError], None]


@dataclass(frozen=True)
class Output:
    """One output of a job, encoded, and where it goes."""

    location: Location
    data: bytes
    content_type: str  # e.g. "image/webp": an object store records it with the object
    # The fingerprint of the settings that made it (``Operation.fingerprint``): the
    # store records it with the output, and ``stale`` compares it on the next run.
    fingerprint: str = ""


class Input(abc.ABC):
    """An input opened for reading: a binary, seekable file object and what is known of it.

    A context manager; ``close()`` releases whatever the store holds for it.
    """

    #: What names the input in error messages (its location as the user wrote it).
    name: object
    #: The readable, seekable binary file object of the input's bytes.
    file: BinaryIO
    size: int
    mtime_ns: int

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Input":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Store(abc.ABC):
    """Where inputs are read from and outputs written to.  Every method is thread-safe."""

    # -- locations (no I/O) ---------------------------------------------------

    @abc.abstractmethod
    def location(self, text: str | os.PathLike) -> Location:
        """``text`` (a path or URL as given) as this store's location."""

    @abc.abstractmethod
    def name(self, location: Location) -> str:
        """The last component of ``location`` (a file or folder name)."""

    @abc.abstractmethod
    def parent(self, location: Location) -> Location:
        """The folder ``location`` is in."""

    @abc.abstractmethod
    def join(self, folder: Location, *names: str) -> Location:
        """``names`` below ``folder``."""

    @abc.abstractmethod
    def relative(self, location: Location, base: Location) -> tuple[str, ...]:
        """The components of ``location`` below ``base`` (ValueError when it is not below it)."""

    @abc.abstractmethod
    def absolute(self, location: Location) -> Location:
        """``location`` made absolute, links not resolved (what a producer writes into a job)."""

    # -- inputs -----------------------------------------------------------------

    @abc.abstractmethod
    def kind(self, location: Location) -> str:
        """What is at ``location``: ``"file"``, ``"folder"``, ``"missing"`` or ``"other"``."""

    @abc.abstractmethod
    def identity(self, location: Location) -> str:
        """What every spelling of the same input has in common (for telling duplicates apart)."""

    @abc.abstractmethod
    def open_input(self, location: Location) -> Input:
        """``location`` opened for reading; only a regular, non-empty file (or object) is an input.

        Raises InputNotFound (retryable) when it is not there, UnsupportedFormat
        for a folder or anything but a regular file, CorruptImage when empty,
        TransientIOError when it cannot be read.
        """

    def prefetch(self, location: Location, skip: Callable[[], bool] | None = None) -> None:
        """A hint: ``location`` will be opened soon (unless ``skip()`` says it need not be).

        A store whose reads are slow (over a network) starts fetching it on
        threads of its own, bounded; ``open_input`` then takes the data.  The
        default does nothing.
        """

    @abc.abstractmethod
    def list_images(self, root: Location, *, ordered: bool = True, rank: Rank | None = None,
                    on_error: OnListError | None = None) -> Iterator[Location]:
        """The inputs under ``root`` as ``imgtool.storage.names`` has them, folder by folder.

        Inside a folder the largest come first (``rank``, else the byte size;
        ``ordered=False`` skips the ranking, for counting).  A folder that
        cannot be read goes to ``on_error``.
        """

    # -- outputs ----------------------------------------------------------------

    @abc.abstractmethod
    def check_writable(self, folder: Location) -> None:
        """Raise an ImgtoolError naming ``folder`` when outputs could not be written into it."""

    @abc.abstractmethod
    def write_outputs(self, outputs: Sequence[Output]) -> list[Location]:
        """Write every output, or none: each atomically, those already written removed on failure.

        Each output's ``fingerprint`` is recorded with it, for ``stale``.

        A reader never sees a partial output; an existing output is replaced
        (a link there is replaced, never followed); missing folders are made.
        Returns the locations written, in order.
        """

    @abc.abstractmethod
    def remove(self, locations: Sequence[Location]) -> None:
        """Remove outputs, ignoring those already gone."""

    @abc.abstractmethod
    def fresh(self, src: Location, outputs: Mapping[Location, str]) -> bool:
        """True when every output exists and is up to date with ``src`` (see ``stale``)."""

    def stale(self, src: Location, outputs: Mapping[Location, str]) -> list[Location]:
        """The outputs that are not up to date with ``src``, in the order given.

        ``outputs`` maps each output's location to the fingerprint of the
        settings that decide it (``Operation.fingerprint``).  An output is up
        to date when it exists, is at least as new as ``src`` and was recorded
        (by ``write_outputs``) with that same fingerprint; an output with no
        record is stale.  Where a store keeps the record is its own choice
        (the local store: an extended attribute, else an index file of its
        own; an object store: the object's metadata).

        This default asks ``fresh`` of them all at once, then, only when they
        are not all fresh, of each: a store that can tell them apart in one
        go overrides it.
        """
        if self.fresh(src, outputs):
            return []
        return [loc for loc, fp in outputs.items() if not self.fresh(src, {loc: fp})]

    # -- confinement --------------------------------------------------------------

    @abc.abstractmethod
    def root(self, text: str | os.PathLike) -> Location:
        """An allowed root as this store compares locations with it (ValueError when unusable)."""

    @abc.abstractmethod
    def confine(self, location: Location, roots: Sequence[Location], field: str) -> Location:
        """``location`` as it will be opened; PathNotAllowed when it lies outside every root.

        ``roots`` are what ``root()`` gave (those of other stores are never
        inside); with no roots everything is allowed.  ``field`` names the
        location in the message ("inputPath").
        """
