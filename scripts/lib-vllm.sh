# Shared by scripts/test-vllm.sh, bench-vllm.sh and experiment-engines.sh (sourced, not run):
# the vLLM venv and the popo binary, and starting and stopping a vLLM CPU server. Sourcing it
# sets VENV (tools/setup-vllm-venv.sh builds the venv on first use) and POPO_BIN (kept if set,
# else a release build). The server functions expect PORT, URL, WEIGHTS and SERVER_LOG;
# OMP_THREADS (default 1: the trainer has the other core) sets the server's compute threads.
SERVER_PID=""

echo "== venv"
VENV=$(tools/setup-vllm-venv.sh | tail -n 1)
if [ -z "${POPO_BIN:-}" ]; then
    cargo build --release -q -p popo
    POPO_BIN="${CARGO_TARGET_DIR:-target}/release/popo"
fi

fail() { echo "FAIL: $*" >&2; exit 1; }
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -CONT -- "-$SERVER_PID" 2>/dev/null || true
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap stop_server EXIT

# The server in a session of its own, so that signals reach its engine and worker processes.
# Arguments: the model directory (default $WEIGHTS), then extra server flags.
start_server() {
    local model=${1:-$WEIGHTS}
    shift || true
    echo "== starting vLLM on $model ($URL) $*"
    VLLM_SERVER_DEV_MODE=1 VLLM_ALLOW_RUNTIME_LORA_UPDATING=True VLLM_CPU_KVCACHE_SPACE=1 \
        VLLM_CPU_OMP_THREADS_BIND=nobind OMP_NUM_THREADS=${OMP_THREADS:-1} \
        setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
        --model "$model" --host 127.0.0.1 --port "$PORT" --dtype float32 --max-model-len 512 \
        --logprobs-mode processed_logprobs --seed 0 "$@" >>"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local t0=$SECONDS
    until curl -sf -m 5 "$URL/v1/models" >/dev/null; do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$SERVER_LOG"; fail "the server exited"; }
        [ $((SECONDS - t0)) -lt 1200 ] || fail "the server did not come up in 20 minutes"
        sleep 5
    done
    echo "server up after $((SECONDS - t0)) s"
}

