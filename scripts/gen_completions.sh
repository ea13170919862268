#!/usr/bin/env bash
# Regenerate completions/ from the live command tree (tests/test_completions.py checks they are current).
# The Python that runs imgtool: $PYTHON if set, else the checkout's .venv/bin/python when
# there is one, else `python` from PATH.
#   PYTHON=/path/to/python bash scripts/gen_completions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
for shell in bash zsh fish; do
    "$PYTHON" -m imgtool completion "$shell" > "completions/imgtool.$shell"
done
