#!/usr/bin/env bash
# Prints the simulator's trace_hash for every shipped scenario over a fixed set of seeds and
# strategies: the table in dev/TRACE_HASHES.md. A refactor that must not change behaviour
# leaves every line identical.
#   usage: dev/scripts/trace-hashes.sh [--quick]   (from the workspace root, after
#          cargo build --release -p tierswarm-sim)
set -euo pipefail
SIM=${SIM:-target/release/tierswarm-sim}
quick=${1:-}
light="smoke capable-seeder-legacy-crowd legacy-seeder lossy-churn mixed-legacy sweep-small lan"
heavy="multi-gib flash-crowd thousand"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
row() { # scenario seed strategy
  "$SIM" run "sim/scenarios/$1.toml" --seed "$2" --strategy "$3" --json "$tmp" >/dev/null 2>&1 || true
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("| %s | %s | %s | %s | %s |" % (sys.argv[2], sys.argv[3], sys.argv[4], r["exit_reason"], r["trace_hash"]))' "$tmp" "$1" "$2" "$3"
}
echo "| scenario | seed | strategy | exit | trace_hash |"
echo "|---|---|---|---|---|"
for s in $light; do
  for seed in 1 2 3; do
    for st in auto legacy; do row "$s" "$seed" "$st"; done
  done
done
if [ "$quick" != "--quick" ]; then
  for s in $heavy; do row "$s" 7 auto; done
fi
