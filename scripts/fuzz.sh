#!/usr/bin/env bash
# Coverage-guided fuzzing of popo's parsers with AFL++ (cargo-afl), on stable Rust.
#
#   scripts/fuzz.sh TARGET SECONDS          fuzz TARGET for SECONDS, starting from fuzz/corpus/TARGET
#   scripts/fuzz.sh TARGET replay FILE...   run files through TARGET outside AFL (reproduce a crash)
#   scripts/fuzz.sh list                    the targets
#
# Installs what it needs on a fresh machine: cargo-afl from crates.io, which builds AFL++ from
# its own sources (`cargo afl config --build`; needs only a C compiler and make). Runs niced, on
# one core, without pinning a CPU. At the end it prints the run's numbers (executions, edges
# covered, crashes, hangs) and appends them to fuzz/results.log, replaces fuzz/corpus/TARGET by
# the run's queue (its smallest files), and copies crashing and hanging inputs to
# fuzz/crashes/TARGET/ (see RELIABILITY.md), which `cargo test --workspace` replays through the
# same target code (crates/popo-fuzz-harness/tests/replay.rs).
#
# Environment: CARGO_TARGET_DIR (default target/fuzz), FUZZ_TIMEOUT_MS (one input, default
# 2000), FUZZ_MEM_MB (address-space limit of the target, default 4096).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

targets="verify jsonl config model_config safetensors metrics chat_template"
usage() {
    echo "usage: scripts/fuzz.sh TARGET SECONDS | TARGET replay FILE... | list" >&2
    echo "targets: $targets" >&2
    exit 2
}
[ $# -ge 1 ] || usage
if [ "$1" = list ]; then
    echo "$targets"
    exit 0
fi
target=$1
mode=${2:-}
case " $targets " in *" $target "*) ;; *) usage ;; esac
[ -n "$mode" ] || usage

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/fuzz}
timeout_ms=${FUZZ_TIMEOUT_MS:-2000}
mem_mb=${FUZZ_MEM_MB:-4096}

# cargo-afl, and AFL++ built for this toolchain.
if ! cargo afl --version >/dev/null 2>&1; then
    nice -n 15 cargo install --locked cargo-afl -j 1
fi
case "$(cargo afl fuzz -h 2>&1 || true)" in
*afl-fuzz*) ;;
*) nice -n 15 cargo afl config --build ;;
esac

# Build the one target (its feature pulls in only the crates it needs).
(cd fuzz && nice -n 15 cargo afl build --release -j 1 --features "$target" --bin "$target")
bin=$CARGO_TARGET_DIR/release/$target
# Scratch files of the targets (overwritten by every input) in memory when possible.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi

if [ "$mode" = replay ]; then
    shift 2
    status=0
    for f in "$@"; do
        if (ulimit -v $((mem_mb * 1024)); timeout $((timeout_ms / 1000 + 10)) "$bin" <"$f") >/dev/null 2>/tmp/fuzz-replay.err; then
            echo "ok    $f"
        else
            echo "FAIL  $f"
            tail -5 /tmp/fuzz-replay.err | sed 's/^/      /'
            status=1
        fi
    done
    exit $status
fi

seconds=$mode
[[ "$seconds" =~ ^[0-9]+$ ]] || usage
corpus=fuzz/corpus/$target
out=fuzz/out/$target
mkdir -p "$corpus"
[ -n "$(ls -A "$corpus")" ] || printf '0' >"$corpus/empty"
rm -rf "$out"
mkdir -p "$out"

export AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1
# The machine's core_pattern may pipe core dumps elsewhere; crashes are still caught.
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
echo "fuzzing $target for $seconds s (log: $out/afl.log)"
nice -n 15 cargo afl fuzz -V "$seconds" -t "$timeout_ms" -m "$mem_mb" \
    -i "$corpus" -o "$out" -- "$bin" >"$out/afl.log" 2>&1 || {
    tail -30 "$out/afl.log"
    exit 1
}

stats=$out/default/fuzzer_stats
stat() { sed -n "s/^$1 *: //p" "$stats"; }
echo "target $target: $(stat run_time) s, $(stat execs_done) executions ($(stat execs_per_sec)/s)," \
    "corpus $(stat corpus_count), edges $(stat edges_found)/$(stat total_edges) ($(stat bitmap_cvg))," \
    "crashes $(stat saved_crashes), hangs $(stat saved_hangs)"
{
    echo "$(date -u +%FT%TZ) $target: $(stat run_time) s, $(stat execs_done) execs," \
        "corpus $(stat corpus_count), edges $(stat edges_found)/$(stat total_edges)" \
        "($(stat bitmap_cvg)), crashes $(stat saved_crashes), hangs $(stat saved_hangs)"
} >>fuzz/results.log

# Crashes and hangs, under content hashes (AFL's names hold colons).
for kind in crashes hangs; do
    for f in "$out"/default/$kind/id*; do
        [ -e "$f" ] || continue
        mkdir -p "fuzz/crashes/$target"
        saved=fuzz/crashes/$target/$kind-$(sha1sum "$f" | cut -c1-16)
        cp "$f" "$saved"
        echo "saved $saved ($(stat -c %s "$saved") bytes): once fixed, list it in SAVED," \
            "crates/popo-fuzz-harness/tests/replay.rs"
    done
done

# The queue becomes the corpus the next run starts from: the inputs that found new coverage
# (`+cov`) first, smallest first, then the rest, up to 600 KB and 3000 files a target, so that
# the committed corpora stay small (afl-cmin takes minutes here).
queue=$out/default/queue
if [ -n "$(ls -A "$queue" 2>/dev/null)" ]; then
    rm -rf "$corpus"
    mkdir -p "$corpus"
    budget=$((600 * 1024))
    files=3000
    {
        find "$queue" -maxdepth 1 -type f -name 'id*+cov*' -printf '%s %p\n' | sort -n
        find "$queue" -maxdepth 1 -type f -name 'id*' ! -name '*+cov*' -printf '%s %p\n' | sort -n
    } | while read -r size f; do
        [ "$size" -le "$budget" ] && [ "$files" -gt 0 ] || continue
        budget=$((budget - size))
        files=$((files - 1))
        cp "$f" "$corpus/$(sha1sum "$f" | cut -c1-16)"
    done
fi
echo "corpus: $(ls "$corpus" | wc -l) files, $(du -sb "$corpus" | cut -f1) bytes"
