#!/usr/bin/env bash
# Context switches and CPU time of both processes of one verified fetch over loopback (issue 12):
# `perf stat` on `tierswarm share` (by pid) and on `tierswarm fetch`. Counts of context
# switches vary far less with the machine's load than wall times do.
#
#   dev/scripts/wakeups.sh [RUNTIME=tokio] [SIZE_MIB=1024] [REPEATS=3] [BIN...]
#
# With several BINs (default: this tree's release build), they are alternated in each repeat.
# Files on /dev/shm; needs perf.
set -euo pipefail
RUNTIME=${1:-tokio}
SIZE_MIB=${2:-1024}
REPEATS=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
BINS=("$@")
[ ${#BINS[@]} -eq 0 ] && BINS=("$(realpath "${CARGO_TARGET_DIR:-target}/release/tierswarm")")
WORK=$(mktemp -d /dev/shm/tierswarm-wakeups.XXXXXX)
SHARE_PID=
cleanup() {
    [ -n "$SHARE_PID" ] && kill "$SHARE_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/src.bin"
for run in $(seq "$REPEATS"); do
    for bin in "${BINS[@]}"; do
        "$bin" share "$WORK/src.bin" --runtime "$RUNTIME" --manifest-out "$WORK/m.tsm" > "$WORK/share.out" 2>/dev/null &
        SHARE_PID=$!
        while ! grep -q listening "$WORK/share.out" 2>/dev/null; do sleep 0.1; done
        url=$(grep -o 'tcp://[^ ]*' "$WORK/share.out")
        perf stat -e context-switches,task-clock -x, -p "$SHARE_PID" -o "$WORK/seed.stat" &
        stat_pid=$!
        sleep 0.2
        perf stat -e context-switches,task-clock -x, -o "$WORK/fetch.stat" \
            "$bin" fetch "$WORK/m.tsm" --peer "$url" --out "$WORK/out.bin" --runtime "$RUNTIME" > /dev/null 2>&1
        kill -INT "$stat_pid"; wait "$stat_pid" || true
        kill -INT "$SHARE_PID"; wait "$SHARE_PID" || true
        SHARE_PID=
        cmp -s "$WORK/src.bin" "$WORK/out.bin" || { echo "output differs"; exit 1; }
        rm -f "$WORK"/out.bin*
        field() { grep ",$2" "$1" | cut -d, -f1 | cut -d. -f1; }
        echo "run $run $(basename "$bin") $RUNTIME: fetch $(field "$WORK/fetch.stat" context-switches) context switches, $(field "$WORK/fetch.stat" task-clock) ms CPU; share $(field "$WORK/seed.stat" context-switches) context switches, $(field "$WORK/seed.stat" task-clock) ms CPU; load $(cut -d' ' -f1 /proc/loadavg)"
    done
done
