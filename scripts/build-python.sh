#!/usr/bin/env bash
# Build the popo-verify Python wheel (crates/popo-verify-py: PyO3, abi3, CPython >= 3.9) into
# target/wheels/, with maturin from PyPI installed in a venv this script makes.
#
#   scripts/build-python.sh
#   pip install target/wheels/popo_verify-*.whl
#
# Older popo_verify wheels in target/wheels/ are removed first, so the glob above names one file.
# Env: PYTHON (default python3), VENV (default .venv-maturin), CARGO_TARGET_DIR (default
# target/; the wheel always goes to target/wheels/), CARGO_BUILD_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-maturin}
MATURIN_VERSION=1.16.0
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ "$("$VENV/bin/maturin" --version 2>/dev/null)" != "maturin $MATURIN_VERSION" ]; then
    "$VENV/bin/python" -m pip install -q "maturin==$MATURIN_VERSION"
fi

mkdir -p target/wheels
rm -f target/wheels/popo_verify-*.whl
"$VENV/bin/maturin" build --release --locked \
    --manifest-path crates/popo-verify-py/Cargo.toml \
    --interpreter "$VENV/bin/python" \
    --out target/wheels
ls target/wheels/popo_verify-*.whl
