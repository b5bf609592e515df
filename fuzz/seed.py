#!/usr/bin/env python3
"""Writes the starting corpora of the fuzz targets into fuzz/corpus/<target>/ from the shared
benchmark data (../shared/data), the verifier's equivalence table and the files of a tiny
training run (fuzz/fixtures/run/, written by `popo train` on the tiny test task).

Seeds are small (AFL++ works best below 1 KB) and few; `scripts/fuzz.sh` replaces a corpus by
the minimised queue of each run. Run from the repository root: `python3 fuzz/seed.py`.
"""

import hashlib
import json
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")
FIXTURES = os.path.join(ROOT, "fuzz", "fixtures")
OUT = os.path.join(ROOT, "fuzz", "corpus")
rng = random.Random(0)


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rows(file, n):
    path = os.path.join(DATA, file)
    if not os.path.exists(path):
        print(f"notice: {path} is missing; no seeds from it", file=sys.stderr)
        return []
    with open(path) as f:
        lines = [l for l in f if l.strip()]
    return [json.loads(l) for l in rng.sample(lines, min(n, len(lines)))]


def answer(row):
    a = row.get("answer")
    return a if isinstance(a, str) else json.dumps(a)


def verify_seeds():
    for file, n in [("math500.jsonl", 60), ("gsm8k_test.jsonl", 15), ("olympiadbench.jsonl", 15),
                    ("minerva_math.jsonl", 15), ("aime24.jsonl", 5), ("amc23.jsonl", 5)]:
        for r in rows(file, n):
            response = (r.get("solution") or "")[-300:] or f"\\boxed{{{answer(r)}}}"
            write("verify", answer(r) + "\x01" + response)
    table = os.path.join(ROOT, "crates", "popo-verify", "tests", "table.txt")
    lines = [l.strip() for l in open(table) if l.strip() and not l.startswith("#")]
    for line in rng.sample(lines, min(150, len(lines))):
        gold, pred, _ = line.split(" @@ ")
        write("verify", gold + "\x01" + f"The answer is $\\boxed{{{pred}}}$.")


def jsonl_seeds():
    for file in ["math500.jsonl", "gsm8k_train.jsonl", "aime25.jsonl"]:
        rs = rows(file, 3)
        write("jsonl", "".join(json.dumps({"problem": r["problem"][:80], "answer": r["answer"]}) + "\n"
                               for r in rs))
        write("jsonl", "".join(json.dumps({"id": r.get("id"), "gold": answer(r), "pred": f"\\boxed{{{answer(r)}}}"}) + "\n"
                               for r in rs))
    write("jsonl", '{"prompt_ids": [1, 2, 3], "completion_ids": [4, 5]}\n{"prompt": "1+1=", "completion": "2"}\n')
    write("jsonl", '{"problem": "x", "answer": 5}\n\n{"problem": "", "answer": "1"}\nnot json\n[1]\n')


def config_seeds():
    write("config", "")
    write("config", "[run]\nsteps = 4\n\x00optim.lr=1e-5\x00algo.alpha=0\x00rollout.group_size=16")
    write("config", 'preset = "grpo"\n[data]\ntemplate = "qwen_math"\n\x00run.dtype=bf16\x00data.shuffle=false')
    write("config", "\x00algo.weight_mode=uniform\x00reward.check_work=true\x00run.device=cpu")
    path = os.path.join(FIXTURES, "run", "config.toml")
    if os.path.exists(path):
        write("config", open(path).read())


def fixture(name):
    path = os.path.join(FIXTURES, "run", name)
    if not os.path.exists(path):
        print(f"notice: {path} is missing; run the tiny task first (see RELIABILITY.md)", file=sys.stderr)
        return None
    return open(path, "rb").read()


def model_seeds():
    cfg = fixture("config.json")
    if cfg:
        write("model_config", cfg)
        c = json.loads(cfg)
        for k, v in [("model_type", "llama"), ("model_type", "qwen3"), ("tie_word_embeddings", True),
                     ("rope_scaling", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
                     ("head_dim", 8), ("num_key_value_heads", 1)]:
            write("model_config", json.dumps(dict(c, **{k: v})))
    for name in ["model.safetensors", "optimizer.safetensors", "algo_state.safetensors"]:
        data = fixture(name)
        if data:
            write("safetensors", data)
    write("safetensors", b"")


def metrics_seeds():
    data = fixture("metrics.jsonl")
    if data:
        lines = data.split(b"\n")
        write("metrics", b"\x03" + b"\n".join(lines[:4]))
        write("metrics", b"\n".join(lines[:3]) + b"\n" + lines[3][:20])  # a torn last line
    write("metrics", b'{"step": 1, "a": 0.5, "b": null}\n{"step": 2, "a": 1e300, "s": "x"}\n{"step": 3, "a":')


def chat_seeds():
    cfg = fixture("tokenizer_config.json")
    if cfg:
        write("chat_template", cfg)
    templates = [
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] | trim + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}"
        "{% endif %}{% endfor %}",
        "{%- if messages[0].role == 'system' %}{%- set sys = messages[0].content %}{%- endif %}"
        "{{ sys | tojson(indent=2) }}{% for m in messages[1:] %}{{ m.content.strip().split(' ')|join(',') }}"
        "{% if loop.last %}{{ raise_exception('end') }}{% endif %}{% endfor %}",
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{{ m | items | list }}"
        "{{ m.content.startswith('W') }}{% endfor %}{{ ns.n }}{{ range(3) | map('string') | join }}",
    ]
    for t in templates:
        write("chat_template", t)
        write("chat_template", json.dumps({"chat_template": t, "eos_token": "<|endoftext|>", "bos_token": None}))
    write("chat_template", json.dumps({"chat_template": [{"name": "default", "template": templates[0]}]}))


if __name__ == "__main__":
    verify_seeds()
    jsonl_seeds()
    config_seeds()
    model_seeds()
    metrics_seeds()
    chat_seeds()
    for t in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, t))
        size = sum(os.path.getsize(os.path.join(OUT, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")
