#!/usr/bin/env bash
# Procedural RLVR tasks from PyPI's reasoning-gym as popo training data:
#
#   tools/make-reasoning-gym-data.sh TASK --out DIR [--set KEY=VALUE ...] \
#       [--train-size 2000] [--test-size 300] [--train-seed 1000000] [--test-seed 0]
#   tools/make-reasoning-gym-data.sh chain_sum --out ~/.cache/popo/data/chain_sum \
#       --set min_terms=2 --set max_terms=3 --set min_digits=1 --set max_digits=2
#
# Writes DIR/train.jsonl and DIR/test.jsonl (`problem`, `answer`, `task`, `metadata`; no problem
# in both, train and test drawn from seed ranges far apart) and DIR/settings.json with the exact
# generator settings. Keep DIR outside the repository. reasoning-gym goes into its own venv
# (tools/.venv-rg; $RG_VENV overrides), so the tools venv's pinned packages stay as they are.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${RG_VENV:-$here/.venv-rg}"
version="0.1.25"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import sys; from importlib.metadata import version; sys.exit(version('reasoning-gym') != '$version')" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q "reasoning-gym==$version" >&2
fi
exec "$venv/bin/python" "$here/make_reasoning_gym_data.py" "$@"
