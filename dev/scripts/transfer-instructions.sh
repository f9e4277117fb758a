#!/usr/bin/env bash
# Instructions per byte of a whole verified single-peer fetch over loopback TCP, both ends in
# one process (issue 12 item 5): user-space instructions counted by callgrind, which repeats to
# a fraction of a percent on a busy machine where wall-clock figures do not. The kernel's share
# (socket and page-cache copies, wake-ups) is not in it: see `perf stat` figures beside it.
#
#   dev/scripts/transfer-instructions.sh [RUNTIME=tokio] [SMALL=16MiB] [LARGE=48MiB]
#
# Runs `cargo bench -p tierswarm-RUNTIME --bench loopback` under callgrind four times: fetch
# (no raw copy) at SMALL and LARGE, and setup only (TIERSWARM_BENCH_TRANSPORTS=none) at both.
# Setup (the file's BLAKE3 root and the outboard) and the bench's own check of the output (one
# BLAKE3 pass) are the same per byte with and without the fetch; subtracting the setup-only
# pair leaves the fetch plus that one check pass. Prints the totals and the per-byte figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNTIME=${1:-tokio}
SMALL=${2:-16MiB}
LARGE=${3:-48MiB}
crate=tierswarm-$RUNTIME
bin=$(cargo bench -p "$crate" --bench loopback --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
dir=${TIERSWARM_BENCH_DIR:-/dev/shm}
count() { # SIZE TRANSPORTS -> instructions
    local out
    out=$(mktemp)
    TIERSWARM_BENCH_DIR=$dir TIERSWARM_BENCH_SIZE=$1 TIERSWARM_BENCH_TRANSPORTS=$2 TIERSWARM_BENCH_RAW=0 \
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --bench > /dev/null 2> "$out"
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out"
    rm -f "$out"
}
small=$(numfmt --from=iec-i "${SMALL%B}")
large=$(numfmt --from=iec-i "${LARGE%B}")
fs=$(count "$SMALL" tcp); fl=$(count "$LARGE" tcp)
ss=$(count "$SMALL" none); sl=$(count "$LARGE" none)
echo "$RUNTIME: fetch $SMALL $fs, $LARGE $fl; setup only $SMALL $ss, $LARGE $sl instructions"
python3 -c "
d = (($fl - $fs) - ($sl - $ss)) / ($large - $small)
print('fetch (+ one check pass): %.2f instructions per byte' % d)"
