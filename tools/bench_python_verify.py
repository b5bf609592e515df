#!/usr/bin/env python3
"""Python speed of popo_verify against math-verify on the 2,000 MATH500 benchmark pairs.

Driven by scripts/bench-python.sh (which builds the wheel and installs it with math-verify in a
venv). Everything runs in this one process: `popo_verify.verify` in a loop on this thread,
math-verify's `parse` + `verify` in a loop on this thread (its default timeouts, as
tools/compare_math_verify.py calls it), and `popo_verify.verify_batch` on every core and on one.
Each loop is timed over all 2,000 pairs; the best of several passes is reported (the first
math-verify pass also, since its caches warm up), with the import times apart.

  python tools/bench_python_verify.py --data ../shared/data [--repeat 5] [--mv-repeat 3]
"""
import argparse
import json
import os
import platform
import sys
import time

from compare_math_verify import gold_text  # the same gold form the CLI comparison gives math-verify


def best_of(n, fn):
    """(best seconds, first seconds, last result) over n runs of fn()."""
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), times[0], out


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--repeat", type=int, default=5, help="passes of each popo_verify loop")
    ap.add_argument("--mv-repeat", type=int, default=3, help="passes of the math-verify loop")
    args = ap.parse_args()

    with open(os.path.join(args.data, "math500.jsonl"), encoding="utf-8") as f:
        golds = [json.loads(line)["answer"] for line in f if line.strip()]

    t = time.perf_counter()
    import popo_verify
    popo_import = time.perf_counter() - t
    pairs = popo_verify.benchmark_pairs(golds)
    gs = [g for g, _ in pairs]
    rs = [r for _, r in pairs]
    n = len(pairs)

    def popo_loop():
        return [popo_verify.verify(g, r).correct for g, r in pairs]

    popo_s, _, popo_ok = best_of(args.repeat, popo_loop)
    batch_all_s, _, batch_ok = best_of(args.repeat, lambda: popo_verify.verify_batch(gs, rs))
    batch_one_s, _, _ = best_of(args.repeat, lambda: popo_verify.verify_batch(gs, rs, 1))
    assert batch_ok == popo_ok

    t = time.perf_counter()
    from math_verify import parse, verify
    mv_import = time.perf_counter() - t

    def mv_loop():
        out = []
        for g, r in pairs:
            try:
                out.append(bool(verify(parse(gold_text(g)), parse(r))))
            except Exception:  # math-verify's own failures count as "incorrect"
                out.append(False)
        return out

    mv_s, mv_first_s, mv_ok = best_of(args.mv_repeat, mv_loop)
    agree = sum(a == b for a, b in zip(popo_ok, mv_ok))

    from importlib.metadata import version

    cores = os.cpu_count()
    print(f"machine: {cpu_name()}, {cores} cores; Python {platform.python_version()}; "
          f"popo-verify {popo_verify.__version__}, math-verify {version('math-verify')}, "
          f"sympy {version('sympy')}")
    print(f"{n} MATH500 benchmark pairs; popo correct {sum(popo_ok)}, math-verify correct {sum(mv_ok)}, "
          f"agreement {agree}/{n}")
    print(f"imports: popo_verify {popo_import * 1e3:.1f} ms, math_verify {mv_import * 1e3:.0f} ms "
          f"(not in the times below)")
    print()
    print("| call (one process) | threads | seconds / 2,000 pairs | pairs/s | vs math-verify |")
    print("|---|---|---|---|---|")
    rows = [
        (f"`math_verify.verify(parse(gold), parse(response))` (best of {args.mv_repeat}; first pass {mv_first_s:.2f} s)", "1", mv_s),
        (f"`popo_verify.verify(gold, response)` in a loop (best of {args.repeat})", "1", popo_s),
        (f"`popo_verify.verify_batch(golds, responses, 1)` (best of {args.repeat})", "1", batch_one_s),
        (f"`popo_verify.verify_batch(golds, responses)` (best of {args.repeat})", f"all ({cores})", batch_all_s),
    ]
    for name, threads, secs in rows:
        print(f"| {name} | {threads} | {secs:.4f} | {n / secs:,.0f} | {mv_s / secs:,.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
