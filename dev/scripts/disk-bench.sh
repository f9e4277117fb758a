#!/usr/bin/env bash
# One 1 GiB transfer (one seeder, one leecher, loopback) on the ordinary disk: tierswarm against
# libtorrent 2.x and rqbit, interleaved, page cache dropped before each (issue 12, done-when 2;
# see `disk_bench.py`'s docstring).
# Usage: dev/scripts/disk-bench.sh [SIZE_MIB=1024] [REPEATS=3] [extra args...]
#   extra args go to `disk_bench.py`, e.g. --dir DIR (default /var/tmp; not tmpfs),
#   --json FILE, --only tierswarm --only rqbit, --hybrid.
# BIN=... uses that tierswarm binary instead of building it; RQBIT=... is the rqbit binary
# (default: `rqbit` on PATH; without one, rqbit is skipped).
# Needs: root (to drop the page cache; without it the run goes on, noted), python3 with
# `pip install libtorrent` (2.x), rqbit (`cargo install rqbit`), /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-1024}; repeats=${2:-3}; shift $(( $# < 2 ? $# : 2 ))
if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p tierswarm-cli
    BIN="${CARGO_TARGET_DIR:-target}/release/tierswarm"
fi
RQBIT=${RQBIT:-$(command -v rqbit || true)}
exec python3 dev/scripts/disk_bench.py --bin "$BIN" ${RQBIT:+--rqbit "$RQBIT"} \
    --size-mib "$size" --repeats "$repeats" "$@"
