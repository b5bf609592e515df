#!/usr/bin/env python3
"""Side-by-side comparison of `popo verify` with HuggingFace math-verify.

Sub-commands (driven by scripts/compare-math-verify.sh):
  corpus  --data DIR --out FILE      gold self/cross pairs for every benchmark gold
  extra   --input FILE --out FILE    (gold, response) JSONL lines -> pairs in the corpus format
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


# Hand-written traps from the verifier issue (gold, prediction, the right verdict).
TRAPS = [
    ('\\frac{\\sqrt{3}}{2}', 'The answer is $\\boxed{\\dfrac{\\sqrt3}{2}}$', True),
    ('10\\%', '\\boxed{0.1}', True),
    ('\\text{(B)}', 'The correct option is \\boxed{B}.', True),
    ('x^2+7x+10', '\\boxed{(x+5)(x+2)}', True),
    ('\\frac{1}{2}', '\\boxed{\\frac{1}{2}\\text{ inches}}', True),
    ('(-\\infty,-2)\\cup(3,\\infty)', '\\boxed{x<-2 \\text{ or } x>3}', True),
    ('-\\frac{1}{3}', '\\boxed{-0.333}', True),
    ('3\\sqrt{2}', '\\boxed{\\sqrt{18}}', True),
    ('\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}', '\\boxed{\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}}', True),
    ('1,3,5', '\\boxed{1.3}', False),
    ('025', '\\boxed{25}', True),
    ('2,125', '\\boxed{2125}', True),
    ('\\frac{1}{2004!}', '\\boxed{\\frac{1}{2006!}}', False),
    ('2021', '\\boxed{\\pm 2021}', False),
    ('\\left( 1, 2 \\right)', '\\boxed{(1,2)}', True),
    ('27.0', '\\boxed{27}', True),
    ('y=2x+1', '\\boxed{2x+1=y}', True),
    ('1011_2', '\\boxed{1011_2}', True),
    ('3.83 \\times 10^{35}', '\\boxed{3.83e35}', True),
    ('7,425,000', '\\boxed{7 425 000}', True),
    ('\\text{Monday}', '\\boxed{\\text{monday}}', True),
    ('6', '\\boxed{A, B, C, D}', False),
    ('2\\frac{1}{2}', '\\boxed{2.5}', True),
    ('\\frac{4}{8}', '\\boxed{\\frac{1}{2}}', True),
    ('90^\\circ', '\\boxed{90}', True),
]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def corpus(args):
    out = []
    for name in BENCHMARKS:
        rows = read_jsonl(f"{args.data}/{name}")
        golds = [str(r["answer"]) for r in rows]
        # Reference solutions that box their answer are realistic responses: each against its
        # own gold and against the next problem's gold.
        sols = [str(r.get("solution", "")) for r in rows]
        for i, (g, sol) in enumerate(zip(golds, sols)):
            if "\\boxed" in sol:
                out.append({"set": name, "kind": "solution", "gold": g, "pred": sol})
                out.append({"set": name, "kind": "solution-cross",
                            "gold": golds[(i + 1) % len(golds)], "pred": sol})
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
    for g, pred, right in TRAPS:
        out.append({"set": "traps", "kind": "trap", "gold": g, "pred": pred, "right": right})
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


def extra(args):
    """Pairs from elsewhere (e.g. real model responses): lines with `gold` (or `answer`) and
    `response` (or `pred`), kept in order."""
    out = []
    for i, r in enumerate(read_jsonl(args.input)):
        gold = r.get("gold", r.get("answer"))
        pred = r.get("response", r.get("pred"))
        if not isinstance(gold, str) or not isinstance(pred, str):
            sys.exit(f"{args.input}:{i + 1}: needs string fields gold (or answer) and response (or pred)")
        row = {"set": r.get("set", "extra"), "kind": "extra", "gold": gold, "pred": pred}
        if "id" in r:
            row["id"] = r["id"]
        out.append(row)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in out:
            f.write(json.dumps(r) + "\n")
    print(f"{len(out)} extra pairs from {args.input}", file=sys.stderr)


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
    traps = [(r, p, m) for r, p, m in zip(rows, popo, mv) if "right" in r]
    if traps:
        pr = sum(p["correct"] == r["right"] for r, p, _ in traps)
        mr = sum(m["correct"] == r["right"] for r, _, m in traps)
        print(f"traps right: popo {pr}/{len(traps)}, math-verify {mr}/{len(traps)}")
    print("disagreements (gold | prediction | popo | math-verify | popo's reading | math-verify's reading):")
    for r, p, m in zip(rows, popo, mv):
        if p["correct"] != m["correct"]:
            pred = r["pred"]
            # The end of the response is where the answer is; a box, from its start.
            pred = pred[pred.rfind("\\boxed{"):][:90] if "\\boxed{" in pred else pred[-90:]
            print(f"  {r['gold']!r} | {pred!r} | popo={p['correct']} | mv={m['correct']}"
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
    e = sub.add_parser("extra")
    e.add_argument("--input", required=True)
    e.add_argument("--out", required=True)
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
    {"corpus": corpus, "extra": extra, "run": run, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
