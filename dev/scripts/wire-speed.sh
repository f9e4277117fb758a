#!/usr/bin/env bash
# A verified 1 GiB fetch on tmpfs against iperf3 over loopback, in one run (issue 12).
# Usage: dev/scripts/wire-speed.sh [SIZE_MIB=1024] [REPEATS=3] [RUNTIMES=tokio,async-std]
# WIRE_SPEED_BASELINE=PATH adds another build of tierswarm, measured in the same run.
# Needs: iperf3 (apt-get install iperf3), a tmpfs at /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p tierswarm-cli
exec python3 dev/scripts/wire_speed.py --bin "${CARGO_TARGET_DIR:-target}/release/tierswarm" ${WIRE_SPEED_BASELINE:+--bin "$WIRE_SPEED_BASELINE"} \
  --size-mib "${1:-1024}" --repeats "${2:-3}" --runtimes "${3:-tokio,async-std}"
