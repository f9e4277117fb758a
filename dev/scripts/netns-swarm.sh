#!/usr/bin/env bash
# Rate-limited multi-host swarm, tierswarm against libtorrent 2.x and the simulator (issue 12,
# item 4): every peer in a network namespace of its own behind a bridge, per-host upload and
# download limits from `tc tbf` (see `swarm_bench.py`'s docstring, `--netns`).
# Usage: dev/scripts/netns-swarm.sh [SIZE_MIB=64] [LEECHERS=8] [REPEATS=3] [extra args...]
#   extra args go to `swarm_bench.py bench`, e.g. --seed-up 100 --leech-up 20 --leech-down 100
#   (Mbit/s, these are the defaults), --json FILE, --scenario-out FILE.
# BIN=... and SIM=... use those binaries (tierswarm, tierswarm-sim) instead of building them.
# Needs: root, iproute2 (ip, tc), sch_tbf, python3 with `pip install libtorrent` (2.x),
# /usr/bin/time, a tmpfs at /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-64}; n=${2:-8}; repeats=${3:-3}; shift $(( $# < 3 ? $# : 3 ))
if [ "$(id -u)" != 0 ]; then
    echo "netns-swarm.sh: needs root (network namespaces, veth pairs, tc)" >&2; exit 1
fi
for tool in ip tc; do
    if ! command -v "$tool" > /dev/null; then
        echo "netns-swarm.sh: needs \`$tool\` (iproute2)" >&2; exit 1
    fi
done
target="${CARGO_TARGET_DIR:-target}"
if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p tierswarm-cli
    BIN="$target/release/tierswarm"
fi
if [ -z "${SIM:-}" ]; then
    cargo build --release -q -p tierswarm-sim
    SIM="$target/release/tierswarm-sim"
fi
exec python3 dev/scripts/swarm_bench.py bench --netns --bin "$BIN" --sim "$SIM" \
    --size-mib "$size" --leechers "$n" --repeats "$repeats" "$@"
