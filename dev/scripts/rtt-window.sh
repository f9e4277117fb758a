#!/usr/bin/env bash
# A verified fetch over a long link (no loss) against iperf3 on the same link, in one run
# (issue 12 item 1: does the request window fill the bandwidth-delay product?). Two network
# namespaces joined by `lossy_tun.py` (this kernel has no `sch_netem`) with DELAY ms each way
# and no loss; the TUN devices get a 64000-byte MTU so the forwarder in user space moves few,
# large packets and is not the bottleneck. Needs root (`ip netns`, `/dev/net/tun`), iperf3.
#
#   cargo build --release -p tierswarm-cli
#   dev/scripts/rtt-window.sh [SIZE=256MiB] [RUNS=3] [DELAY=50]
#
# TIERSWARM names the binary (default: the release build), TIERSWARM_SEED another one for the
# seeder only (a fetch against an older seeder). SS_LOG=PATH appends `ss -tmi` of both ends,
# every ~70 ms, during each iperf3 and each fetch (lines: phase, time, namespace, sockets):
# congestion window, unacknowledged and unsent bytes, the peer's advertised window.
# FETCH_RECORD=PATH has each fetch write its flight record to PATH-RUN.jsonl (read it with
# `tierswarm replay PATH-RUN.jsonl --actions`; recording slows the fetch).
#
# Prints per run iperf3's rate (one stream, seeder to leecher, receiver's rate) and the fetch's
# (process wall time, output compared byte for byte), then what one peer's request window of W
# units of 64 KiB allows at this round trip: W × 64 KiB ÷ RTT. Everything it makes is removed
# at exit.
set -euo pipefail

SIZE=${1:-256MiB}
RUNS=${2:-3}
DELAY=${3:-50}
BIN=$(realpath "${TIERSWARM:-${CARGO_TARGET_DIR:-target}/release/tierswarm}")
SEED_BIN=$(realpath "${TIERSWARM_SEED:-$BIN}")
NS_SEED=tsrtt-seed
NS_LEECH=tsrtt-leech
SEED_IP=10.214.0.1
LEECH_IP=10.214.0.2
WORK=$(mktemp -d /dev/shm/tierswarm-rtt.XXXXXX)
SHARE_PID=
LINK_PID=
IPERF_PID=

cleanup() {
    [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null
    for p in "$SHARE_PID" "$IPERF_PID"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    [ -n "$LINK_PID" ] && kill "$LINK_PID" 2>/dev/null && wait "$LINK_PID" 2>/dev/null || true
    ip netns del "$NS_SEED" 2>/dev/null || true
    ip netns del "$NS_LEECH" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

. "$(dirname "$(realpath "$0")")/tun-link.sh"
tun_link "$NS_SEED" "$NS_LEECH" tsrtt-s tsrtt-l "$SEED_IP" "$LEECH_IP" "$DELAY" 0 "$WORK/link.out"
# Socket buffers up to 64 MiB (the defaults cap a stream at 4 MiB in flight: 40 MiB/s here), so
# the kernel is not what limits either transfer; large packets, so the forwarder is not either.
for ns in "$NS_SEED" "$NS_LEECH"; do
    ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_wmem="4096 16384 67108864" \
        net.ipv4.tcp_rmem="4096 131072 67108864"
done
ip -n "$NS_SEED" link set tsrtt-s mtu 64000
ip -n "$NS_LEECH" link set tsrtt-l mtu 64000
RTT=$((2 * DELAY))
echo "link: ${DELAY} ms each way (RTT ${RTT} ms), no loss, MTU 64000; $(uptime | sed 's/.*load/load/')"

head -c "$(numfmt --from=iec "${SIZE%iB}")" /dev/urandom > "$WORK/src.bin"
BYTES=$(stat -c %s "$WORK/src.bin")
ip netns exec "$NS_SEED" "$SEED_BIN" share "$WORK/src.bin" --listen "tcp://$SEED_IP:7000" \
    > "$WORK/share.out" 2> "$WORK/share.err" &
SHARE_PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/share.out" && break; sleep 0.1; done
ip netns exec "$NS_SEED" iperf3 -s -B "$SEED_IP" -p 5301 > /dev/null 2>&1 &
IPERF_PID=$!
sleep 0.3

SAMPLER=
sample() {
    [ -n "${SS_LOG:-}" ] || return 0
    while :; do
        t=$(date +%s.%N)
        for ns in "$NS_SEED" "$NS_LEECH"; do
            echo "$1 $t $ns $(ip netns exec "$ns" ss -tmiH state established | tr '\n' ' ')"
        done
        sleep 0.05
    done >> "$SS_LOG" &
    SAMPLER=$!
}
unsample() { [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; SAMPLER=; }

for run in $(seq "$RUNS"); do
    sample "iperf3-$run"
    iperf=$(ip netns exec "$NS_LEECH" iperf3 -c "$SEED_IP" -p 5301 -R -n "$BYTES" -J \
        | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print("%.1f" % (e["bytes"]/e["seconds"]/2**20))')
    unsample
    rm -f "$WORK/out.bin" "$WORK/out.bin.tsa" "$WORK/out.bin.tsp"
    sample "fetch-$run"
    start=$(date +%s.%N)
    ip netns exec "$NS_LEECH" "$BIN" fetch "$WORK/src.bin.tsm" --peer "tcp://$SEED_IP:7000" \
        --out "$WORK/out.bin" ${FETCH_RECORD:+--record "$FETCH_RECORD-$run.jsonl"} 2> "$WORK/fetch.err"
    unsample
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    cmp -s "$WORK/src.bin" "$WORK/out.bin" || { echo "run $run: output differs"; exit 1; }
    rate=$(echo "scale=1; $BYTES / 1048576 / $wall" | bc)
    echo "run $run: iperf3 $iperf MiB/s; fetch $rate MiB/s (${wall} s, verified); $(grep -o '[0-9]* requests, [0-9]* retries, [0-9]* timeouts' "$WORK/fetch.err")"
done
for w in 64 128 256 512; do
    echo "a window of $w units allows $(echo "scale=1; $w * 65536 / 1048576 / ($RTT / 1000)" | bc) MiB/s at ${RTT} ms"
done
