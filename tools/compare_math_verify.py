#!/usr/bin/env python3
"""Side-by-side comparison of `popo verify` with HuggingFace math-verify.

Sub-commands (driven by scripts/compare-math-verify.sh):
  corpus  --data DIR --out FILE      gold self/cross pairs for every benchmark gold
  run     --input FILE --out FILE    math-verify verdicts, one JSON line per input line
  report  --input FILE --popo FILE --mv FILE [--popo-secs S --mv-secs S --pairs N]
"""
import argparse
import json
import re
import sys

BENCHMARKS = [
    "math500.jsonl",
    "aime24.jsonl",
    "aime25.jsonl",
    "amc23.jsonl",
    "minerva_math.jsonl",
    "olympiadbench.jsonl",
    "gsm8k_test.jsonl",
]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def corpus(args):
    out = []
    for name in BENCHMARKS:
        golds = [str(r["answer"]) for r in read_jsonl(f"{args.data}/{name}")]
        distinct = list(dict.fromkeys(golds))
        for i, g in enumerate(golds):
            out.append({"set": name, "kind": "self", "gold": g,
                        "pred": f"After simplifying, the answer is $\\boxed{{{g}}}$."})
            other = distinct[(distinct.index(g) + 1) % len(distinct)]
            out.append({"set": name, "kind": "cross", "gold": g,
                        "pred": f"After simplifying, the answer is $\\boxed{{{other}}}$."})
            for r in near_misses(g):
                out.append({"set": name, "kind": "near-miss", "gold": g,
                            "pred": f"Therefore the answer is $\\boxed{{{r}}}$."})
            for r in rewrites(g):
                out.append({"set": name, "kind": "rewrite", "gold": g,
                            "pred": f"So we get $\\boxed{{{r}}}$."})
    with open(args.out, "w", encoding="utf-8") as f:
        for r in out:
            f.write(json.dumps(r) + "\n")
    print(f"{len(out)} gold pairs from {len(BENCHMARKS)} benchmarks", file=sys.stderr)


def rewrites(g):
    """Equivalent forms a model commonly writes instead of the gold."""
    out = []
    if "\\dfrac" in g:
        out.append(g.replace("\\dfrac", "\\frac"))
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", g)
    if m:
        out.append(f"{m.group(1)}{m.group(2)}/{m.group(3)}")
    if re.fullmatch(r"-?\d+", g):
        out.append(f"{int(g)}.0")
        if abs(int(g)) >= 1000:
            out.append(f"{int(g):,}")
    if g.startswith("(") and g.endswith(")") and "$" not in g:
        out.append(f"\\left({g[1:-1]}\\right)")
    return out


def near_misses(g):
    """Wrong answers close to the gold: the traps for a lenient grader."""
    out = []
    if re.fullmatch(r"-?\d+", g):
        out.append(str(int(g) + 1))
        out.append(f"\\pm {g}")
    m = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", g)
    if m:
        out.append(f"{m.group(1)}\\frac{{{int(m.group(2)) + 1}}}{{{m.group(3)}}}")
    return out


def gold_text(g):
    # A bare gold is LaTeX without delimiters; give math-verify its usual boxed form.
    if "$" in g or "\\boxed" in g:
        return g
    return f"\\boxed{{{g}}}"


def run(args):
    from math_verify import parse, verify  # imported here: its import time counts

    rows = read_jsonl(args.input)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            try:
                gold = parse(gold_text(r["gold"]))
                pred = parse(r["pred"])
                ok = bool(verify(gold, pred))
                res = {"correct": ok, "gold_parsed": [str(x) for x in gold][:2],
                       "pred_parsed": [str(x) for x in pred][:2]}
            except Exception as e:  # math-verify's own failures count as "incorrect"
                res = {"correct": False, "error": repr(e)[:200]}
            f.write(json.dumps(res) + "\n")


def report(args):
    rows = read_jsonl(args.input)
    popo = read_jsonl(args.popo)
    mv = read_jsonl(args.mv)
    assert len(rows) == len(popo) == len(mv), (len(rows), len(popo), len(mv))
    agree = sum(p["correct"] == m["correct"] for p, m in zip(popo, mv))
    n = len(rows)
    print(f"agreement: {agree}/{n} = {100.0 * agree / n:.2f}%")
    by_set = {}
    for r, p, m in zip(rows, popo, mv):
        key = r.get("set", "math500-bench")
        a, t = by_set.get(key, (0, 0))
        by_set[key] = (a + (p["correct"] == m["correct"]), t + 1)
    for k, (a, t) in sorted(by_set.items()):
        print(f"  {k:28s} {a}/{t} = {100.0 * a / t:.2f}%")
    print("disagreements (gold | prediction | popo | math-verify | popo's reading | math-verify's reading):")
    for r, p, m in zip(rows, popo, mv):
        if p["correct"] != m["correct"]:
            pred = r["pred"]
            if "\\boxed{" in pred:
                pred = pred[pred.rfind("\\boxed{"):]
            print(f"  {r['gold']!r} | {pred[:90]!r} | popo={p['correct']} | mv={m['correct']}"
                  f" | {p.get('gold_answer')} ~ {p.get('pred_answer')}"
                  f" | {m.get('gold_parsed')} ~ {m.get('pred_parsed')} {m.get('error', '')}")
    if args.popo_secs and args.mv_secs and args.pairs:
        ps = args.pairs / args.popo_secs
        ms = args.pairs / args.mv_secs
        print(f"speed on {args.pairs} benchmark pairs, one thread, whole process: "
              f"popo {ps:.0f} pairs/s ({args.popo_secs:.3f} s), "
              f"math-verify {ms:.1f} pairs/s ({args.mv_secs:.2f} s), ratio {ps / ms:.0f}x")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("--data", required=True)
    c.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--input", required=True)
    r.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("--input", required=True)
    p.add_argument("--popo", required=True)
    p.add_argument("--mv", required=True)
    p.add_argument("--popo-secs", type=float)
    p.add_argument("--mv-secs", type=float)
    p.add_argument("--pairs", type=int)
    args = ap.parse_args()
    {"corpus": corpus, "run": run, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
