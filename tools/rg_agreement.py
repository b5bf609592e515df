"""popo's verifier against a reasoning-gym task's own scorer, on real completions.

    tools/.venv-rg/bin/python tools/rg_agreement.py EVAL_OUT/samples.jsonl DATA/test.jsonl

EVAL_OUT is a `popo eval` output directory run on DATA/test.jsonl (same problem order). Each
sample's completion was judged by popo (`correct`, from the verifier's own answer extraction);
here the task's `score_answer` judges (a) the answer popo extracted, which compares the two
equivalence checks on the same string, and (b) the answer reasoning-gym's own extractor finds
(`<answer>` tags), which shows how the task scores a model that does not write them. Prints the
counts and every disagreement of (a); exits 0.
"""

import json
import sys


def main(samples_path, data_path):
    import reasoning_gym as rg
    from reasoning_gym.utils import extract_answer

    rows = [json.loads(line) for line in open(data_path, encoding="utf-8")]
    samples = [json.loads(line) for line in open(samples_path, encoding="utf-8")]
    scorers = {}
    n = agree = rg_tag_found = 0
    disagreements = []
    for s in samples:
        row = rows[s["problem_index"]]
        if row["answer"] != s["gold"]:
            sys.exit(f"{samples_path}: problem {s['problem_index']} does not match {data_path}")
        task = row.get("task") or row["metadata"]["source_dataset"]
        if task not in scorers:
            scorers[task] = rg.get_score_answer_fn(task)
        entry = {"question": row["problem"], "answer": row["answer"], "metadata": row["metadata"]}
        theirs = scorers[task](s["extracted"], entry) >= 1.0 if s["extracted"] is not None else False
        rg_tag_found += extract_answer(s["completion"]) is not None
        n += 1
        if theirs == s["correct"]:
            agree += 1
        else:
            disagreements.append((s, theirs))
    print(f"{n} completions: popo and reasoning-gym's score_answer agree on {agree} "
          f"({100.0 * agree / max(n, 1):.2f}%), {len(disagreements)} disagreements")
    print(f"reasoning-gym's own <answer> extraction finds an answer in {rg_tag_found} of {n}")
    for s, theirs in disagreements:
        print(json.dumps({"problem_index": s["problem_index"], "sample_index": s["sample_index"],
                          "gold": s["gold"], "extracted": s["extracted"], "popo": s["correct"],
                          "reasoning_gym": theirs, "completion_tail": s["completion"][-160:]},
                         ensure_ascii=False))


if __name__ == "__main__":
    main(*sys.argv[1:3])
