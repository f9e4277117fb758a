#!/usr/bin/env bash
# Multi-process swarm on loopback, tierswarm against libtorrent 2.x (issue 12, item 4).
# Usage: dev/scripts/swarm-bench.sh [SIZE_MIB=256] [LEECHERS=8] [REPEATS=3] [extra args...]
# Needs: python3 with `pip install libtorrent` (2.x), /usr/bin/time, a tmpfs at /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-256}; n=${2:-8}; repeats=${3:-3}; shift $(( $# < 3 ? $# : 3 ))
cargo build --release -q -p tierswarm-cli
bin="${CARGO_TARGET_DIR:-target}/release/tierswarm"
exec python3 dev/scripts/swarm_bench.py bench --bin "$bin" --size-mib "$size" \
  --leechers "$n" --repeats "$repeats" "$@"
