"""transformers' greedy decoding of GSM8K test problems, to set beside `popo eval --greedy --n 0`.

    tools/.venv/bin/python tools/smollm2_gsm8k.py MODEL_DIR ../shared/data/gsm8k_test.jsonl \
        --limit 100 --max-new-tokens 400 --out hf.jsonl

Prompts are rendered as popo's `--template qwen_math` renders them: the tokenizer's chat template
with Qwen's math system prompt and the generation prompt. Each output line has the problem index,
the gold answer, the prompt ids, the new token ids (up to and including EOS) and the decoded text,
so `popo verify --input` can score them with the same verifier as popo's own samples.
"""

import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("bench")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    rows = [json.loads(l) for l in open(a.bench)][: a.limit]
    # Resumable: problems already in --out are kept and skipped.
    kept = []
    if os.path.exists(a.out):
        for line in open(a.out):
            try:
                kept.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut short by a kill
        with open(a.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
    done = {r["problem_index"] for r in kept}
    start = time.time()
    new_tokens = 0
    with open(a.out, "a") as out, torch.no_grad():
        for i, row in enumerate(rows):
            if i in done:
                continue
            msgs = [{"role": "system", "content": QWEN_MATH_SYSTEM},
                    {"role": "user", "content": row["problem"]}]
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False).input_ids
            # One problem at a time: no padding, so nothing but the model decides the tokens.
            gen = model.generate(torch.tensor([ids]), max_new_tokens=a.max_new_tokens,
                                 do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.eos_token_id)
            new = gen[0, len(ids):].tolist()
            new_tokens += len(new)
            out.write(json.dumps({"problem_index": i, "gold": row["answer"], "prompt_ids": ids,
                                  "token_ids": new,
                                  "response": tok.decode(new, skip_special_tokens=True)}) + "\n")
            out.flush()
    wall = time.time() - start
    print(f"{len(rows) - len(done)} problems, {new_tokens} new tokens, {wall:.1f} s, "
          f"{new_tokens / wall:.1f} tok/s (transformers {__import__('transformers').__version__}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
