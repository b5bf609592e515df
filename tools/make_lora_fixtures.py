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

With --base MODEL --out DIR [--r R --alpha A] it makes the same kind of fixture for
another model, outside the repo (the SmolLM2 LoRA check, tools/check-lora-smollm2.sh):
the adapter's base_model_name_or_path is then the absolute base directory, and the
sequences are a few lines of real text in its tokenizer.

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


def make_fixtures(base_dir=BASE, out=OUT, r=4, alpha=8, seqs=None, scale=0.1):
    torch.manual_seed(29)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
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
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "peft", safe_serialization=True)
    # No machine's path in a committed file: the base as a path relative to the adapter,
    # which popo resolves from the adapter's directory.
    cpath = out / "peft" / "adapter_config.json"
    acfg = json.loads(cpath.read_text())
    acfg["base_model_name_or_path"] = "../../qwen2" if out == OUT else str(Path(base_dir).resolve())
    cpath.write_text(json.dumps(acfg, indent=2, sort_keys=True) + "\n")
    (out / "peft" / "README.md").unlink(missing_ok=True)
    if seqs is None:
        seqs = [s["input_ids"] for s in json.loads((BASE / "expected.json").read_text())["singles"]]
    adapted = [token_logprobs(model, ids) for ids in seqs]
    with model.disable_adapter():
        base_lp = [token_logprobs(model, ids) for ids in seqs]
    merged = model.merge_and_unload()
    merged_lp = [token_logprobs(merged, ids) for ids in seqs]
    sd = {k: v.contiguous() for k, v in merged.state_dict().items() if any(m in k for m in MODULES)}
    save_file(sd, out / "merged.safetensors")
    expected = {
        "generator": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "base": "qwen2" if out == OUT else str(Path(base_dir).resolve()),
        "r": r,
        "lora_alpha": alpha,
        "sequences": [
            {"input_ids": ids, "adapted": a, "merged": m, "base": b}
            for ids, a, m, b in zip(seqs, adapted, merged_lp, base_lp)
        ],
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {out}")


TEXTS = [
    "Question: What is 17 + 25 - 8? Answer: 17 + 25 = 42, and 42 - 8 = 34. The answer is 34.",
    "Solve for x: 3x + 5 = 20. Subtract 5 from both sides: 3x = 15, so x = 5.",
    "The area of a circle of radius 2 is \\pi r^2 = 4\\pi, about 12.57 square units.",
]


def text_sequences(base_dir):
    """Real text in the base's own tokenizer: what a model scores in training."""
    tok = transformers.AutoTokenizer.from_pretrained(base_dir)
    return [tok(t, add_special_tokens=False).input_ids for t in TEXTS]


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
    ap.add_argument("--out", help="with --base: where the fixture goes (outside the repo)")
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=int, default=32)
    a = ap.parse_args()
    if a.check_adapter:
        sys.exit(0 if check_adapter(a.check_adapter, a.scores, a.base, a.tol) else 1)
    if a.base:
        if not a.out:
            sys.exit("--base needs --out")
        # Smaller values than the tiny fixture's: a 30-layer model with r = 16 on every
        # projection would otherwise drift to log-probs no real adapter gives.
        make_fixtures(Path(a.base), Path(a.out), a.r, a.alpha, text_sequences(a.base), 0.02)
    else:
        make_fixtures()
