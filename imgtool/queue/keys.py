"""THE one place Redis keys are built: every key of the protocol, from one prefix.

With the default prefix ``image``:

==============================  ======  =====================================================
key                             type    what
==============================  ======  =====================================================
image:jobs                      list    pending jobs; producers RPUSH, workers take the left end
image:retry                     list    jobs waiting for a retry (operators LLEN it)
image:done                      list    finished jobs with their outputs, newest last, capped
image:failed                    list    invalid jobs and jobs past their retries, newest last
image:retry:schedule            zset    when each entry of image:retry is due: member
                                        ``<id>|<payload>``, score its due time (ms, Redis clock)
image:workers                   set     ids of registered workers (alive or awaiting recovery)
image:worker:<id>:heartbeat     hash    the worker's state, host, pid, ...; its TTL is the
                                        heartbeat: when the key is gone the worker is dead
image:worker:<id>:inflight      list    the exact payloads the worker has taken and not yet
                                        recorded a result for
image:recoveries                hash    sha1(payload) -> times the job was recovered from a
                                        dead worker (the poison-pill count)
==============================  ======  =====================================================

``--prefix '{image}'`` makes every key share the hash tag ``image``, so they all
live in one Redis Cluster slot and the Lua scripts may touch them together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .defaults import DEFAULT_PREFIX

# A worker id goes inside key names: keep it to characters that need no quoting
# in redis-cli and cannot open a hash tag.
_WORKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


def valid_worker_id(worker_id: str) -> bool:
    return bool(_WORKER_ID_RE.match(worker_id))


@dataclass(frozen=True)
class Keys:
    """The key names for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self):
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError(f"invalid key prefix {self.prefix!r}: it must be non-empty, without spaces")

    @property
    def hash_tag(self) -> str | None:
        """The Cluster hash tag every key shares (``image`` for ``{image}``), or None.

        Redis hashes only what is between the first ``{`` and the next ``}``
        when that is not empty; the prefix comes first in every key, so the
        prefix's tag, when it has a whole one, is every key's.
        """
        start = self.prefix.find("{")
        if start < 0:
            return None
        end = self.prefix.find("}", start + 1)
        if end <= start + 1:
            return None
        return self.prefix[start + 1:end]

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # The four lists the upload server's operators watch.
    @property
    def jobs(self) -> str:
        return self._key("jobs")

    @property
    def retry(self) -> str:
        return self._key("retry")

    @property
    def done(self) -> str:
        return self._key("done")

    @property
    def failed(self) -> str:
        return self._key("failed")

    # imgtool's own keys.
    @property
    def retry_schedule(self) -> str:
        return self._key("retry", "schedule")

    @property
    def workers(self) -> str:
        return self._key("workers")

    @property
    def recoveries(self) -> str:
        return self._key("recoveries")

    def heartbeat(self, worker_id: str) -> str:
        return self._key("worker", self._checked(worker_id), "heartbeat")

    def inflight(self, worker_id: str) -> str:
        return self._key("worker", self._checked(worker_id), "inflight")

    @property
    def lists(self) -> dict[str, str]:
        """The four monitored lists by short name, in the order status prints them."""
        return {"jobs": self.jobs, "retry": self.retry, "done": self.done, "failed": self.failed}

    @staticmethod
    def _checked(worker_id: str) -> str:
        if not valid_worker_id(worker_id):
            raise ValueError(f"invalid worker id {worker_id!r}")
        return worker_id
