#!/usr/bin/env bash
# Creates tools/.venv with the Python packages that tools/make_fixtures.py and
# tools/get-smollm2.sh need.
# Idempotent: re-running reuses the venv and only installs what is missing.
# Everything comes from PyPI (the CPU build of torch is the default wheel there on
# most platforms; on Linux x86_64 the PyPI wheel also carries CUDA libs, which is
# large but harmless: the fixtures are generated on the CPU).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi

# Pinned so that regenerated fixtures are reproducible across machines.
pkgs=(
    "torch==2.8.0"
    "transformers==4.57.1"
    "tokenizers==0.22.1"
    "safetensors==0.6.2"
    "numpy==2.3.4"
    "jinja2==3.1.6"
    # tools/get-smollm2.sh: transformers reads GGUF files through these
    "gguf==0.17.1"
    "accelerate==1.11.0"
    # tools/make_lora_fixtures.py: the LoRA reference (the POPO reference code uses 0.18.1)
    "peft==0.18.1"
)

if "$venv/bin/python" - "${pkgs[@]}" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
    echo "tools/.venv is up to date"
    exit 0
fi

"$venv/bin/python" -m pip install --upgrade pip
"$venv/bin/python" -m pip install "${pkgs[@]}"
echo "tools/.venv ready: $("$venv/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
