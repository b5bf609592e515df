#!/usr/bin/env python3
"""Builds the LoRA fixtures in crates/popo-model/tests/fixtures/lora/ with PEFT.

On the tiny Qwen2 parity fixture (crates/popo-model/tests/fixtures/qwen2, made by
make_fixtures.py), PEFT makes a LoRA on all seven projections, its A and B set to
seeded random values (B non-zero, so the adapter changes the outputs), and saves it
as PEFT does (peft/adapter_model.safetensors, peft/adapter_config.json).
expected.json records, in f32, the per-token log-probs of the parity sequences
under PEFT's adapted model and under merge_and_unload()'s merged model;
merged.safetensors holds the merged projection weights. The Rust tests in
crates/popo-model/tests/lora.rs must reproduce them.

With --check-adapter DIR --scores FILE it instead checks that PEFT, loading the
adapter popo wrote in DIR over its base, gives the log-probs that `popo score`
wrote to FILE (JSONL with `input_ids` and `logprobs`), within --tol.

Run:  tools/setup-venv.sh && tools/.venv/bin/python tools/make_lora_fixtures.py
"""

import argparse
import json
import sys
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "crates" / "popo-model" / "tests" / "fixtures"
BASE = FIX / "qwen2"
OUT = FIX / "lora"
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def token_logprobs(model, ids):
    """log p(ids[i] | ids[:i]) for i >= 1, 0.0 at position 0 (popo's layout)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return [0.0] + [lp[i - 1, ids[i]].item() for i in range(1, len(ids))]


def make_fixtures():
    torch.manual_seed(29)
    base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.05,
        target_modules=MODULES,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, cfg)
    gen = torch.Generator().manual_seed(29)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT / "peft", safe_serialization=True)
    # No machine's path in a committed file: the base as a path relative to the adapter,
    # which popo resolves from the adapter's directory.
    cpath = OUT / "peft" / "adapter_config.json"
    acfg = json.loads(cpath.read_text())
    acfg["base_model_name_or_path"] = "../../qwen2"
    cpath.write_text(json.dumps(acfg, indent=2, sort_keys=True) + "\n")
    (OUT / "peft" / "README.md").unlink(missing_ok=True)
    seqs = [s["input_ids"] for s in json.loads((BASE / "expected.json").read_text())["singles"]]
    adapted = [token_logprobs(model, ids) for ids in seqs]
    with model.disable_adapter():
        base_lp = [token_logprobs(model, ids) for ids in seqs]
    merged = model.merge_and_unload()
    merged_lp = [token_logprobs(merged, ids) for ids in seqs]
    sd = {k: v.contiguous() for k, v in merged.state_dict().items() if any(m in k for m in MODULES)}
    save_file(sd, OUT / "merged.safetensors")
    expected = {
        "generator": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "base": "qwen2",
        "r": 4,
        "lora_alpha": 8,
        "sequences": [
            {"input_ids": ids, "adapted": a, "merged": m, "base": b}
            for ids, a, m, b in zip(seqs, adapted, merged_lp, base_lp)
        ],
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT}")


def check_adapter(adapter_dir, scores, base, tol):
    """PEFT loads popo's adapter; its log-probs must equal popo score's."""
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    base = base or cfg["base_model_name_or_path"]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    worst, n = 0.0, 0
    for line in Path(scores).read_text().splitlines():
        row = json.loads(line)
        ids, want = row["input_ids"], row["logprobs"]
        got = token_logprobs(model, ids)
        # popo score may report only the scored tail; compare aligned from the end.
        for g, w in zip(got[::-1], want[::-1]):
            worst = max(worst, abs(g - w))
            n += 1
    print(f"PEFT vs popo: {n} log-probs, max |diff| = {worst:.3g} (tolerance {tol})")
    return worst <= tol


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-adapter")
    ap.add_argument("--scores")
    ap.add_argument("--base")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    if a.check_adapter:
        sys.exit(0 if check_adapter(a.check_adapter, a.scores, a.base, a.tol) else 1)
    make_fixtures()
