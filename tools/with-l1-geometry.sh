#!/usr/bin/env bash
# Runs a command as if the CPU's L1 data cache had another size and associativity, to see what a
# run gives on another machine (BENCHMARKS.md, "Determinism"). candle's CPU matmuls (the `gemm`
# crate) read the cache geometry from /sys/devices/system/cpu/cpu*/cache and choose how long dot
# products are split from it, so the L1 geometry alone changes the order of float sums.
#
#   tools/with-l1-geometry.sh 32K 8 target/release/popo train --out /tmp/zen4-like   # Zen 4
#   tools/with-l1-geometry.sh 48K 12 cargo test -p popo-train --test trainer         # Zen 5
#
# Needs root (a private mount namespace with bind mounts over sysfs); changes nothing outside
# the command.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 L1D_SIZE L1D_WAYS COMMAND [ARGS...]   (e.g. 32K 8 popo train)" >&2
    exit 2
fi
size=$1 ways=$2
shift 2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "$size" >"$tmp/size"
echo "$ways" >"$tmp/ways"
# shellcheck disable=SC2016
unshare -m bash -c '
    tmp=$1; shift
    for idx in /sys/devices/system/cpu/cpu[0-9]*/cache/index*; do
        [ "$(cat "$idx/level")" = 1 ] && [ "$(cat "$idx/type")" = Data ] || continue
        mount --bind "$tmp/size" "$idx/size"
        mount --bind "$tmp/ways" "$idx/ways_of_associativity"
    done
    "$@"
' bash "$tmp" "$@"
