"""Transfers that overlap with image work: a bounded prefetcher for inputs and bounded background writes.

Neither knows what it moves: the prefetcher calls any ``fetch(item)`` (an
S3Store's read, a file read) a few items ahead of its consumer, and the
background writer runs any ``write(...)`` (an S3Store's write_outputs)
while the thread that encoded goes on to the next image.  Both hold at most
a fixed number of transfers, and the prefetcher at most a byte budget of
fetched data, so a prefix of any size runs in bounded memory.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_AHEAD = 4
DEFAULT_IN_FLIGHT = 4


class Fetched(Generic[T, R]):
    """One item and its fetch: ``result()`` waits for the data, or raises what the fetch raised."""

    __slots__ = ("item", "_future", "size")

    def __init__(self, item: T, future: Future, size: int):
        self.item = item
        self._future = future
        self.size = size

    def result(self) -> R:
        return self._future.result()

    def done(self) -> bool:
        return self._future.done()


class Prefetcher(Generic[T, R]):
    """Iterate ``items`` with each one's ``fetch`` started up to ``ahead`` items before it is taken.

    Items are yielded in their order, each as a ``Fetched`` (whose
    ``result()`` is the fetch's value or its exception: one item's failure
    is that item's).  ``items`` is consumed lazily, only as the window
    moves, so a listing of any length is never read ahead of need.  With
    ``max_bytes`` and ``size_of`` (an item's expected size, e.g. a listing's
    object size), the window also holds no more than ``max_bytes`` of
    fetches, except that one item is always let through, however big.

    Iterate it from one thread (the one that submits the work); the fetches
    run on the prefetcher's own ``ahead`` threads.  ``close()`` (or leaving
    a ``with`` block) cancels what has not started and does not wait for
    what has: the fetch function's own timeouts bound those.
    """

    def __init__(
        self,
        items: Iterable[T],
        fetch: Callable[[T], R],
        *,
        ahead: int = DEFAULT_AHEAD,
        max_bytes: int | None = None,
        size_of: Callable[[T], int] | None = None,
        name: str = "prefetch",
    ):
        if ahead < 1:
            raise ValueError("ahead must be at least 1")
        self._items = iter(items)
        self._fetch = fetch
        self.ahead = ahead
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._window: collections.deque[Fetched] = collections.deque()
        self._bytes = 0
        self._peeked: list[T] = []
        self._exhausted = False
        self._pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix=f"imgtool-{name}")
        self._closed = False

    @property
    def in_window(self) -> int:
        """How many items are fetched or being fetched ahead of the consumer."""
        return len(self._window)

    @property
    def bytes_in_window(self) -> int:
        return self._bytes

    def __iter__(self) -> Iterator[Fetched[T, R]]:
        return self

    def __next__(self) -> Fetched[T, R]:
        if self._closed:
            raise StopIteration
        self._fill()
        if not self._window:
            self.close()
            raise StopIteration
        head = self._window.popleft()
        self._bytes -= head.size
        self._fill()  # the next fetch starts while the consumer works on this one
        return head

    def _fill(self) -> None:
        while len(self._window) < self.ahead and not self._exhausted:
            item = self._next_item()
            if item is _END:
                return
            size = self._size_of(item) if self._size_of is not None else 0
            if (self.max_bytes is not None and self._window
                    and self._bytes + size > self.max_bytes):
                self._peeked.append(item)  # waits until the window has room for it
                return
            self._window.append(Fetched(item, self._pool.submit(self._fetch, item), size))
            self._bytes += size

    def _next_item(self):
        if self._peeked:
            return self._peeked.pop()
        try:
            return next(self._items)
        except StopIteration:
            self._exhausted = True
            return _END

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for f in self._window:
            f._future.cancel()
        self._window.clear()
        self._bytes = 0
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "Prefetcher[T, R]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_END = object()


class BackgroundWriter:
    """Run writes on a few threads while the caller goes on; at most ``in_flight`` at once.

    ``submit`` blocks while ``in_flight`` writes are pending (back-pressure:
    the encoders never get more than that far ahead of the network) and
    returns the write's Future.  ``wait()`` returns once every submitted
    write has ended; ``close()`` waits too, then stops the threads.
    """

    def __init__(self, in_flight: int = DEFAULT_IN_FLIGHT, name: str = "upload"):
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self.in_flight = in_flight
        self._slots = threading.BoundedSemaphore(in_flight)
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix=f"imgtool-{name}")
        self._pending: set[Future] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def submit(self, fn: Callable[..., R], *args, **kwargs) -> Future:
        self._slots.acquire()
        try:
            future = self._pool.submit(fn, *args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)
            if not self._pending:
                self._idle.notify_all()
        self._slots.release()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no write is pending; False when ``timeout`` passed first."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def close(self) -> None:
        self.wait()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
