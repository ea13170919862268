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
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
# PyCUDA must load and find the device; if it does not, say why (the GPU tests would only skip).
if ! python3 -c "import pycuda.autoinit, pycuda.driver as d; print('pycuda', d.get_version(), d.Device(0).name())" \
        > "$out/pycuda-import.log" 2>&1; then
    echo "FAIL: PyCUDA does not load on this machine:" >&2
    tail -20 "$out/pycuda-import.log" >&2
    status=1
fi
cat "$out/pycuda-import.log" >> "$out/gpu.txt"

# Every test of the gpu group, and the GPU backend's own tests, must pass here: a skip is a failure
# (a PyCUDA that does not load would otherwise pass as "skipped").  The one test meant for machines
# without PyCUDA is left out.
check_junit() {  # check_junit FILE LABEL: fail on any failure, error or skip, or on no test at all
    python3 - "$1" "$2" <<'PY' || status=1
import sys
import xml.etree.ElementTree as ET

path, label = sys.argv[1], sys.argv[2]
try:
    root = ET.parse(path).getroot()
except (OSError, ET.ParseError) as exc:
    sys.exit(f"FAIL: {label}: no test report ({exc})")
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
problems = [f"{label}: {kind.upper()} {case.get('classname')}::{case.get('name')}: "
            f"{(el.get('message') or '').strip()[:300]}"
            for case in root.iter("testcase") for kind in ("skipped", "failure", "error") for el in case.findall(kind)]
for line in problems[:20]:
    print(line, file=sys.stderr)
if len(problems) > 20:
    print(f"{label}: ... and {len(problems) - 20} more", file=sys.stderr)
bad = count["failures"] + count["errors"] + count["skipped"]
print(f"{label}: {count['tests']} tests, {count['failures']} failed, {count['errors']} errors, "
      f"{count['skipped']} skipped")
if bad or not count["tests"]:
    sys.exit(f"FAIL: {label}: every GPU test must run and pass here")
PY
}
python3 -m pytest -q -p no:cacheprovider -rs -m gpu tests/ --junitxml="$out/gpu-tests.xml" 2>&1 \
    | tee "$out/gpu-tests.log" | tail -15
check_junit "$out/gpu-tests.xml" "gpu tests"
python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_quality.py \
    --deselect tests/test_cuda.py::test_without_pycuda_the_backend_is_unavailable \
    --junitxml="$out/cuda-tests.xml" 2>&1 | tee "$out/cuda-tests.log" | tail -5
check_junit "$out/cuda-tests.xml" "cuda backend tests"
timeout 300 python3 -m bench --gpu --no-throughput --work /tmp/bench 2>&1 | tee "$out/bench-gpu.log" | tail -40
[ "$status" = 0 ] && echo "gpu-check: every GPU test ran and passed" || echo "gpu-check: FAILED (see above)" >&2
exit "$status"
