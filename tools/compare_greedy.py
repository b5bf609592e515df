"""popo's greedy GSM8K samples beside transformers' greedy decoding, problem by problem.

    popo eval --model M --bench gsm8k_test --greedy --n 0 --limit 100 --max-new-tokens 400 --out P
    tools/.venv/bin/python tools/smollm2_gsm8k.py M ../shared/data/gsm8k_test.jsonl \
        --limit 100 --max-new-tokens 400 --out hf.jsonl
    python3 tools/compare_greedy.py P/samples.jsonl hf.jsonl --popo target/release/popo

Both sides are scored by the same verifier (`popo verify --input` on transformers' texts), so a
difference in score can only come from a difference in the generated text. Prints the two
scores, the problems whose verdicts differ, and how many completions are identical.
"""

import argparse
import json
import subprocess
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("popo_samples")
    ap.add_argument("hf")
    ap.add_argument("--popo", default="target/release/popo", help="the popo binary")
    a = ap.parse_args()

    popo = {}
    for line in open(a.popo_samples):
        s = json.loads(line)
        popo[s["problem_index"]] = s
    hf = {}
    for line in open(a.hf):
        h = json.loads(line)
        hf[h["problem_index"]] = h
    common = sorted(set(popo) & set(hf))

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i in common:
            f.write(json.dumps({"gold": hf[i]["gold"], "response": hf[i]["response"]}) + "\n")
        pairs = f.name
    out = subprocess.run(
        [a.popo, "verify", "--input", pairs, "--threads", "1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    hf_correct = [json.loads(l)["correct"] for l in out.splitlines() if l.strip()]
    assert len(hf_correct) == len(common), (len(hf_correct), len(common))

    same_text = 0
    differ = []
    for i, hc in zip(common, hf_correct):
        p = popo[i]
        if p["completion"].strip() == hf[i]["response"].strip():
            same_text += 1
        if bool(p["correct"]) != bool(hc):
            differ.append((i, p["correct"], hc))
    n = len(common)
    print(f"problems compared: {n}")
    print(f"popo greedy correct:         {sum(bool(popo[i]['correct']) for i in common)}")
    print(f"transformers greedy correct: {sum(hf_correct)}")
    print(f"verdicts that differ: {len(differ)}")
    for i, pc, hc in differ:
        print(f"  problem {i}: popo {pc}, transformers {hc}")
    print(f"identical completions: {same_text} of {n}")
    for i in common:
        a_, b_ = popo[i]["completion"].strip(), hf[i]["response"].strip()
        if a_ != b_:
            k = next((j for j, (x, y) in enumerate(zip(a_, b_)) if x != y), min(len(a_), len(b_)))
            print(f"  problem {i}: texts part at character {k}: popo {a_[k:k+40]!r} vs transformers {b_[k:k+40]!r}")


if __name__ == "__main__":
    main()
