"""s3:// URLs as hostile input: bucket and key rules, confinement to prefixes (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgtool.errors import InvalidJob, PathNotAllowed
from imgtool.storage.s3 import InvalidS3Url, S3Url, check_allowed, is_s3_url, parse_s3_url


@pytest.mark.parametrize("text,bucket,key", [
    ("s3://uploads/u1/photo.jpg", "uploads", "u1/photo.jpg"),
    ("s3://my.bucket-1/a b/ü.jpg", "my.bucket-1", "a b/ü.jpg"),
    ("s3://abc/", "abc", ""),
    ("s3://abc", "abc", ""),
    ("S3://abc/K.JPG", "abc", "K.JPG"),
    ("s3://abc/100%2F..%2Fx.jpg", "abc", "100%2F..%2Fx.jpg"),  # taken as written, never decoded
])
def test_parse_accepts_plain_urls(text, bucket, key):
    url = parse_s3_url(text)
    assert (url.bucket, url.key) == (bucket, key)


@pytest.mark.parametrize("text,reason", [
    ("/local/path.jpg", "not an s3:// URL"),
    ("s3:/abc/x.jpg", "not an s3:// URL"),
    ("s3:///x.jpg", "no bucket"),
    ("s3://ab/x.jpg", "bucket"),
    ("s3://" + "a" * 64 + "/x.jpg", "bucket"),
    ("s3://Uploads/x.jpg", "bucket"),
    ("s3://up_loads/x.jpg", "bucket"),
    ("s3://-abc/x.jpg", "bucket"),
    ("s3://abc-/x.jpg", "bucket"),
    ("s3://a..b/x.jpg", "bucket"),
    ("s3://192.168.1.10/x.jpg", "bucket"),
    ("s3://xn--abc/x.jpg", "bucket"),
    ("s3://abc-s3alias/x.jpg", "bucket"),
    ("s3://abc:9000/x.jpg", "bucket"),
    ("s3://user@abc/x.jpg", "bucket"),
    ("s3://abc/u1/../u2/x.jpg", "'..'"),
    ("s3://abc/../x.jpg", "'..'"),
    ("s3://abc/u1/./x.jpg", "'..'"),
    ("s3://abc/u1//x.jpg", "empty"),
    ("s3://abc//x.jpg", "empty"),
    ("s3://abc/u1\\..\\x.jpg", "backslash"),
    ("s3://abc/x\x00.jpg", "control character"),
    ("s3://abc/x\n.jpg", "control character"),
    ("s3://abc/x\x7f.jpg", "control character"),
    ("s3://abc/x\x85.jpg", "control character"),
    ("s3://abc/gpj.\u202eexe", "control character"),
    ("s3://abc/x\ud800.jpg", "UTF-8"),
    ("s3://abc/" + "k" * 1025, "longer than 1024"),
    ("s3://abc/" + "é" * 513, "longer than 1024"),  # 1026 bytes in UTF-8
])
def test_parse_refuses_hostile_urls(text, reason):
    with pytest.raises(InvalidS3Url) as info:
        parse_s3_url(text)
    err = info.value
    assert reason in err.message
    assert isinstance(err, InvalidJob) and not err.retryable  # a job naming it is an invalid job
    line = str(err)
    assert "\n" not in line and "\x00" not in line and "\u202e" not in line and len(line) < 500


def test_object_or_prefix_as_asked():
    assert parse_s3_url("s3://abc/u1", prefix=True) == S3Url("abc", "u1/")
    assert parse_s3_url("s3://abc/u1/", prefix=True).is_prefix
    assert parse_s3_url("s3://abc", prefix=True) == S3Url("abc", "")
    for text in ("s3://abc/u1/", "s3://abc", "s3://abc/"):
        with pytest.raises(InvalidS3Url, match="prefix"):
            parse_s3_url(text, prefix=False)
    assert parse_s3_url("s3://abc/u1/x.jpg", prefix=False).name == "x.jpg"


def test_parts_of_a_url():
    url = parse_s3_url("s3://abc/u1/sub/x.jpg")
    assert str(url) == "s3://abc/u1/sub/x.jpg"
    assert url.parent == S3Url("abc", "u1/sub/")
    assert url.parent.parent == S3Url("abc", "u1/")
    assert url.parent.parent.parent == S3Url("abc", "")
    assert url.parent.join("processed", "x_thumbnail.webp") == S3Url("abc", "u1/sub/processed/x_thumbnail.webp")
    assert url.relative_to(S3Url("abc", "u1")) == "sub/x.jpg"
    with pytest.raises(InvalidS3Url):
        url.parent.join("..", "x_thumbnail.webp")
    with pytest.raises(InvalidS3Url):
        url.parent.join("a\nb.webp")


@pytest.mark.parametrize("url,root,inside", [
    ("s3://abc/u1/x.jpg", "s3://abc/u1", True),
    ("s3://abc/u1/x.jpg", "s3://abc/u1/", True),
    ("s3://abc/u1/deep/er/x.jpg", "s3://abc/u1", True),
    ("s3://abc/u1/", "s3://abc/u1", True),
    ("s3://abc/u1", "s3://abc/u1", False),  # an object named like the folder is beside it
    ("s3://abc/anything.jpg", "s3://abc", True),
    ("s3://abc/u10/x.jpg", "s3://abc/u1", False),  # whole components, not text
    ("s3://abc/u1.jpg", "s3://abc/u1", False),
    ("s3://abc/u/x.jpg", "s3://abc/u1", False),
    ("s3://abcd/u1/x.jpg", "s3://abc/u1", False),
    ("s3://abc/x.jpg", "s3://abcd", False),
])
def test_confinement_on_whole_components(url, root, inside):
    u, r = parse_s3_url(url), parse_s3_url(root)
    assert u.is_within(r) is inside
    if inside:
        assert check_allowed(u, [parse_s3_url("s3://other/"), r]) is u
    else:
        with pytest.raises(PathNotAllowed) as info:
            check_allowed(u, [r], field="inputPath")
        assert info.value.code == "path_not_allowed" and str(u) in str(info.value)


def test_is_s3_url():
    assert is_s3_url("s3://abc/x") and is_s3_url("S3://abc/x")
    assert not is_s3_url("/s3://abc") and not is_s3_url("s3:/abc") and not is_s3_url(None)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab./\\-_% \x00\n\u202eé")), max_size=24))
def test_accepted_keys_cannot_climb_or_break_a_line(tail):
    """Whatever the key, an accepted URL has no component a file-system-backed server would fold."""
    text = "s3://abc/" + tail
    try:
        url = parse_s3_url(text)
    except InvalidS3Url as exc:
        assert "\n" not in str(exc) and "\x00" not in str(exc)
        return
    assert str(url) == text
    parts = url.key.split("/")
    if url.is_prefix:
        parts = parts[:-1]
    assert all(p not in ("", ".", "..") for p in parts)
    assert not any(ch in url.key for ch in "\\\x00\n\u202e")
    assert url.is_within(url.parent)
    if not url.is_prefix:  # never within a "folder" that is its own key
        assert not url.is_within(url.as_prefix())


def test_allow_roots_from_the_environment_keep_s3_urls():
    from imgtool.queue.jobs import AllowRoots, split_roots

    assert split_roots("/srv/a:s3://uploads/u1:/srv/b::S3://b2/") == ["/srv/a", "s3://uploads/u1", "/srv/b",
                                                                      "S3://b2/"]
    roots = AllowRoots.from_options([], {"IMGTOOL_ALLOW_ROOTS": "s3://uploads/u1"})
    assert roots.roots == ("s3://uploads/u1/",)
    assert roots.resolve("s3://uploads/u1/a.jpg", "inputPath") == "s3://uploads/u1/a.jpg"
    import pytest
    from imgtool.errors import PathNotAllowed

    for outside in ("s3://uploads/u10/a.jpg", "s3://other/u1/a.jpg", "/srv/u1/a.jpg"):
        with pytest.raises(PathNotAllowed):
            roots.resolve(outside, "inputPath")
