#!/usr/bin/env bash
# Compare `popo verify` with HuggingFace math-verify (PyPI) on the same pairs:
# the 2,000 MATH500 benchmark pairs and a self/cross pair for every benchmark gold.
# Prints the agreement, every disagreement and the single-thread whole-process speed ratio.
#
#   scripts/compare-math-verify.sh            # builds `popo` in release mode
#   POPO_BIN=target/debug/popo scripts/compare-math-verify.sh
#   EXTRA_PAIRS=responses.jsonl scripts/compare-math-verify.sh   # also: your own pairs
#   EXTRA_PAIRS=responses.jsonl EXTRA_ONLY=1 scripts/compare-math-verify.sh
#
# EXTRA_PAIRS is a JSONL file whose lines carry `gold` (or `answer`) and `response` (or `pred`),
# e.g. real model responses; its agreement and every disagreement are reported on their own,
# after the corpus (EXTRA_ONLY=1 skips the corpus and the speed run).
#
# Env: DATA_DIR (default ../shared/data), VENV (default .venv-mv), WORK (default target/compare-mv).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-../shared/data}
VENV=${VENV:-.venv-mv}
WORK=${WORK:-target/compare-mv}
mkdir -p "$WORK"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import math_verify" 2>/dev/null || "$VENV/bin/pip" install -q math-verify
PY="$VENV/bin/python"
echo "math-verify $("$PY" -c 'import importlib.metadata as m; print(m.version("math-verify"))')"

if [ -z "${POPO_BIN:-}" ]; then
    cargo build --release -q -p popo
    POPO_BIN="${CARGO_TARGET_DIR:-target}/release/popo"
fi
echo "popo: $POPO_BIN"

now() { date +%s.%N; }

# Pairs from elsewhere, reported on their own.
extra_report() {
    "$PY" tools/compare_math_verify.py extra --input "$EXTRA_PAIRS" --out "$WORK/extra.jsonl"
    "$POPO_BIN" verify --input "$WORK/extra.jsonl" --threads 1 > "$WORK/popo_extra.jsonl"
    "$PY" tools/compare_math_verify.py run --input "$WORK/extra.jsonl" --out "$WORK/mv_extra.jsonl"
    echo "== extra pairs: $EXTRA_PAIRS"
    "$PY" tools/compare_math_verify.py report --input "$WORK/extra.jsonl" --popo "$WORK/popo_extra.jsonl" \
        --mv "$WORK/mv_extra.jsonl"
}
if [ -n "${EXTRA_PAIRS:-}" ] && [ -n "${EXTRA_ONLY:-}" ]; then
    extra_report
    exit 0
fi

# The benchmark pairs, exactly as `popo verify --bench` builds them.
"$POPO_BIN" verify --bench --threads 1 --data-dir "$DATA_DIR" --write-pairs "$WORK/bench.jsonl"
"$PY" tools/compare_math_verify.py corpus --data "$DATA_DIR" --out "$WORK/golds.jsonl"
cat "$WORK/bench.jsonl" "$WORK/golds.jsonl" > "$WORK/all.jsonl"

# Speed: one thread, whole process (start-up, reading, writing) on the 2,000 benchmark pairs.
# popo's run is ~20 ms, so one sample is at the mercy of the scheduler: take the median of 5.
samples=()
for _ in 1 2 3 4 5; do
    t0=$(now)
    "$POPO_BIN" verify --input "$WORK/bench.jsonl" --threads 1 > "$WORK/popo_bench.jsonl" 2>/dev/null
    t1=$(now)
    samples+=("$(echo "$t1 - $t0" | bc -l)")
done
popo_secs=$(printf '%s\n' "${samples[@]}" | sort -g | sed -n 3p)
echo "popo whole-process seconds: ${samples[*]} (median $popo_secs)"
t1=$(now)
"$PY" tools/compare_math_verify.py run --input "$WORK/bench.jsonl" --out "$WORK/mv_bench.jsonl"
t2=$(now)
mv_secs=$(echo "$t2 - $t1" | bc -l)

# Agreement on everything.
"$POPO_BIN" verify --input "$WORK/all.jsonl" --threads 1 > "$WORK/popo_all.jsonl"
"$PY" tools/compare_math_verify.py run --input "$WORK/all.jsonl" --out "$WORK/mv_all.jsonl"
"$PY" tools/compare_math_verify.py report --input "$WORK/all.jsonl" --popo "$WORK/popo_all.jsonl" \
    --mv "$WORK/mv_all.jsonl" --popo-secs "$popo_secs" --mv-secs "$mv_secs" --pairs 2000

if [ -n "${EXTRA_PAIRS:-}" ]; then
    extra_report
fi
