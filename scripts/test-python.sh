#!/usr/bin/env bash
# The Python tests of the popo-verify wheel (CI runs this after `cargo test --workspace`):
# builds the wheel (scripts/build-python.sh), installs it and pytest from PyPI in a venv this
# script makes, and runs crates/popo-verify-py/tests. Extra arguments go to pytest.
#
#   scripts/test-python.sh
#   scripts/test-python.sh -k trl -x
#
# One test compares the wheel with the `popo verify` CLI on the 2,000 MATH500 benchmark pairs
# (data: ../shared/data, or DATA_DIR; skipped with a message when missing, a failure when
# CI=true). The CLI is POPO_BIN if set, else the debug `popo` that `cargo test --workspace`
# builds: `cargo test --workspace --no-run` below makes sure of it (it has nothing to do right
# after `cargo test --workspace`; a plain `cargo build -p popo` would resolve features without
# dev-dependencies and rebuild).
# Env: PYTHON (default python3), TEST_VENV (default .venv-pytest), POPO_BIN, DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TEST_VENV=${TEST_VENV:-.venv-pytest}
PYTEST_VERSION=8.4.2

scripts/build-python.sh

if [ ! -x "$TEST_VENV/bin/python" ]; then
    "$PYTHON" -m venv "$TEST_VENV"
fi
if ! "$TEST_VENV/bin/python" -c "import pytest, sys; sys.exit(pytest.__version__ != '$PYTEST_VERSION')" 2>/dev/null; then
    "$TEST_VENV/bin/python" -m pip install -q "pytest==$PYTEST_VERSION"
fi
"$TEST_VENV/bin/python" -m pip install -q --force-reinstall --no-deps target/wheels/popo_verify-*.whl

if [ -z "${POPO_BIN:-}" ]; then
    cargo test --workspace --no-run -q
    POPO_BIN="${CARGO_TARGET_DIR:-target}/debug/popo"
fi
export POPO_BIN
echo "popo CLI for the equality test: $POPO_BIN"

"$TEST_VENV/bin/python" -m pytest -p no:cacheprovider -q crates/popo-verify-py/tests "$@"
