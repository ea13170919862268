"""The Redis permissions the worker, ``enqueue`` and ``status`` need: one ``ACL SETUSER`` line.

Every command they send (and every command their Lua scripts run: Redis
checks those too), on the keys of one prefix, and nothing else::

    ACL SETUSER imgtool on >PASSWORD resetkeys ~image:* resetchannels -@all +ping +info ...

``acl_setuser_line(prefix)`` gives it for a prefix; the README carries it for
the default one.  The test suite creates this user on every Redis it starts and runs all the queue
tests as it, so a command added without a rule here fails the tests.
"""

from __future__ import annotations

# Connecting and finding out the deployment: PING, INFO (server mode), and what
# RedisCluster asks every node (CLUSTER SLOTS/SHARDS for the slot map, COMMAND
# for key positions).  redis-py's CLIENT SETINFO (Redis 7.2 on) may be refused:
# redis-py carries on without it, and Redis 7.0 does not know the rule.
CONNECTION = ("ping", "info", "command", "cluster|slots", "cluster|shards", "cluster|info")
# The Lua scripts of queue/protocol.py, loaded once and run by SHA.
SCRIPTING = ("evalsha", "eval", "script|load", "script|exists")
# What the scripts and the worker's own calls run on the queue's keys.
DATA = ("blmove", "lmove", "lrange", "lindex", "llen", "lrem", "lpush", "rpush", "ltrim",
        "hset", "hgetall", "hincrby", "hdel", "pexpire", "exists", "del",
        "sadd", "srem", "smembers", "zadd", "zrem", "zrange", "zrangebyscore", "zcard")
# TIME inside the scripts (the Redis clock for due times); WAIT for --min-replicas-ack.
SERVER = ("time", "wait")

COMMANDS = CONNECTION + SCRIPTING + DATA + SERVER


def acl_rules(prefix: str = "image") -> list[str]:
    """The ACL rules (without ``on`` and the password) for keys under ``prefix``."""
    return ["resetkeys", f"~{prefix}:*", "resetchannels", "-@all", *(f"+{c}" for c in COMMANDS)]


def acl_setuser_line(prefix: str = "image", user: str = "imgtool", password: str = "PASSWORD") -> str:
    return " ".join(["ACL SETUSER", user, "on", f">{password}", *acl_rules(prefix)])
