#!/usr/bin/env python3
"""Checks that a model trained by popo is a real model: transformers loads the checkpoint, and its
per-token log-probs of real completions equal popo's (`popo score`) within a tolerance.

    tools/.venv/bin/python tools/check_trained_model.py CHECKPOINT RUN/samples.jsonl \
        [--popo target/release/popo] [--popo-model DIR] [--n 16] [--tol 1e-4]

A LoRA run's checkpoint (a PEFT adapter) loads through PEFT over its base. With --popo-model,
popo scores another directory than the one transformers loads: `popo export --merge`'s output
in transformers against the adapter it came from in popo checks the merge.

The completions are the run's own samples (prompt and completion text, as the trainer wrote
them). Prints the largest absolute difference over all completion tokens and exits 1 above the
tolerance.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("samples")
    ap.add_argument("--popo", default="target/release/popo")
    ap.add_argument("--popo-model", help="what popo scores (default: CHECKPOINT)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    ckpt = pathlib.Path(args.checkpoint)
    adapter = ckpt / "adapter_config.json"
    base = json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.exists() else ckpt
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.float32, attn_implementation="eager"
    )
    if adapter.exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ckpt)
    model.eval()

    rows = []
    for line in open(args.samples, encoding="utf-8"):
        s = json.loads(line)
        prompt_ids = tok(s["prompt"], add_special_tokens=False).input_ids
        completion_ids = tok(s["completion"], add_special_tokens=False).input_ids
        if completion_ids:
            rows.append({"prompt_ids": prompt_ids, "completion_ids": completion_ids})
        if len(rows) == args.n:
            break
    if not rows:
        sys.exit(f"{args.samples}: no completions")

    with tempfile.TemporaryDirectory() as tmp:
        inp = pathlib.Path(tmp) / "in.jsonl"
        out = pathlib.Path(tmp) / "out.jsonl"
        inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        subprocess.run(
            [args.popo, "score", "--model", args.popo_model or args.checkpoint, "--input", str(inp), "--output", str(out)],
            check=True,
        )
        popo = [json.loads(line) for line in out.read_text().splitlines()]

    worst, tokens = 0.0, 0
    for r, p in zip(rows, popo):
        ids = torch.tensor([r["prompt_ids"] + r["completion_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        start = len(r["prompt_ids"])
        theirs = [logp[start - 1 + t, c].item() for t, c in enumerate(r["completion_ids"])]
        ours = p["logprobs"]
        assert len(ours) == len(theirs), (len(ours), len(theirs))
        worst = max(worst, max(abs(a - b) for a, b in zip(ours, theirs)))
        tokens += len(ours)
    print(f"{args.checkpoint}: {len(rows)} completions, {tokens} tokens, "
          f"max |popo - transformers| log-prob = {worst:.2e} (tolerance {args.tol:g})")
    sys.exit(0 if worst <= args.tol else 1)


if __name__ == "__main__":
    main()
