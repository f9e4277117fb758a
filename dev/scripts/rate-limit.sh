#!/usr/bin/env bash
# A fetch from a seeder with an upload limit, over loopback: how long it takes and how many of
# its requests timed out. Issue 14's figure: 64 MiB at --max-upload-rate 16MiB/s should take
# 4 s ± 10 % with no request timeouts.
#
#   cargo build --release -p tierswarm-cli
#   dev/scripts/rate-limit.sh [SIZE_MIB=64] [RATE=16MiB/s] [RUNS=3]
#
# Prints one line per run: the fetch's own elapsed time (from its `done` event, which counts
# from the start of the transfer, after the output file is created), its request timeouts, and
# the seeder's rate ticks.
set -euo pipefail
size_mib=${1:-64}
rate=${2:-16MiB/s}
runs=${3:-3}
bin=${TIERSWARM:-${CARGO_TARGET_DIR:-target}/release/tierswarm}
dir=$(mktemp -d)
trap 'kill "$share_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
head -c $((size_mib << 20)) /dev/urandom > "$dir/f.bin"
"$bin" share "$dir/f.bin" --max-upload-rate "$rate" --json-events > "$dir/share.jsonl" 2>/dev/null &
share_pid=$!
while ! grep -q '"listening"' "$dir/share.jsonl" 2>/dev/null; do sleep 0.1; done
url=$(head -1 "$dir/share.jsonl" | sed 's/.*"url":"\([^"]*\)".*/\1/')
for i in $(seq 1 "$runs"); do
  rm -f "$dir/copy" "$dir/copy.tsa" "$dir/copy.tsp"
  wall_start=$(date +%s.%N)
  done_line=$("$bin" fetch "$dir/f.bin.tsm" --peer "$url" --out "$dir/copy" --json-events | tail -1)
  wall=$(echo "$(date +%s.%N) - $wall_start" | bc)
  elapsed=$(echo "$done_line" | sed 's/.*"elapsed_s":\([0-9.]*\).*/\1/')
  timeouts=$(echo "$done_line" | sed 's/.*"request_timeouts":\([0-9]*\).*/\1/')
  outcome=$(echo "$done_line" | sed 's/.*"outcome":"\([a-z]*\)".*/\1/')
  cmp -s "$dir/f.bin" "$dir/copy" || { echo "run $i: output differs" >&2; exit 1; }
  echo "run $i: ${size_mib} MiB at $rate: transfer ${elapsed} s (process ${wall} s), request timeouts ${timeouts}, ${outcome}"
done
