"""The sharp peer's Node.js side: where it lives, whether it is installed, installing it when asked.

    python -m bench.sharp_peer --install     # npm install in bench/sharp (once; needs node >= 20 and npm)
    python -m bench.sharp_peer --check       # exit 0 when node and sharp answer

sharp is not a Python dependency of imgtool or of its bench extra: the harness
installs it here only when the sharp contestant is asked for (``ensure()``),
never at import.  package.json pins its version; no lockfile is kept (npm
resolves the pinned version and its platform binaries).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "sharp"
PEER = HERE / "peer.js"


def node() -> str | None:
    return shutil.which("node")


def installed() -> bool:
    return (HERE / "node_modules" / "sharp" / "package.json").is_file()


def unavailable() -> str | None:
    """Why the sharp peer cannot run here, or None."""
    if node() is None:
        return "node is not installed (Node.js >= 20)"
    if not installed():
        return f"sharp is not installed in {HERE} (python -m bench.sharp_peer --install)"
    run = subprocess.run([node(), "-e", "require('sharp')"], cwd=HERE, capture_output=True, text=True)
    if run.returncode != 0:
        return "sharp does not load: " + (run.stderr.strip().splitlines() or ["?"])[-1]
    return None


def install() -> None:
    npm = shutil.which("npm")
    if npm is None or node() is None:
        raise SystemExit("the sharp peer needs node (>= 20) and npm")
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--omit=dev"],
                   cwd=HERE, check=True)


def ensure() -> None:
    """Install sharp if it is missing (the harness calls this only when the sharp contestant is asked for)."""
    if not installed():
        install()
    reason = unavailable()
    if reason:
        raise SystemExit(f"the sharp peer cannot run: {reason}")


def argv(list_file: Path, out_dir: Path, timings: Path, blur: str) -> list[str]:
    return [node() or "node", str(PEER), str(list_file), str(out_dir), str(timings), "--blur", blur]


def main(args: list[str]) -> int:
    if args == ["--install"]:
        install()
        return 0
    if args == ["--check"]:
        reason = unavailable()
        print(reason or "ok")
        return 1 if reason else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
