#!/usr/bin/env bash
# Builds the CUDA-enabled `popo` binary (release, `--features cuda`).
#
# candle's `cuda` feature needs nvcc at build time (candle-kernels compiles .cu files to PTX).
# With a real CUDA toolkit on PATH (or in $CUDA_HOME / /usr/local/cuda) it is used as is.
# Otherwise, on a build machine without a toolkit, ../shared/tools/cuda13-build-env.sh (relative
# to the repository root) installs the CUDA 13 compiler and libraries from PyPI wheels into a cache
# and builds a stub libcuda for the linker; the binary then runs on any machine with a CUDA 13
# driver and the CUDA 13 runtime libraries on LD_LIBRARY_PATH.
#
# Usage: scripts/build-cuda.sh [extra cargo args]
# Env:   CUDA_COMPUTE_CAP (default 90 = H100/H200; 80 = A100, 89 = L4/4090)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvcc >/dev/null 2>&1; then
    for d in "${CUDA_HOME:-}" /usr/local/cuda; do
        if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then
            export CUDA_HOME="$d"
            export PATH="$d/bin:$PATH"
            break
        fi
    done
fi

if command -v nvcc >/dev/null 2>&1; then
    echo "build-cuda: using the CUDA toolkit at $(command -v nvcc)" >&2
else
    env_script="../shared/tools/cuda13-build-env.sh"
    if [ ! -f "$env_script" ]; then
        echo "build-cuda: no nvcc found and no $env_script; install the CUDA toolkit (nvcc) first" >&2
        exit 1
    fi
    echo "build-cuda: no nvcc; preparing CUDA 13 from PyPI wheels via $env_script" >&2
    # shellcheck disable=SC1090
    source "$env_script"
fi

export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
cargo build --release -p popo --features cuda "$@"
echo "build-cuda: built ${CARGO_TARGET_DIR:-target}/release/popo (compute capability $CUDA_COMPUTE_CAP)" >&2
