#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a device check: fill .whl/ with what
# the GPU machine lacks to build PyCUDA and run imgtool's GPU tests (Python
# 3.12 there; it has numpy, Pillow, pytest, hypothesis, click, tqdm, psutil,
# setuptools and wheel already).  Then name `.whl` in the device run's carry
# and run scripts/gpu-check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --no-binary pycuda -d .whl pycuda
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pytools platformdirs mako siphash24
ls -la .whl
