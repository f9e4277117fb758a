#!/usr/bin/env bash
# Instructions per scheduling decision cycle (TRANSFER in + UNIT_COMPLETE in, actions drained)
# on a leecher with 10, 100 and 1,000 peers (one seed, the rest holding half of every block),
# counted by callgrind: the difference between runs of 200 and 1,200 cycles, divided by 1,000,
# so building the swarm cancels out. Repeatable to the instruction on a noisy machine.
#   usage: dev/scripts/decision-cost.sh   (from the workspace root; needs valgrind)
set -euo pipefail
cargo bench -p tierswarm-core --bench core --no-run -q 2>/dev/null
bin=$(ls -t target/release/deps/core-* | grep -v '\.d$' | head -1)
count() { # peers cycles
  TIERSWARM_DECISION_CYCLES="$1:$2" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    "$bin" 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "| peers | instructions per cycle |"
echo "|---|---|"
for peers in 10 100 1000; do
  a=$(count "$peers" 200)
  b=$(count "$peers" 1200)
  echo "| $peers | $(( (b - a) / 1000 )) |"
done
