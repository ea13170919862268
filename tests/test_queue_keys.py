"""imgtool.queue.keys: every key from one prefix; the protocol's names; Cluster hash tags."""

import ast
from pathlib import Path

import pytest

from imgtool.queue.keys import Keys

PACKAGE = Path(__file__).resolve().parents[1] / "imgtool"


def all_keys(k: Keys, worker="host:1:abc"):
    return [k.jobs, k.retry, k.done, k.failed, k.retry_schedule, k.workers, k.recoveries,
            k.heartbeat(worker), k.inflight(worker)]


def test_the_upload_servers_lists_keep_their_names():
    k = Keys()
    assert (k.jobs, k.retry, k.done, k.failed) == ("image:jobs", "image:retry", "image:done", "image:failed")
    assert list(k.lists.values()) == ["image:jobs", "image:retry", "image:done", "image:failed"]


def test_own_keys_are_documented_names():
    k = Keys()
    assert k.retry_schedule == "image:retry:schedule"
    assert k.workers == "image:workers"
    assert k.recoveries == "image:recoveries"
    assert k.heartbeat("h:1:a") == "image:worker:h:1:a:heartbeat"
    assert k.inflight("h:1:a") == "image:worker:h:1:a:inflight"


@pytest.mark.parametrize("prefix", ["image", "{image}", "staging:image", "x"])
def test_every_key_shares_the_prefix(prefix):
    keys = all_keys(Keys(prefix))
    assert all(key.startswith(prefix + ":") for key in keys)
    assert len(set(keys)) == len(keys)


def _hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the first {...} when non-empty, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def test_a_braced_prefix_puts_every_key_in_one_cluster_slot():
    assert {_hash_tag(key) for key in all_keys(Keys("{image}"))} == {"image"}


@pytest.mark.parametrize("bad", ["", "a b", "tab\there"])
def test_bad_prefixes_are_refused(bad):
    with pytest.raises(ValueError):
        Keys(bad)


@pytest.mark.parametrize("bad", ["", "{x}", "a b", "-x", "a/b", "x" * 201])
def test_bad_worker_ids_are_refused(bad):
    with pytest.raises(ValueError):
        Keys().inflight(bad)


def test_no_other_module_spells_a_key():
    """Key names are built in keys.py only: no other module of the package holds "image:..."."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "keys.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if any(f"image:{name}" in text for name in ("jobs", "retry", "done", "failed", "worker")):
                    if node.col_offset is not None and not _is_docstring_or_help(text):
                        offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def _is_docstring_or_help(text: str) -> bool:
    # Prose (docstrings, help texts, log lines) may name the lists; code may not build them.
    return " " in text.strip()
