#!/usr/bin/env bash
# LoRA on a real model against PEFT, both ways, and the merge: SmolLM2-135M-Instruct, r = 16 on
# every projection (alpha 32), f32, CPU.
#
#   tools/check-lora-smollm2.sh
#
# 1. PEFT makes an adapter over SmolLM2 (seeded values, B non-zero) and records its log-probs,
#    merge_and_unload()'s log-probs and merged weights; popo loads that adapter and must give the
#    same (the ignored SmolLM2 tests of crates/popo-model/tests/lora.rs, tolerance 1e-4).
# 2. popo trains its own adapter: POPO on the chain_sum recipe for 3 steps at lr 2e-3 (large, so
#    that the adapter moves well away from B = 0, which would pass every check). PEFT loads the
#    checkpoint popo wrote and must score the run's completions as `popo score` does; the
#    model `popo export --merge` writes, loaded by transformers, must score them as popo scores
#    the adapter (tools/check_trained_model.py, tolerance 1e-4).
#
# The model, the data and everything made here stay outside the repo (POPO_CACHE, a temp dir).
# Takes about 10 minutes on 2 cores after the model and the venv are in place.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${POPO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/popo}"
model="$(tools/get-smollm2.sh | tail -n1)"
tools/setup-venv.sh >/dev/null
py=tools/.venv/bin/python
data="$cache/data/chain_sum"
if [ ! -f "$data/train.jsonl" ]; then
    tools/make-reasoning-gym-data.sh chain_sum --out "$data" \
        --set min_terms=2 --set max_terms=3 --set min_digits=1 --set max_digits=2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== 1. popo loads PEFT's adapter"
"$py" tools/make_lora_fixtures.py --base "$model" --out "$work/fixture" --r 16 --alpha 32
POPO_SMOLLM2_LORA="$work/fixture" cargo test --release -p popo-model --test lora -- --ignored

echo "== 2. PEFT and transformers load what popo trained"
cargo build --release -p popo
popo="${CARGO_TARGET_DIR:-target}/release/popo"
"$popo" train --config recipes/smollm2-chain-sum.toml --model "$model" \
    --data "$data/train.jsonl" --eval-data "$data/test.jsonl" --steps 3 --out "$work/run" \
    --set model.lora.r=16 --set model.lora.alpha=32 --set optim.lr=2e-3 \
    --set optim.warmup_ratio=0 --set run.save_every=3 --set run.eval_size=8 \
    --set run.final_pass_at_k_samples=0 --set run.probe_every=0 --set run.tensorboard=false
ckpt="$work/run/checkpoints/step-000003"
# A trained adapter, not the initial one (B = 0 would make every check trivially pass).
"$py" - "$ckpt" <<'EOF'
import sys
from safetensors.torch import load_file
w = load_file(f"{sys.argv[1]}/adapter_model.safetensors")
b = max(t.abs().max().item() for k, t in w.items() if "lora_B" in k)
print(f"{len(w)} adapter tensors, max |B| = {b:.3g}")
sys.exit(0 if b > 0 else "the adapter did not train: every lora_B is zero")
EOF
"$py" tools/check_trained_model.py "$ckpt" "$work/run/samples.jsonl" --popo "$popo"
# The same completions under the base model must score differently: the adapter matters.
echo "the base model without the adapter (this check must fail, by far more than 1e-3):"
if "$py" tools/check_trained_model.py "$ckpt" "$work/run/samples.jsonl" --popo "$popo" \
    --popo-model "$model" --tol 1e-3; then
    echo "the trained adapter scores as the base model does" >&2
    exit 1
fi
"$popo" export --merge "$ckpt" --out "$work/merged"
"$py" tools/check_trained_model.py "$work/merged" "$work/run/samples.jsonl" --popo "$popo" \
    --popo-model "$ckpt"
echo "LoRA on SmolLM2: all checks passed"
