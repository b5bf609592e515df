#!/usr/bin/env bash
# Python speed (BENCHMARKS.md, "Python"): popo_verify.verify against HuggingFace math-verify on
# the 2,000 MATH500 benchmark pairs, in one process and one thread, plus verify_batch on every
# core. Builds the wheel (scripts/build-python.sh) and installs it with math-verify (PyPI) in a
# venv this script makes. Not a test: it only prints the table.
#
#   scripts/bench-python.sh
#
# Env: PYTHON (default python3), BENCH_VENV (default .venv-pybench), DATA_DIR (default
# ../shared/data), REPEAT (popo passes, 5), MV_REPEAT (math-verify passes, 3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
BENCH_VENV=${BENCH_VENV:-.venv-pybench}
DATA_DIR=${DATA_DIR:-../shared/data}
MATH_VERIFY_VERSION=0.9.0

scripts/build-python.sh
if [ ! -x "$BENCH_VENV/bin/python" ]; then
    "$PYTHON" -m venv "$BENCH_VENV"
fi
if ! "$BENCH_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('math-verify') != '$MATH_VERIFY_VERSION')" 2>/dev/null; then
    "$BENCH_VENV/bin/python" -m pip install -q "math-verify==$MATH_VERIFY_VERSION"
fi
"$BENCH_VENV/bin/python" -m pip install -q --force-reinstall --no-deps target/wheels/popo_verify-*.whl

"$BENCH_VENV/bin/python" tools/bench_python_verify.py --data "$DATA_DIR" \
    --repeat "${REPEAT:-5}" --mv-repeat "${MV_REPEAT:-3}"
