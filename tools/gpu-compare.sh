#!/usr/bin/env bash
# popo against PyTorch at the same shapes, side by side, in one call:
#
#   tools/gpu-compare.sh gpu    # CUDA: random Qwen2.5-0.5B-shaped model, bf16
#   tools/gpu-compare.sh cpu    # CPU: SmolLM2-135M-Instruct, f32, popo and PyTorch alternately
#   tools/gpu-compare.sh        # gpu where nvidia-smi sees a GPU, else cpu
#
# Each side is measured by its own bench at the same shapes: `popo bench --json` (decode tok/s
# per batch, sampled at T = 1 to the full length; one timed training update) and
# tools/torch_bench.py (HF `generate` with the same settings; PyTorch eager forward + backward +
# AdamW over the same sequences). The table gives popo / reference ratios. On the GPU a second
# table sets popo's on-device token choice beside its host sampler (`--host-sampling`, the path
# every decode step took before), from the same binary.
#
# GPU machine (PyTorch + transformers + CUDA 13 libraries, no Rust, no network): run from the
# repository root with the release binary built by scripts/build-cuda.sh carried as
# .gpu/popo.xz (`xz -9`; about 9 MB) or .gpu/popo.gz, with .gpu named in the device call's
# `carry`. The CUDA libraries are found in PyTorch's `nvidia` package (as
# ../shared/tools/gpu/gpu_check.sh did). The model is built with transformers from a fixed seed
# in a temporary folder, so nothing but the binary needs carrying.
#
# CPU: needs the SmolLM2 directory that tools/get-smollm2.sh makes ($SMOLLM2, default
# ~/.cache/popo/smollm2-135m-instruct) and a popo binary ($POPO, else target/release/popo). The
# machine may be shared, so popo and PyTorch run alternately, PAIRS times (A B A B ...), and the
# table gives each pair's ratio and their median.
#
# Shapes (environment; defaults are the issue's):
#   GPU_BATCH=1,64,256 GPU_PROMPT=128 GPU_NEW=256 GPU_TRAIN="16x512 64x320"  REPEATS=3
#   CPU_BATCH=1,32     CPU_PROMPT=128 CPU_NEW=64  CPU_TRAIN=8x256  PAIRS=3  CPU_REPEATS=1
#   GROUP=8 GPU_GROUP_BATCH=64,256 CPU_GROUP_BATCH=32: the rollout shape of an RL step, B / GROUP
#   prompts x GROUP samples (popo prefills each prompt once; the reference gets each prompt
#   repeated GROUP times, as TRL's GRPO trainer calls `generate`). GROUP=1 skips it.
# GPU_DEVICE=cpu GPU_LAYERS=2 (and small shapes) dry-runs the GPU flow on a machine without one.
# A training shape BxL is B sequences of L tokens (a quarter prompt), in micro-batches of
# MICRO (default 8); 64x320 is a GRPO step of 8 prompts x 8 samples x 240 completion tokens.
# Results: $OUT (default /tmp/gpu-compare): one JSON per run, log.txt, compare.md.
set -uo pipefail
R=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/gpu-compare}
W=${WORK:-/tmp/gpu-compare-work}
mkdir -p "$OUT" "$W"
exec > >(tee -a "$OUT/log.txt") 2>&1
MODE=${1:-auto}
if [ "$MODE" = auto ]; then
    if nvidia-smi -L >/dev/null 2>&1; then MODE=gpu; else MODE=cpu; fi
fi
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$R/tools/.venv/bin/python" ]; then PY=$R/tools/.venv/bin/python; else PY=python3; fi
fi
MICRO=${MICRO:-8}
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0))s] $*"; }

# The popo binary: $POPO, else a carried .gpu/popo.xz or .gpu/popo.gz (unpacked with Python, which
# every such machine has), else a local release build.
popo_bin() {
    if [ -n "${POPO:-}" ]; then
        echo "$POPO"
        return
    fi
    for f in "$R/.gpu/popo.xz" "$R/.gpu/popo.gz"; do
        if [ -f "$f" ]; then
            "$PY" - "$f" "$W/popo" <<'PY' || return 1
import gzip, lzma, shutil, sys
src, dst = sys.argv[1:]
with (lzma.open if src.endswith(".xz") else gzip.open)(src) as i, open(dst, "wb") as o:
    shutil.copyfileobj(i, o)
PY
            chmod +x "$W/popo"
            echo "$W/popo"
            return
        fi
    done
    for f in "${CARGO_TARGET_DIR:-$R/target}/release/popo" "$R/target/release/popo"; do
        if [ -x "$f" ]; then
            echo "$f"
            return
        fi
    done
    return 1
}

P=$(popo_bin) || { echo "no popo binary: set POPO, carry .gpu/popo.xz, or build target/release/popo"; exit 1; }
"$P" --help >/dev/null || { echo "popo ($P) does not start"; exit 1; }
echo "popo: $P"
echo "python: $PY ($("$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"

# Peak GPU memory of whatever runs while it watches (MiB, from nvidia-smi; the driver's figure).
watch_mem() {
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$W/mem-$1.txt" 2>/dev/null &
    echo $!
}
peak_mem() { sort -n "$W/mem-$1.txt" 2>/dev/null | tail -1; }

# run_popo NAME DEVICE DTYPE MODEL [bench args...]: one `popo bench --json` into $OUT/NAME.json.
run_popo() {
    local name=$1 dev=$2 dt=$3 model=$4
    shift 4
    stamp "popo bench $name"
    local m=""
    [ "$dev" = cuda ] && m=$(watch_mem "$name")
    timeout "${RUN_TIMEOUT:-1800}" "$P" bench --model "$model" --device "$dev" --dtype "$dt" --json "$@" \
        >"$OUT/$name.json" 2>"$W/$name.err" || { echo "popo bench $name failed:"; tail -5 "$W/$name.err"; }
    [ -n "$m" ] && { kill "$m" 2>/dev/null; echo "{\"peak_gpu_mem_mb\": $(peak_mem "$name")}" >"$OUT/$name.mem.json"; }
}

# run_torch NAME DEVICE DTYPE MODEL [bench args...]: tools/torch_bench.py into $OUT/NAME.json.
# On a CPU shared with other work, libgomp's default spin-waiting at every parallel region makes
# PyTorch several times slower (SmolLM2, 2 cores at load 8: a 128-token forward 2.9 s, 0.6 s with
# OMP_WAIT_POLICY=PASSIVE), so the reference runs in its best setting unless told otherwise.
run_torch() {
    local name=$1 dev=$2 dt=$3 model=$4
    shift 4
    stamp "torch bench $name"
    OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} timeout "${RUN_TIMEOUT:-1800}" "$PY" "$R/tools/torch_bench.py" "$model" --device "$dev" --dtype "$dt" --json "$@" \
        >"$OUT/$name.json" 2>"$W/$name.err" || { echo "torch bench $name failed:"; tail -5 "$W/$name.err"; }
}

# Bench arguments for decode only (BATCHES PROMPT NEW) and for one training shape (BxL).
decode_args() { echo "--batch $1 --prompt-len $2 --new-tokens $3 --train-batch 0"; }
train_args() {
    local b=${1%x*} l=${1#*x}
    # A two-token decode at batch 1 (popo bench always decodes) costs a second or two.
    echo "--batch 1 --prompt-len 8 --new-tokens 2 --train-batch $b --train-len $l --micro-batch $MICRO"
}

# table TITLE FILE_PREFIX...: the side-by-side table of $OUT/<prefix>-popo*.json against
# $OUT/<prefix>-torch*.json, one row per measure and pair, ratios and medians.
table() {
    "$PY" - "$OUT" "$@" <<'PY' | tee -a "$OUT/compare.md"
import glob, json, os, statistics, sys
out, title, *prefixes = sys.argv[1:]
def load(p):
    try:
        with open(p) as f:
            return json.load(f)
    except Exception:
        return None
print(f"\n### {title}\n")
print("| measure | pair | popo | reference | popo / reference | ms/step popo | ms/step reference |")
print("|---|---|---|---|---|---|---|")
fmt = lambda x, d=1: "-" if x is None else f"{x:,.{d}f}"
for prefix in prefixes:
    pairs = sorted({os.path.basename(p)[len(prefix) + 5:-5] for p in glob.glob(f"{out}/{prefix}-popo*.json")
                    if not p.endswith(".mem.json")})
    rows = {}  # measure -> [(pair, popo, reference, popo ms/step, reference ms/step)]
    for k in pairs:
        a, b = load(f"{out}/{prefix}-popo{k}.json"), load(f"{out}/{prefix}-torch{k}.json")
        if a is None or b is None:
            continue
        mem = load(f"{out}/{prefix}-popo{k}.mem.json") or {}
        training = a.get("train_tokens_per_s") is not None
        g = a.get("group_size", 1)
        for bs, v in a.get("decode_tokens_per_s", {}).items():
            if training and prefix.startswith("train"):
                continue  # the two-token decode a training run makes
            shape = f" ({int(bs) // g} prompts x {g})" if g > 1 and int(bs) >= g else ""
            rows.setdefault(f"decode tok/s, batch {bs}{shape}", []).append(
                (k, v, b.get("decode_tokens_per_s", {}).get(bs),
                 a.get("decode_ms_per_step", {}).get(bs), b.get("decode_ms_per_step", {}).get(bs)))
        if training:
            shape = prefix[len("train-"):] if prefix.startswith("train-") else "update"
            rows.setdefault(f"training tok/s, {shape}", []).append(
                (k, a["train_tokens_per_s"], b.get("train_tokens_per_s"), None, None))
            if "peak_gpu_mem_mb" in mem or "peak_gpu_mem_mb" in b:
                rows.setdefault(f"peak GPU MiB, {shape} (popo: nvidia-smi; torch: reserved)", []).append(
                    (k, mem.get("peak_gpu_mem_mb"), b.get("peak_gpu_mem_mb"), None, None))
    for name, vals in rows.items():
        ratios = []
        for k, v, w, ms, wms in vals:
            r = v / w if v and w else None
            if r:
                ratios.append(r)
            print(f"| {name} | {k or '-'} | {fmt(v)} | {fmt(w)} | {'-' if r is None else f'{r:.2f}x'} "
                  f"| {fmt(ms)} | {fmt(wms)} |")
        if len(ratios) > 1:
            print(f"| {name} | median | | | **{statistics.median(ratios):.2f}x** | | |")
PY
}

# sampling_table DEVICE_JSON HOST_JSON: popo's decode with tokens chosen on the device against the
# host sampler (`popo bench --host-sampling`: what every step did before on-device sampling).
sampling_table() {
    "$PY" - "$OUT/$1.json" "$OUT/$2.json" <<'PY' | tee -a "$OUT/compare.md"
import json, sys
try:
    dev, host = (json.load(open(p)) for p in sys.argv[1:])
except Exception as e:
    sys.exit(f"no sampling comparison: {e}")
print("\n### popo decode: tokens chosen on the device vs on the host\n")
print("| batch | ms/step device | ms/step host | tok/s device | tok/s host | host bytes/step device | host bytes/step host |")
print("|---|---|---|---|---|---|---|")
for b in dev["decode_tokens_per_s"]:
    g = lambda r, k: r.get(k, {}).get(b, float("nan"))
    print(f"| {b} | {g(dev, 'decode_ms_per_step'):.1f} | {g(host, 'decode_ms_per_step'):.1f} "
          f"| {g(dev, 'decode_tokens_per_s'):,.0f} | {g(host, 'decode_tokens_per_s'):,.0f} "
          f"| {g(dev, 'decode_host_bytes_per_step'):,.0f} | {g(host, 'decode_host_bytes_per_step'):,.0f} |")
PY
}

gpu() {
    local D=${GPU_DEVICE:-cuda} L=${GPU_LAYERS:-24}
    stamp "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none), running on $D"
    export LD_LIBRARY_PATH=$("$PY" - <<'PY'
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
dirs = set()
for base in roots:
    for pat in ("libcublas.so.*", "libcublasLt.so.*", "libcurand.so.*", "libcudart.so.*", "libnvrtc.so.*"):
        dirs.update(os.path.dirname(p) for p in glob.glob(base + "/**/" + pat, recursive=True))
print(":".join(sorted(dirs)))
PY
)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$P" | grep -E "not found|cuda|cublas|curand" || true
    local M=$W/qwen25-05b-random-$L
    if [ ! -f "$M/.complete" ]; then
        stamp "building a random Qwen2.5-0.5B-shaped model ($L layers, seed 0, bf16) in $M"
        "$PY" - "$M" "$L" <<'PY' || { echo "model build failed"; return 1; }
import json, os, sys, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from tokenizers import Tokenizer, models, pre_tokenizers
out, layers = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
V = 151936
cfg = Qwen2Config(vocab_size=V, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  bos_token_id=151643, eos_token_id=151643)
model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
model.save_pretrained(out, safe_serialization=True)
# A word-level tokenizer over the whole vocabulary: both benches feed ids, never text.
tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok.save(f"{out}/tokenizer.json")
json.dump({"eos_token": "w151643", "pad_token": "w0"}, open(f"{out}/tokenizer_config.json", "w"))
open(f"{out}/.complete", "w").close()
PY
    fi
    local B=${GPU_BATCH:-1,64,256} PL=${GPU_PROMPT:-128} N=${GPU_NEW:-256} RP=${REPEATS:-3}
    run_popo decode-popo "$D" bf16 "$M" $(decode_args "$B" "$PL" "$N") --repeats "$RP"
    run_torch decode-torch "$D" bf16 "$M" $(decode_args "$B" "$PL" "$N") --repeats "$RP"
    run_popo hostsampling-decode "$D" bf16 "$M" $(decode_args "$B" "$PL" "$N") --repeats "$RP" --host-sampling
    local G=${GROUP:-8} shapes=()
    if [ "$G" -gt 1 ]; then
        local GB=${GPU_GROUP_BATCH:-64,256}
        run_popo rollouts-popo "$D" bf16 "$M" $(decode_args "$GB" "$PL" "$N") --repeats "$RP" --group-size "$G"
        run_torch rollouts-torch "$D" bf16 "$M" $(decode_args "$GB" "$PL" "$N") --repeats "$RP" --group-size "$G"
        shapes+=(rollouts)
    fi
    for s in ${GPU_TRAIN:-16x512 64x320}; do
        run_popo "train-$s-popo" "$D" bf16 "$M" $(train_args "$s") --repeats "$RP"
        run_torch "train-$s-torch" "$D" bf16 "$M" $(train_args "$s") --repeats "$RP"
        shapes+=("train-$s")
    done
    table "GPU: Qwen2.5-0.5B-shaped (random, bf16), popo vs HF generate / PyTorch eager" decode "${shapes[@]}"
    sampling_table decode-popo hostsampling-decode
}

cpu() {
    local M=${SMOLLM2:-$HOME/.cache/popo/smollm2-135m-instruct}
    if [ ! -f "$M/config.json" ]; then
        echo "CPU variant skipped: no SmolLM2 at $M (tools/get-smollm2.sh makes it)"
        return 0
    fi
    stamp "CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
    local B=${CPU_BATCH:-1,32} PL=${CPU_PROMPT:-128} N=${CPU_NEW:-64} T=${CPU_TRAIN:-8x256} RP=${CPU_REPEATS:-1}
    local tb=${T%x*} tl=${T#*x}
    local args="--batch $B --prompt-len $PL --new-tokens $N --train-batch $tb --train-len $tl --micro-batch $MICRO --repeats $RP"
    local G=${GROUP:-8} GB=${CPU_GROUP_BATCH:-32}
    for i in $(seq 1 "${PAIRS:-3}"); do
        # shellcheck disable=SC2086
        run_popo "cpu-popo$i" cpu f32 "$M" $args
        # shellcheck disable=SC2086
        run_torch "cpu-torch$i" cpu f32 "$M" $args
        if [ "$G" -gt 1 ]; then
            # shellcheck disable=SC2046
            run_popo "rollouts-popo$i" cpu f32 "$M" $(decode_args "$GB" "$PL" "$N") --repeats "$RP" --group-size "$G"
            # shellcheck disable=SC2046
            run_torch "rollouts-torch$i" cpu f32 "$M" $(decode_args "$GB" "$PL" "$N") --repeats "$RP" --group-size "$G"
        fi
        stamp "load $(cut -d' ' -f1-3 /proc/loadavg)"
    done
    table "CPU: SmolLM2-135M-Instruct, f32, popo vs HF generate / PyTorch CPU ($T training)" cpu rollouts
}

case $MODE in
    gpu) gpu ;;
    cpu) cpu ;;
    all) gpu; cpu ;;
    *) echo "usage: $0 [gpu|cpu|all]"; exit 2 ;;
esac
stamp "done; tables in $OUT/compare.md"
