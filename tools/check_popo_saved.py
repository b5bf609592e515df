#!/usr/bin/env python3
"""Checks that transformers loads checkpoints written by popo's save_pretrained.

    POPO_PARITY_SAVE_DIR=/tmp/popo-saved cargo test -p popo-model --test parity save_pretrained
    tools/.venv/bin/python tools/check_popo_saved.py /tmp/popo-saved

For each saved model (qwen2, qwen3, llama3, qwen2-sharded) it loads the model and tokenizer with
transformers, recomputes the log-probs of the parity sequences and the chat-template renderings, and
compares them with the fixture's expected.json. Exits non-zero on a mismatch.
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

FIXTURES = Path(__file__).resolve().parent.parent / "crates" / "popo-model" / "tests" / "fixtures"


def main(root):
    ok = True
    for saved in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        name = saved.name.removesuffix("-sharded")
        exp = json.loads((FIXTURES / name / "expected.json").read_text())
        model, info = AutoModelForCausalLM.from_pretrained(
            str(saved), dtype=torch.float32, attn_implementation="eager", output_loading_info=True
        )
        model.eval()
        # Any missing/unexpected/mismatched tensor means transformers silently re-initialised something.
        bad_keys = {k: v for k, v in info.items() if v}
        worst = 0.0
        with torch.no_grad():
            for s in exp["singles"]:
                ids = torch.tensor([s["input_ids"]])
                lp = torch.log_softmax(model(input_ids=ids).logits.double(), dim=-1)[0, :-1]
                got = lp.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
                want = torch.tensor(s["by_temperature"][0]["logprobs"][1:], dtype=torch.float64)
                worst = max(worst, float((got - want).abs().max()))
        tok = AutoTokenizer.from_pretrained(str(saved))
        chats_ok = all(
            tok.apply_chat_template(c["messages"], tokenize=False, add_generation_prompt=c["add_generation_prompt"])
            == c["text"]
            for c in exp["chat"]
        )
        good = worst <= 1e-4 and chats_ok and not bad_keys
        ok &= good
        print(f"{saved.name:14s} logprobs max abs diff {worst:.2e}  chat templates {'ok' if chats_ok else 'MISMATCH'}  "
              f"{'PASS' if good else 'FAIL'} {bad_keys or ''}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
