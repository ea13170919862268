"""imgtool.queue.connection: every --redis form read into a Target, bad ones refused with the reason."""

from __future__ import annotations

import time

import pytest

from imgtool.queue.connection import TLS, parse_target, redact, resolve_url
from imgtool.queue.health import AUTH, PERMISSION, REDIRECT, UNREACHABLE, classify
from imgtool.queue.keys import Keys


@pytest.mark.parametrize("url, kind, nodes, master, db, user, pw, s_user, s_pw", [
    ("redis://h:1/2", "single", (("h", 1),), "", 0, None, None, None, None),
    ("redis+sentinel://s1:26380,s2,[::1]:26381/mymaster", "sentinel",
     (("s1", 26380), ("s2", 26379), ("::1", 26381)), "mymaster", 0, None, None, None, None),
    ("redis+sentinel://u:p%40ss@s1:1/mymaster/3?sentinel_password=sp", "sentinel",
     (("s1", 1),), "mymaster", 3, "u", "p@ss", None, "sp"),
    ("rediss+sentinel://:pw@s1/m?db=2&sentinel_username=su&sentinel_password=x", "sentinel",
     (("s1", 26379),), "m", 2, None, "pw", "su", "x"),
    ("redis+cluster://a:7000,b:7001", "cluster", (("a", 7000), ("b", 7001)), "", 0, None, None, None, None),
    ("rediss+cluster://u:pw@a", "cluster", (("a", 6379),), "", 0, "u", "pw", None, None),
])
def test_urls_are_read(url, kind, nodes, master, db, user, pw, s_user, s_pw):
    t = parse_target(resolve_url(url, {}))
    assert (t.kind, t.nodes, t.master, t.db, t.username, t.password, t.sentinel_username, t.sentinel_password) == (
        kind, nodes, master, db, user, pw, s_user, s_pw)
    assert t.ssl == url.startswith("rediss")


@pytest.mark.parametrize("bad, why", [
    ("redis+sentinel://s1:26379", "no master name"),
    ("redis+sentinel://s1/m/1/extra", "expected /<master-name>[/db]"),
    ("redis+sentinel://s1/m/x", "bad db"),
    ("redis+sentinel:///m", "no host"),
    ("redis+sentinel://s1:99999/m", "bad port"),
    ("redis+cluster://a:1/3", "no path"),
    ("redis+cluster://a:1?db=2", "only db 0"),
    ("redis+cluster://a:1?sentinel_password=x", "sentinel_"),
    ("redis+cluster://a:1,,b:2", "cannot read"),
    ("redis+sentinel://s1/m?password=x", "unknown parameter"),
    ("redis+pony://a", "unsupported URL scheme"),
])
def test_bad_urls_are_refused_with_the_reason(bad, why):
    with pytest.raises(ValueError, match=None) as info:
        parse_target(resolve_url(bad, {}))
    assert why in str(info.value)


def test_tls_files_need_a_tls_url():
    with pytest.raises(ValueError, match="rediss://"):
        parse_target("redis://h:1/0", TLS(ca="/ca.pem"))
    t = parse_target("rediss://h:1/0", TLS(ca="/ca.pem", cert="/c.pem", key="/k.pem"))
    assert t.tls.kwargs() == {"ssl_cert_reqs": "required", "ssl_ca_certs": "/ca.pem",
                              "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"}


def test_passwords_are_redacted_everywhere():
    assert redact("redis+sentinel://u:secret@a:1,b:2/m?sentinel_password=s2&db=1") == \
        "redis+sentinel://u:***@a:1,b:2/m?sentinel_password=***&db=1"
    assert redact("redis+cluster://:secret@a:1") == "redis+cluster://:***@a:1"
    assert "secret" not in parse_target("redis+sentinel://u:secret@a/m").redacted


@pytest.mark.parametrize("prefix, tag", [("image", None), ("{image}", "image"), ("staging:{q}", "q"),
                                          ("{}x", None), ("{image", None), ("a{b}c{d}", "b")])
def test_hash_tags_as_redis_reads_them(prefix, tag):
    assert Keys(prefix).hash_tag == tag


def test_errors_are_named_by_cause():
    import redis

    t = parse_target("redis://worker:pw@h:1/0")
    state, line = classify(redis.exceptions.AuthenticationError("invalid username-password pair"), t)
    assert state == AUTH and "refused the password for user 'worker'" in line and "***" in line
    state, line = classify(redis.exceptions.NoPermissionError(
        "this user has no permissions to run the 'blmove' command"), t)
    assert state == PERMISSION and "'blmove'" in line
    state, line = classify(redis.exceptions.MovedError("4881 10.0.0.2:7000"), t)
    assert state == REDIRECT and "MOVED 4881 10.0.0.2:7000" in line
    state, _ = classify(redis.exceptions.ConnectionError("Connection refused"), t)
    assert state == UNREACHABLE


def test_tls_with_a_ca_and_a_client_certificate(tmp_path):
    """A real redis-server on TLS only, asking for client certificates: the options are all it takes."""
    import json
    import os
    import subprocess
    import sys

    import trustme

    from conftest import ACL_PASSWORD, ACL_USER, _redis_server_binary, create_acl_user, free_port
    from test_queue_worker import make_image

    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert = ca.issue_cert("imgtool-worker")
    ca_file, server_pem, client_pem = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    port = free_port()
    proc = subprocess.Popen([_redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(server_pem), "--tls-key-file", str(server_pem),
                             "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "yes",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        admin = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca_file),
                            ssl_certfile=str(client_pem), ssl_keyfile=str(client_pem), socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                admin.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        create_acl_user(admin)
        url = f"rediss://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{port}/0"
        cli = [sys.executable, "-m", "imgtool"]
        src = make_image(tmp_path / "up" / "t.png")
        env = dict(os.environ, IMGTOOL_REDIS_CA=str(ca_file), IMGTOOL_REDIS_CERT=str(client_pem),
                   IMGTOOL_REDIS_KEY=str(client_pem))
        res = subprocess.run([*cli, "enqueue", "--redis", url, "--ops", "thumbnail", str(src)],
                             capture_output=True, text=True, timeout=60, env=env)  # the env forms
        assert res.returncode == 0, res.stderr
        assert admin.llen("image:jobs") == 1
        # without the client certificate the server refuses: one line, exit 1
        res = subprocess.run([*cli, "status", "--redis", url, "--redis-ca", str(ca_file)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and res.stderr.startswith("Error: cannot reach Redis") and "Traceback" not in res.stderr
        w = subprocess.Popen([*cli, "queue", "--redis", url, "--backend", "cpu", "--redis-ca", str(ca_file),
                              "--redis-cert", str(client_pem), "--redis-key", str(client_pem)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while admin.llen("image:done") == 0:
                assert time.monotonic() < deadline and w.poll() is None, "the job was not done over TLS"
                time.sleep(0.1)
            assert json.loads(admin.lindex("image:done", 0))["status"] == "done"
        finally:
            w.kill()
            w.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
