"""The prefetcher and the background writer: bounded in count and bytes, lazy, in order, failures
kept to their item; and both over a real SeaweedFS."""

from __future__ import annotations

import threading

import pytest

from imgtool.errors import InputNotFound, TransientIOError
from imgtool.storage.s3 import Output, S3Store, S3Url
from imgtool.storage.transfer import BackgroundWriter, Prefetcher

WAIT = 10  # seconds: only ever reached when something is broken


class Gate:
    """A fetch that records which items started and holds each until released."""

    def __init__(self, fail=()):
        self.fail = set(fail)
        self.started: list[int] = []
        self.running = 0
        self.most_running = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.change = threading.Condition(self.lock)

    def __call__(self, item):
        with self.lock:
            self.started.append(item)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.change.notify_all()
        assert self.release.wait(WAIT)
        with self.lock:
            self.running -= 1
        if item in self.fail:
            raise InputNotFound("not there", f"item {item}")
        return item * 10

    def wait_started(self, n: int):
        with self.lock:
            assert self.change.wait_for(lambda: len(self.started) >= n, WAIT), self.started


class Counted:
    """An iterable that counts how many items were taken from it."""

    def __init__(self, items):
        self.items = list(items)
        self.taken = 0

    def __iter__(self):
        for item in self.items:
            self.taken += 1
            yield item


def test_prefetch_runs_ahead_a_bounded_window_and_reads_the_source_lazily():
    gate = Gate()
    source = Counted(range(100))
    with Prefetcher(source, gate, ahead=3) as pre:
        first = next(pre)  # returns at once: the data is awaited with result()
        assert first.item == 0 and not first.done()
        gate.wait_started(3)
        assert source.taken == 4  # the taken one, and three ahead of it
        assert pre.in_window == 3
        gate.release.set()
        assert first.result() == 0
        rest = [f.result() for f in pre]
    assert rest == [i * 10 for i in range(1, 100)]
    assert gate.most_running <= 3
    assert source.taken == 100


def test_prefetch_window_is_bounded_by_bytes_but_always_lets_one_through():
    gate = Gate()
    gate.release.set()
    sizes = {0: 5, 1: 5, 2: 5, 3: 100, 4: 5}
    source = Counted(sizes)
    with Prefetcher(source, gate, ahead=4, max_bytes=10, size_of=sizes.__getitem__) as pre:
        got = []
        for fetched in pre:
            assert pre.bytes_in_window <= 10 or pre.in_window == 1
            if fetched.item == 0:
                # 1 and 2 fit in 10 bytes; 3 waits, taken from the source but not fetched.
                assert (pre.in_window, pre.bytes_in_window, source.taken) == (2, 10, 4)
            got.append(fetched.result())
    assert got == [0, 10, 20, 30, 40]  # the 100-byte item went through alone


def test_one_items_failure_is_that_items():
    gate = Gate(fail={13})
    gate.release.set()
    results = {}
    with Prefetcher([12, 13, 14], gate, ahead=2) as pre:
        for fetched in pre:
            try:
                results[fetched.item] = fetched.result()
            except InputNotFound as exc:
                results[fetched.item] = exc.code
    assert results == {12: 120, 13: "input_not_found", 14: 140}


def test_close_stops_taking_items_and_cancels_what_has_not_started():
    gate = Gate()
    source = Counted(range(100))
    pre = Prefetcher(source, gate, ahead=2)
    next(pre)
    gate.wait_started(2)
    pre.close()
    gate.release.set()
    assert list(pre) == []
    assert source.taken == 3
    assert sorted(gate.started) == [0, 1]  # the queued third never ran


def test_background_writer_holds_at_most_in_flight_and_blocks_the_next():
    gate = Gate()
    writer = BackgroundWriter(in_flight=2)
    futures = [writer.submit(gate, 1), writer.submit(gate, 2)]
    gate.wait_started(2)
    third_submitted = threading.Event()

    def submit_third():
        futures.append(writer.submit(gate, 3))
        third_submitted.set()

    t = threading.Thread(target=submit_third)
    t.start()
    assert not third_submitted.wait(0.3)  # still held back while two are pending
    assert writer.pending == 2
    gate.release.set()
    assert third_submitted.wait(WAIT)
    t.join(WAIT)
    assert writer.wait(WAIT)
    assert [f.result() for f in futures] == [10, 20, 30]
    assert gate.most_running <= 2
    writer.close()


def test_prefetch_and_background_writes_over_seaweedfs(seaweed, s3_bucket, monkeypatch):
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    admin = seaweed.client()
    payloads = {f"u1/{i:02d}.jpg": bytes([i]) * (1000 + i) for i in range(12)}
    for key, data in payloads.items():
        admin.put_object(Bucket=s3_bucket, Key=key, Body=data)
    store = S3Store(max_attempts=1)
    listing = store.list_inputs(S3Url(s3_bucket, "u1/"))
    with Prefetcher(listing, lambda info: store.read(info.url, info), ahead=4,
                    max_bytes=5000, size_of=lambda info: info.size) as pre, BackgroundWriter(3) as writer:
        futures = []
        for fetched in pre:
            data = fetched.result()
            assert data == payloads[fetched.item.url.key]
            out = fetched.item.url.parent.join("processed", fetched.item.url.name[:-4] + "_thumbnail.webp")
            futures.append(writer.submit(store.write_outputs, [Output(out, data[:10])], fetched.item))
        writer.wait()
    assert all(len(f.result()) == 1 for f in futures)
    got = admin.list_objects_v2(Bucket=s3_bucket, Prefix="u1/processed/")["Contents"]
    assert len(got) == 12


def test_a_missing_object_fails_only_its_own_item(seaweed, s3_bucket, monkeypatch):
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    admin = seaweed.client()
    admin.put_object(Bucket=s3_bucket, Key="a.jpg", Body=b"a")
    admin.put_object(Bucket=s3_bucket, Key="c.jpg", Body=b"c")
    store = S3Store(max_attempts=1)
    urls = [S3Url(s3_bucket, k) for k in ("a.jpg", "b.jpg", "c.jpg")]
    outcome = []
    with Prefetcher(urls, store.read, ahead=3) as pre:
        for fetched in pre:
            try:
                outcome.append(fetched.result())
            except (InputNotFound, TransientIOError) as exc:
                outcome.append(exc.code)
    assert outcome == [b"a", "input_not_found", b"c"]
