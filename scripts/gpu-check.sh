#!/usr/bin/env bash
# Run ON THE GPU MACHINE, in the repository root, with .whl/ carried there
# (see scripts/gpu-wheels.sh): build PyCUDA, run the GPU tests and the GPU
# benchmark, and leave their logs in $OUT (or ./gpu-out).  One short script,
# so one device call does it all.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 CUDA_ROOT=${CUDA_ROOT:-/usr/local/cuda} PATH=${CUDA_ROOT:-/usr/local/cuda}/bin:$PATH
site=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl || exit 1
export PYTHONPATH="$site:$PWD"
# PyCUDA builds from source against the local toolkit (a few minutes on 16 cores).
(cd /tmp && rm -rf pycuda-src && mkdir pycuda-src && tar xzf "$OLDPWD"/.whl/pycuda-*.tar.gz -C pycuda-src --strip-components 1 \
    && cd pycuda-src && python3 configure.py --cuda-root="$CUDA_ROOT" >/dev/null \
    && MAKEFLAGS=-j16 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" .) \
    > "$out/pycuda-build.log" 2>&1 || { tail -40 "$out/pycuda-build.log"; exit 1; }
python3 setup.py -q build_ext --inplace > "$out/cpufast-build.log" 2>&1 || echo "C fast paths not built (see log)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import pycuda.autoinit, pycuda.driver as d; print('pycuda', d.get_version(), d.Device(0).name())" | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py 2>&1 | tee "$out/gpu-tests.log" | tail -15
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_quality.py 2>&1 | tee "$out/cuda-tests.log" | tail -5
timeout 300 python3 -m bench --gpu --no-throughput --work /tmp/bench 2>&1 | tee "$out/bench-gpu.log" | tail -40
