"""A helper process for the race tests: swaps folders with symlinks as fast as it can.

    python racer.py STOPFILE A1 B1 [A2 B2 ...]

exchanges each pair (a folder and a symlink beside it) with
``renameat2(RENAME_EXCHANGE)`` in a loop, so that each name is now the
folder, now the link, with no moment when it is missing; until STOPFILE
exists.  Then it puts every pair back as it was and prints the number of
exchanges made.
"""

from __future__ import annotations

import ctypes
import os
import sys

AT_FDCWD = -100
RENAME_EXCHANGE = 2

libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: bytes, b: bytes) -> None:
    if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def main(argv: list[str]) -> int:
    stop = argv[0]
    names = [os.fsencode(p) for p in argv[1:]]
    pairs = list(zip(names[::2], names[1::2]))
    swaps = 0
    print("ready", flush=True)
    while True:
        for _ in range(200):
            for a, b in pairs:
                exchange(a, b)
            swaps += 1
        if os.path.exists(stop):
            break
    if swaps % 2:
        for a, b in pairs:
            exchange(a, b)
    print(swaps * len(pairs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
