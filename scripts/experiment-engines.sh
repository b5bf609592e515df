#!/usr/bin/env bash
# Runs results/smollm2-chain-sum-engines.toml: the same POPO runs with rollouts from popo's own
# sampler and from a vLLM CPU server (which this script starts on port 8768 and stops at the
# end). Resumable like any `popo experiment`: run it again after an interruption.
#
#   scripts/experiment-engines.sh          # about 4 runs x 40 minutes on 2 cores
#
# Needs the SmolLM2 model and the chain_sum data (tools/get-smollm2.sh,
# tools/make-reasoning-gym-data.sh chain_sum --out ~/.cache/popo/data/chain_sum) and builds the
# vLLM venv if missing (tools/setup-vllm-venv.sh, about 6 GB).
# Env: POPO_BIN (default: a release build), OMP_THREADS (the server's threads, default 1), TOML
# (the experiment file, default results/smollm2-chain-sum-engines.toml; its vLLM runs must name
# this script's port and weights directory).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=8768
URL="http://127.0.0.1:$PORT"
WEIGHTS=$HOME/.cache/popo/vllm-weights/engines
SERVER_LOG=${SERVER_LOG:-$HOME/.cache/popo/vllm-weights/engines-server.log}
mkdir -p "$(dirname "$WEIGHTS")"
. scripts/lib-vllm.sh

# The server must start on a model before popo runs, so the weights directory gets the starting
# model here, its tied head written out (docs/guide.md, "The vLLM engine": a tied head would not
# be refreshed on reload). A directory made by an earlier version of this script (a plain copy)
# is made again.
if [ -f "$WEIGHTS/config.json" ] && grep -q '"tie_word_embeddings": true' "$WEIGHTS/config.json"; then
    rm -rf "$WEIGHTS"
fi
if [ ! -f "$WEIGHTS/config.json" ]; then
    rm -rf "$WEIGHTS"
    "$POPO_BIN" export --untie "$HOME/.cache/popo/smollm2-135m-instruct" --out "$WEIGHTS"
fi
# --max-num-batched-tokens: see scripts/bench-vllm.sh (vLLM 0.32's CPU worker and split prefills).
start_server "$WEIGHTS" --max-num-batched-tokens 32768
"$POPO_BIN" experiment "${TOML:-results/smollm2-chain-sum-engines.toml}"
