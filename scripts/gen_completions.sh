#!/usr/bin/env bash
# Regenerate completions/ from the live command tree (tests/test_completions.py checks they are current).
set -euo pipefail
cd "$(dirname "$0")/.."
for shell in bash zsh fish; do
    python -m imgtool completion "$shell" > "completions/imgtool.$shell"
done
