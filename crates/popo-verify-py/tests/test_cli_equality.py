"""The wheel gives the same results as the `popo verify` CLI on every one of the 2,000 MATH500
benchmark pairs (the pairs `popo verify --bench` builds).

Needs the shared data (skipped without it) and the CLI: POPO_BIN, which scripts/test-python.sh
sets (skipped when unset, so that a bare `pytest` on an installed wheel still runs the rest).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

import popo_verify
from conftest import data_dir


@pytest.fixture(scope="module")
def popo_bin():
    path = os.environ.get("POPO_BIN")
    if not path:
        pytest.skip("POPO_BIN is not set: scripts/test-python.sh sets it to the `popo` CLI")
    assert Path(path).is_file(), f"POPO_BIN={path} does not exist"
    return path


@pytest.fixture(scope="module")
def cli_results(popo_bin, math500_golds, tmp_path_factory):
    """The benchmark pairs as the CLI writes them, and the CLI's verdict line for each."""
    work = tmp_path_factory.mktemp("cli")
    pairs_file = work / "bench.jsonl"
    subprocess.run(
        [popo_bin, "verify", "--bench", "--threads", "1", "--repeat", "1",
         "--data-dir", str(data_dir()), "--write-pairs", str(pairs_file)],
        check=True, capture_output=True,
    )
    out = subprocess.run(
        [popo_bin, "verify", "--input", str(pairs_file), "--threads", "1"],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [(r["gold"], r["pred"]) for r in rows], rows


def test_benchmark_pairs_are_the_clis(cli_results, math500_golds):
    pairs, _ = cli_results
    assert len(pairs) == 2000
    assert popo_verify.benchmark_pairs(math500_golds) == pairs


def test_python_equals_the_cli_on_every_benchmark_pair(cli_results):
    pairs, rows = cli_results
    fields = ("correct", "gold_answer", "pred_answer")
    single = [popo_verify.verify(g, r) for g, r in pairs]
    batch = popo_verify.verify_batch_verdicts([g for g, _ in pairs], [r for _, r in pairs])
    assert batch == single
    mismatches = [
        (i, {f: row[f] for f in fields}, {f: getattr(v, f) for f in fields})
        for i, (row, v) in enumerate(zip(rows, single))
        if any(row[f] != getattr(v, f) for f in fields)
    ]
    assert mismatches == [], f"{len(mismatches)} of {len(pairs)} differ; first: {mismatches[:3]}"
    assert sum(v.correct for v in single) == sum(r["correct"] for r in rows) > 0


def test_reasons_equal_the_clis_on_a_sample(cli_results, popo_bin):
    # `--input` output has no reason; `popo verify GOLD RESPONSE --json` does (one process each).
    pairs, _ = cli_results
    for gold, response in pairs[::50]:
        out = subprocess.run([popo_bin, "verify", "--json", "--", gold, response], capture_output=True, text=True)
        assert out.returncode in (0, 1), out.stderr
        assert popo_verify.verify(gold, response).to_dict() == json.loads(out.stdout)
