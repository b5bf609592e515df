"""Writes a reasoning-gym task as popo training data: DIR/train.jsonl, DIR/test.jsonl and
DIR/settings.json (the exact generator settings, seeds, sizes and what was dropped).

    python tools/make_reasoning_gym_data.py chain_sum --out DIR \
        --set min_terms=2 --set max_terms=3 --set min_digits=1 --set max_digits=2

reasoning-gym draws item i of a dataset from the seed `seed + i`, so two sets made from nearby
seeds share most of their items. The test set is drawn from `--test-seed` and the training set
from `--train-seed` (10^6 apart by default, far beyond any set size), and every training item
whose question is also a test question is dropped, as are repeats inside each set: small task
spaces repeat problems even from distant seeds.

Each line holds `problem`, `answer` (popo's default field names), `task` and the generator's
`metadata` (JSON-safe: tuples become lists, anything else its string).
"""

import argparse
import json
import pathlib
import sys


def parse_value(text):
    """`3` -> 3, `0.5` -> 0.5, `true` -> True, JSON lists and strings as JSON, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def json_safe(value):
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def draw(rg, task, options, seed, size, exclude):
    """Up to `size` distinct items whose questions are not in `exclude`, from seeds seed.."""
    # Draw more than needed: repeats and excluded questions are dropped afterwards.
    pool = rg.create_dataset(task, seed=seed, size=size * 3, **options)
    items, seen, dropped_repeat, dropped_excluded = [], set(), 0, 0
    for item in pool:
        q = item["question"]
        if q in exclude:
            dropped_excluded += 1
            continue
        if q in seen:
            dropped_repeat += 1
            continue
        seen.add(q)
        items.append(item)
        if len(items) == size:
            break
    return items, {"repeats_dropped": dropped_repeat, "test_questions_dropped": dropped_excluded}


def write_jsonl(path, task, items):
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            row = {
                "problem": item["question"],
                "answer": str(item["answer"]),
                "task": task,
                "metadata": json_safe(item.get("metadata", {})),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", help="a reasoning-gym dataset name, e.g. chain_sum, products, basic_arithmetic")
    ap.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a generator option (repeatable), e.g. --set max_terms=3")
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=300)
    ap.add_argument("--train-seed", type=int, default=1_000_000)
    ap.add_argument("--test-seed", type=int, default=0)
    args = ap.parse_args()

    import reasoning_gym as rg
    from importlib.metadata import version

    options = {}
    for kv in args.set:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            sys.exit(f"--set {kv!r}: expected KEY=VALUE")
        options[key.strip()] = parse_value(value.strip())
    if abs(args.train_seed - args.test_seed) < args.train_size * 3 + args.test_size * 3:
        sys.exit("--train-seed and --test-seed are too close: their seed ranges would overlap")

    test, test_drops = draw(rg, args.task, options, args.test_seed, args.test_size, set())
    test_questions = {item["question"] for item in test}
    train, train_drops = draw(rg, args.task, options, args.train_seed, args.train_size, test_questions)
    if len(test) < args.test_size or len(train) < args.train_size:
        print(f"warning: the task space is small: {len(train)} train and {len(test)} test "
              f"distinct problems (asked {args.train_size} and {args.test_size})", file=sys.stderr)
    assert not test_questions & {item["question"] for item in train}

    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", args.task, train)
    write_jsonl(args.out / "test.jsonl", args.task, test)
    settings = {
        "task": args.task,
        "reasoning_gym_version": version("reasoning-gym"),
        "generator_options": options,
        "train": {"seed": args.train_seed, "size": len(train), **train_drops},
        "test": {"seed": args.test_seed, "size": len(test), **test_drops},
        "command": " ".join(["tools/make-reasoning-gym-data.sh"] + sys.argv[1:]),
    }
    (args.out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    print(f"{args.task}: {len(train)} train, {len(test)} test problems -> {args.out}")


if __name__ == "__main__":
    main()
