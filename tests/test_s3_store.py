"""S3Store against a real SeaweedFS: reads bounded by HEAD, listing by the local store's rules, atomic
all-or-nothing writes with Content-Type, freshness by time, source and settings, and every failure
named as imgtool's errors (missing, refused, throttled, timed out, unreachable, stopped)."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import pytest

from imgtool.storage.local import LocalStore
from imgtool.errors import ImageTooLarge, InputNotFound, PermanentError, TransientIOError
from imgtool.storage.s3 import (
    SETTINGS_META,
    SOURCE_META,
    ObjectInfo,
    Output,
    S3Store,
    S3Url,
    make_client,
    meta_value,
)
from seaweed import ADMIN, READER


@pytest.fixture
def aws_env(seaweed, monkeypatch):
    """The standard AWS settings pointing at the session's SeaweedFS, as a deployment would set them."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return seaweed


def make_store(**options) -> S3Store:
    options.setdefault("max_attempts", 2)
    options.setdefault("read_timeout", 10)
    return S3Store(**options)


@pytest.fixture
def store(aws_env) -> S3Store:
    return make_store()


@pytest.fixture
def admin(seaweed):
    """A plain boto3 client for setting up and checking, apart from the code under test."""
    return seaweed.client()


@pytest.fixture
def throttled_bucket(seaweed):
    """A bucket whose every read, write and list SeaweedFS answers 503 (its circuit breaker)."""
    bucket = seaweed.make_bucket("thr")
    seaweed.client().put_object(Bucket=bucket, Key="in/a.jpg", Body=b"jpeg")
    seaweed.throttle(bucket)
    yield bucket
    seaweed.unthrottle(bucket)


class Calls:
    """Counts the requests a client sends, by operation, with botocore's own event hooks."""

    def __init__(self, client):
        self.sent: list[tuple[str, dict]] = []
        client.meta.events.register("before-send.s3", self._before_send)

    def _before_send(self, request, **kwargs):
        op = kwargs.get("event_name", "").rsplit(".", 1)[-1]
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        self.sent.append((op, headers))

    def count(self, op: str) -> int:
        return sum(1 for o, _ in self.sent if o == op)


def keys(admin, bucket: str, prefix: str = "") -> list[str]:
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


def one_line(err: Exception) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    return text


# --------------------------------------------------------------------------- client


def test_client_from_the_standard_settings_uses_path_style(aws_env, s3_bucket, admin):
    admin.put_object(Bucket=s3_bucket, Key="a.jpg", Body=b"x")
    client = make_client()
    assert client.meta.endpoint_url == aws_env.endpoint
    assert client.meta.config.s3["addressing_style"] == "path"
    assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == ["a.jpg"]


def test_endpoint_option_overrides_the_environment(aws_env, s3_bucket, monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    client = make_client(aws_env.endpoint, max_attempts=1)
    assert client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_client_from_a_profile(seaweed, s3_bucket, tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    (tmp_path / "config").write_text(f"[profile uploads]\nregion = us-east-1\nendpoint_url = {seaweed.endpoint}\n")
    (tmp_path / "credentials").write_text(
        f"[uploads]\naws_access_key_id = {ADMIN[0]}\naws_secret_access_key = {ADMIN[1]}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    client = make_client(profile="uploads")
    assert client.meta.endpoint_url == seaweed.endpoint
    assert client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0
    with pytest.raises(PermanentError, match="profile not found"):
        make_client(profile="nope")


def test_aws_endpoints_keep_virtual_hosted_addressing(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    client = make_client(region="eu-west-1")
    assert client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
    assert (client.meta.config.s3 or {}).get("addressing_style") != "path"


def test_bad_endpoint_is_refused():
    with pytest.raises(PermanentError, match="http:// or https://"):
        make_client("ftp://example/")


# --------------------------------------------------------------------------- reading


def test_read_returns_the_objects_bytes(store, s3_bucket, admin):
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
    etag = admin.put_object(Bucket=s3_bucket, Key="u1/big.jpg", Body=data)["ETag"].strip('"')
    url = S3Url(s3_bucket, "u1/big.jpg")
    info = store.stat(url)
    assert (info.size, info.etag) == (len(data), etag)
    assert store.read(url) == data
    admin.put_object(Bucket=s3_bucket, Key="u1/empty.jpg", Body=b"")
    assert store.read(S3Url(s3_bucket, "u1/empty.jpg")) == b""


def test_size_over_the_limit_is_refused_before_any_get(aws_env, s3_bucket, admin):
    store = make_store(max_input_bytes=1000)
    admin.put_object(Bucket=s3_bucket, Key="big.jpg", Body=b"x" * 1001)
    admin.put_object(Bucket=s3_bucket, Key="ok.jpg", Body=b"y" * 1000)
    calls = Calls(store.client)
    with pytest.raises(ImageTooLarge) as info:
        store.read(S3Url(s3_bucket, "big.jpg"))
    assert not info.value.retryable and "1001 bytes" in one_line(info.value)
    assert calls.count("HeadObject") == 1 and calls.count("GetObject") == 0
    assert store.read(S3Url(s3_bucket, "ok.jpg")) == b"y" * 1000


def test_get_never_reads_past_the_limit_whatever_the_size_said(aws_env, s3_bucket, admin):
    """A listing or HEAD that understated the size: the GET itself stops one byte past the limit."""
    store = make_store(max_input_bytes=1000)
    admin.put_object(Bucket=s3_bucket, Key="liar.jpg", Body=b"z" * 5_000_000)
    real = store.stat(S3Url(s3_bucket, "liar.jpg"))
    understated = ObjectInfo(real.url, size=10, mtime=real.mtime, etag=real.etag)
    calls = Calls(store.client)
    with pytest.raises(ImageTooLarge, match="over the input limit"):
        store.read(real.url, understated)
    (_, headers), = [c for c in calls.sent if c[0] == "GetObject"]
    assert headers["Range"] == "bytes=0-1000"


def test_object_replaced_between_head_and_get_is_retryable(store, s3_bucket, admin):
    admin.put_object(Bucket=s3_bucket, Key="a.jpg", Body=b"first version")
    info = store.stat(S3Url(s3_bucket, "a.jpg"))
    admin.put_object(Bucket=s3_bucket, Key="a.jpg", Body=b"second, longer version")
    with pytest.raises(TransientIOError, match="changed"):
        store.read(info.url, info)
    assert store.read(info.url) == b"second, longer version"


def test_missing_object_is_retryable_input_not_found(store, s3_bucket):
    url = S3Url(s3_bucket, "u1/not-yet.jpg")
    for call in (store.stat, store.read):
        with pytest.raises(InputNotFound) as info:
            call(url)
        assert info.value.retryable and info.value.code == "input_not_found"
        assert one_line(info.value) == f"{url}: no such object"


def test_missing_bucket_is_permanent(store):
    url = S3Url("no-such-bucket-here", "u1/a.jpg")
    for call in (store.stat, store.read, store.check_output_dir, lambda u: list(store.list_inputs(u.parent))):
        with pytest.raises(PermanentError) as info:
            call(url)
        assert not info.value.retryable
        assert "no such bucket 'no-such-bucket-here'" in one_line(info.value)


@pytest.mark.parametrize("credentials,words", [
    ((ADMIN[0], "wrong-secret"), ("credentials refused", "SignatureDoesNotMatch")),
    (("NOSUCHKEYID", "whatever"), ("credentials refused", "InvalidAccessKeyId")),
])
def test_refused_credentials_are_permanent(seaweed, s3_bucket, admin, monkeypatch, credentials, words):
    admin.put_object(Bucket=s3_bucket, Key="a.jpg", Body=b"x")
    for name, value in seaweed.env(credentials).items():
        monkeypatch.setenv(name, value)
    store = make_store()
    url = S3Url(s3_bucket, "a.jpg")
    # HEAD carries no error code: a bare 403.
    with pytest.raises(PermanentError, match="access denied .*403") as info:
        store.stat(url)
    one_line(info.value)
    for call in (lambda: store.read(url, ObjectInfo(url, 1, 0.0)), lambda: list(store.list_inputs(url.parent))):
        with pytest.raises(PermanentError) as info:
            call()
        assert not info.value.retryable and all(w in one_line(info.value) for w in words)


def test_no_credentials_at_all_is_permanent(seaweed, s3_bucket, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = make_store(endpoint_url=seaweed.endpoint)
    with pytest.raises(PermanentError, match="no AWS credentials") as info:
        store.stat(S3Url(s3_bucket, "a.jpg"))
    one_line(info.value)


def test_refused_permission_to_write_is_permanent_and_writes_nothing(seaweed, s3_bucket, admin, monkeypatch):
    for name, value in seaweed.env(READER).items():
        monkeypatch.setenv(name, value)
    store = make_store()
    admin.put_object(Bucket=s3_bucket, Key="u1/a.jpg", Body=b"x")
    assert store.read(S3Url(s3_bucket, "u1/a.jpg")) == b"x"  # reading is allowed
    store.check_output_dir(S3Url(s3_bucket, "u1/processed/"))
    outs = [Output(S3Url(s3_bucket, "u1/processed/a_thumbnail.webp"), b"w")]
    with pytest.raises(PermanentError, match="access denied") as info:
        store.write_outputs(outs)
    assert not info.value.retryable
    assert keys(admin, s3_bucket) == ["u1/a.jpg"]


def test_throttling_and_5xx_are_retryable_after_bounded_retries(aws_env, throttled_bucket):
    store = make_store(max_attempts=2)
    calls = Calls(store.client)
    url = S3Url(throttled_bucket, "in/a.jpg")
    attempts = [
        ("HeadObject", lambda: store.stat(url)),
        ("GetObject", lambda: store.read(url, ObjectInfo(url, 4, 0.0))),
        ("ListObjectsV2", lambda: list(store.list_inputs(url.parent))),
        ("PutObject", lambda: store.write_outputs([Output(S3Url(throttled_bucket, "out/a_blur.webp"), b"w")])),
    ]
    for op, call in attempts:
        with pytest.raises(TransientIOError) as info:
            call()
        assert info.value.retryable and info.value.code == "io_error"
        assert "503" in one_line(info.value)
        assert calls.count(op) == 2  # botocore's retries, bounded by max_attempts


def test_connection_refused_is_retryable(aws_env):
    from conftest import free_port

    store = make_store(endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(TransientIOError, match="cannot connect") as info:
        store.stat(S3Url("abc", "a.jpg"))
    assert info.value.retryable and info.value.code == "io_error"
    one_line(info.value)


def test_timeout_is_retryable_and_the_store_works_again_after(seaweed_own, monkeypatch):
    for name, value in seaweed_own.env().items():
        monkeypatch.setenv(name, value)
    bucket = seaweed_own.make_bucket()
    seaweed_own.client().put_object(Bucket=bucket, Key="a.jpg", Body=b"jpeg")
    store = make_store(max_attempts=1, read_timeout=1, connect_timeout=1)
    url = S3Url(bucket, "a.jpg")
    with seaweed_own.frozen():
        with pytest.raises(TransientIOError, match="timed out") as info:
            store.stat(url)
    one_line(info.value)
    assert store.read(url) == b"jpeg"


# --------------------------------------------------------------------------- listing

# Names a folder of uploads may hold; the listing must take the same ones as the local store.
TREE = [
    "a.jpg", "B.PNG", "c.heic", "notes.txt", "d.jpg.part", "e.jpg~", ".hidden.jpg",
    "a_thumbnail.webp", "a_blur.webp", "x_low-quality.webp", "plain.webp",
    "processed/a_thumbnail.webp", "processed/stray.jpg",
    "u1/f.gif", "u1/processed/f_blur.webp", "u1/processed/deeper/g.jpg", "u1/.cache/h.jpg",
    "u1/sub/i.tiff", "u1/sub/j.svg", ".git/k.png", "u10/l.jpg",
]


def test_listing_takes_the_names_the_local_store_takes(store, s3_bucket, admin, tmp_path):
    root = tmp_path / "uploads"
    for name in TREE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
        admin.put_object(Bucket=s3_bucket, Key=f"uploads/{name}", Body=b"x")
    admin.put_object(Bucket=s3_bucket, Key="elsewhere/m.jpg", Body=b"x")
    expected = sorted(p.relative_to(root).as_posix() for p in LocalStore().list_images(root, ordered=False))
    assert expected  # the tree has inputs, and the listing skips some of it
    assert len(expected) < len(TREE)
    got = sorted(i.url.relative_to(S3Url(s3_bucket, "uploads/")) for i in
                 store.list_inputs(S3Url(s3_bucket, "uploads")))
    assert got == expected
    infos = list(store.list_inputs(S3Url(s3_bucket, "uploads/u1/")))
    assert sorted(i.url.key for i in infos) == ["uploads/u1/f.gif", "uploads/u1/sub/i.tiff", "uploads/u1/sub/j.svg"]
    assert all(i.size == 1 and i.etag and i.mtime > 0 for i in infos)


def test_listing_skips_keys_that_are_no_safe_url(store, s3_bucket, admin, caplog):
    for key in ("u/ok.jpg", "u/bell\x07.jpg", "u/line\n.jpg"):
        admin.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    with caplog.at_level("WARNING", logger="imgtool"):
        got = [i.url.key for i in store.list_inputs(S3Url(s3_bucket, "u/"))]
    assert got == ["u/ok.jpg"]
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 2
    assert all("\n" not in r.getMessage() for r in caplog.records)


def test_listing_is_paginated_and_lazy(store, s3_bucket, admin):
    names = [f"p/{i:02d}.jpg" for i in range(7)]
    for name in names:
        admin.put_object(Bucket=s3_bucket, Key=name, Body=b"x")
    calls = Calls(store.client)
    listing = store.list_inputs(S3Url(s3_bucket, "p/"), page_size=2)
    first = next(listing)
    assert first.url.key == names[0]
    assert calls.count("ListObjectsV2") == 1  # one page, not the whole listing
    rest = [i.url.key for i in listing]
    assert [first.url.key] + rest == names
    assert calls.count("ListObjectsV2") == 4


def test_inputs_takes_an_object_or_a_prefix(store, s3_bucket, admin):
    for key in ("u1/a.jpg", "u1/b.txt", "u1/sub/c.png", "u1x.jpg"):
        admin.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    assert [i.url.key for i in store.inputs(S3Url(s3_bucket, "u1/b.txt"))] == ["u1/b.txt"]  # named: taken
    assert [i.url.key for i in store.inputs(S3Url(s3_bucket, "u1"))] == ["u1/a.jpg", "u1/sub/c.png"]
    assert list(store.inputs(S3Url(s3_bucket, "u2"))) == []


# --------------------------------------------------------------------------- writing


def test_outputs_are_written_with_content_type_and_metadata(store, s3_bucket, admin):
    admin.put_object(Bucket=s3_bucket, Key="u1/a.jpg", Body=b"jpeg")
    source = store.stat(S3Url(s3_bucket, "u1/a.jpg"))
    out = source.url.parent.join("processed")
    written = store.write_outputs([
        Output(out.join("a_thumbnail.webp"), b"RIFF-thumb", fingerprint="thumbnail w=256 q=80"),
        Output(out.join("a_blur.avif"), b"avif-blur", fingerprint="blur auto q=80"),
    ], source=source)
    assert written == [out.join("a_thumbnail.webp"), out.join("a_blur.avif")]
    head = admin.head_object(Bucket=s3_bucket, Key="u1/processed/a_thumbnail.webp")
    assert head["ContentType"] == "image/webp"
    assert head["Metadata"] == {SETTINGS_META: "thumbnail w=256 q=80", SOURCE_META: source.etag}
    assert admin.head_object(Bucket=s3_bucket, Key="u1/processed/a_blur.avif")["ContentType"] == "image/avif"
    body = admin.get_object(Bucket=s3_bucket, Key="u1/processed/a_thumbnail.webp")["Body"].read()
    assert body == b"RIFF-thumb"


def test_only_webp_and_avif_outputs_exist():
    with pytest.raises(ValueError, match="webp or .avif"):
        Output(S3Url("abc", "out/a_thumbnail.jpg"), b"x")
    with pytest.raises(ValueError, match="prefix"):
        Output(S3Url("abc", "out/"), b"x")


def test_a_failed_put_deletes_what_the_attempt_wrote(store, s3_bucket, admin):
    outs = [
        Output(S3Url(s3_bucket, "p/a_thumbnail.webp"), b"1"),
        Output(S3Url(s3_bucket, "p/a_blur.webp"), b"2"),
        Output(S3Url("no-such-bucket-here", "p/a_low-quality.webp"), b"3"),
    ]
    with pytest.raises(PermanentError, match="no such bucket"):
        store.write_outputs(outs)
    assert keys(admin, s3_bucket) == []


def test_a_throttled_put_deletes_what_the_attempt_wrote(store, s3_bucket, throttled_bucket, admin):
    outs = [Output(S3Url(s3_bucket, "p/a_thumbnail.webp"), b"1"),
            Output(S3Url(throttled_bucket, "p/a_blur.webp"), b"2")]
    with pytest.raises(TransientIOError):
        store.write_outputs(outs)
    assert keys(admin, s3_bucket) == []


def test_an_interrupted_write_deletes_what_it_wrote(store, s3_bucket, admin):
    puts = itertools.count()

    def interrupt_second_put(**kwargs):
        if next(puts) == 1:
            raise KeyboardInterrupt

    store.client.meta.events.register("before-call.s3.PutObject", interrupt_second_put)
    outs = [Output(S3Url(s3_bucket, f"p/a_{op}.webp"), b"x") for op in ("thumbnail", "blur", "low-quality")]
    with pytest.raises(KeyboardInterrupt):
        store.write_outputs(outs)
    assert keys(admin, s3_bucket) == []


# --------------------------------------------------------------------------- freshness


def write_job(store, bucket, fingerprints: dict[str, str], source: ObjectInfo) -> dict[S3Url, str]:
    outs = {S3Url(bucket, f"u1/processed/a_{op}.webp"): fp for op, fp in fingerprints.items()}
    store.write_outputs([Output(url, b"w", fingerprint=fp) for url, fp in outs.items()], source=source)
    return outs


def test_up_to_date_by_time_source_and_settings(store, s3_bucket, admin):
    admin.put_object(Bucket=s3_bucket, Key="u1/a.jpg", Body=b"jpeg v1")
    source = store.stat(S3Url(s3_bucket, "u1/a.jpg"))
    fps = {"thumbnail": "w=256 q=80", "blur": "sigma=auto q=80"}
    outs = {S3Url(s3_bucket, f"u1/processed/a_{op}.webp"): fp for op, fp in fps.items()}
    assert not store.up_to_date(source, outs)  # nothing written yet
    write_job(store, s3_bucket, fps, source)
    calls = Calls(store.client)
    assert store.up_to_date(source, outs)
    assert calls.count("PutObject") == 0 and calls.count("HeadObject") == 2
    changed = dict(outs)
    changed[S3Url(s3_bucket, "u1/processed/a_thumbnail.webp")] = "w=320 q=80"
    assert not store.up_to_date(source, changed)  # a changed option redoes
    more = dict(outs)
    more[S3Url(s3_bucket, "u1/processed/a_low-quality.webp")] = "q=30"
    assert not store.up_to_date(source, more)  # an output missing
    admin.delete_object(Bucket=s3_bucket, Key="u1/processed/a_blur.webp")
    assert not store.up_to_date(source, outs)


def test_a_new_upload_makes_the_outputs_stale_even_within_the_same_second(store, s3_bucket, admin):
    admin.put_object(Bucket=s3_bucket, Key="u1/a.jpg", Body=b"jpeg v1")
    source = store.stat(S3Url(s3_bucket, "u1/a.jpg"))
    outs = write_job(store, s3_bucket, {"thumbnail": "w=256"}, source)
    assert store.up_to_date(source, outs)
    admin.put_object(Bucket=s3_bucket, Key="u1/a.jpg", Body=b"jpeg v2")
    again = store.stat(source.url)
    assert not store.up_to_date(again, outs)


def test_outputs_older_than_the_input_are_stale(store, s3_bucket, admin):
    admin.put_object(Bucket=s3_bucket, Key="u1/a.jpg", Body=b"jpeg")
    source = store.stat(S3Url(s3_bucket, "u1/a.jpg"))
    outs = write_job(store, s3_bucket, {"thumbnail": "w=256"}, source)
    newer = ObjectInfo(source.url, source.size, source.mtime + 3600, source.etag)
    assert not store.up_to_date(newer, outs)


def test_fingerprints_metadata_cannot_hold_are_kept_as_their_hash(store, s3_bucket, admin):
    admin.put_object(Bucket=s3_bucket, Key="u1/a.jpg", Body=b"jpeg")
    source = store.stat(S3Url(s3_bucket, "u1/a.jpg"))
    fp = "wïdth=256\nq=80 " + "x" * 600
    outs = write_job(store, s3_bucket, {"thumbnail": fp}, source)
    head = admin.head_object(Bucket=s3_bucket, Key="u1/processed/a_thumbnail.webp")
    assert head["Metadata"][SETTINGS_META] == meta_value(fp) and meta_value(fp).startswith("sha256:")
    assert store.up_to_date(source, outs)
    assert not store.up_to_date(source, {u: fp + "!" for u in outs})


def test_freshness_check_on_a_throttled_bucket_is_an_error_not_a_redo(store, throttled_bucket):
    source = ObjectInfo(S3Url(throttled_bucket, "in/a.jpg"), 4, 0.0, "e")
    with pytest.raises(TransientIOError):
        store.up_to_date(source, {S3Url(throttled_bucket, "in/processed/a_blur.webp"): "fp"})


# --------------------------------------------------------------------------- a stopped server


def test_server_stopped_mid_run_gives_retryable_errors_then_works(seaweed_own, monkeypatch):
    for name, value in seaweed_own.env().items():
        monkeypatch.setenv(name, value)
    bucket = seaweed_own.make_bucket()
    admin = seaweed_own.client()
    for i in range(4):
        admin.put_object(Bucket=bucket, Key=f"u1/{i}.jpg", Body=bytes([i]) * 100)
    store = make_store(max_attempts=1, connect_timeout=1, read_timeout=2)
    listing = list(store.list_inputs(S3Url(bucket, "u1/")))
    assert store.read(listing[0].url, listing[0]) == bytes([0]) * 100
    seaweed_own.stop()
    failed = []
    for info in listing[1:]:
        with pytest.raises(TransientIOError) as err:
            store.read(info.url, info)
        assert err.value.retryable
        failed.append(info)
    with pytest.raises(TransientIOError):
        store.write_outputs([Output(S3Url(bucket, "u1/processed/0_blur.webp"), b"w")])
    seaweed_own.start()
    assert [store.read(i.url, i) for i in failed] == [bytes([i]) * 100 for i in range(1, 4)]
    store.write_outputs([Output(S3Url(bucket, "u1/processed/0_blur.webp"), b"w")])
    assert keys(admin, bucket, "u1/processed/") == ["u1/processed/0_blur.webp"]
