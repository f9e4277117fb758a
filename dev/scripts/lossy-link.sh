#!/usr/bin/env bash
# TCP against QUIC over a lossy, delayed link: two network namespaces joined by a point-to-point
# link that drops and delays packets, one `tierswarm share` listening on TCP and QUIC in one
# namespace, and `tierswarm fetch` runs over each transport from the other. Needs root
# (`ip netns`, `/dev/net/tun`).
#
#   cargo build --release -p tierswarm-cli
#   sudo dev/scripts/lossy-link.sh [SIZE] [RUNS] [LOSS] [DELAY]     # defaults: 32MiB 3 0.01 20
#
# LOSS (a probability) and DELAY (milliseconds) apply to each direction, so the round trip is
# 2 × DELAY. The link is `lossy_tun.py` beside this script: two TUN devices and a forwarder in
# user space doing what `tc qdisc … netem delay 20ms loss 1%` does (this machine's kernel has no
# `sch_netem`). Files live in /dev/shm so the disk stays out. Prints one line per fetch
# (transport, run, wall seconds, user+sys CPU seconds of the fetch process, requests and
# retries) and the median and range per transport. Everything it makes (namespaces, devices,
# files, processes) is removed at exit.
#
# TCP_CC (default reno) sets TCP's congestion control in both namespaces; a namespace may only
# pick one of net.ipv4.tcp_allowed_congestion_control (here reno and bbr). quinn uses cubic, a
# loss-based controller like reno; bbr does not back off on random loss.
set -euo pipefail

SIZE=${1:-32MiB}
RUNS=${2:-3}
LOSS=${3:-0.01}
DELAY=${4:-20}
BIN=$(realpath "${TIERSWARM:-target/release/tierswarm}")
TCP_CC=${TCP_CC:-reno}
NS_SEED=tierswarm-seed
NS_LEECH=tierswarm-leech
SEED_IP=10.213.0.1
LEECH_IP=10.213.0.2
WORK=$(mktemp -d /dev/shm/tierswarm-lossy.XXXXXX)
SHARE_PID=
LINK_PID=

cleanup() {
    [ -n "$SHARE_PID" ] && kill "$SHARE_PID" 2>/dev/null || true
    [ -n "$LINK_PID" ] && kill "$LINK_PID" 2>/dev/null && wait "$LINK_PID" 2>/dev/null || true
    [ -f "$WORK/link.out" ] && tail -1 "$WORK/link.out"
    ip netns del "$NS_SEED" 2>/dev/null || true
    ip netns del "$NS_LEECH" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

. "$(dirname "$0")/tun-link.sh"
tun_link "$NS_SEED" "$NS_LEECH" ts-seed ts-leech "$SEED_IP" "$LEECH_IP" "$DELAY" "$LOSS" "$WORK/link.out"
for ns in "$NS_SEED" "$NS_LEECH"; do
    ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_congestion_control="$TCP_CC"
done
echo "link: ${DELAY} ms each way, loss ${LOSS} each way; TCP congestion control $TCP_CC"

head -c "$(numfmt --from=iec "${SIZE%iB}")" /dev/urandom > "$WORK/src.bin"
ip netns exec "$NS_SEED" "$BIN" share "$WORK/src.bin" \
    --listen "tcp://$SEED_IP:7000" --listen "quic://$SEED_IP:7001" > "$WORK/share.out" 2> "$WORK/share.err" &
SHARE_PID=$!
for _ in $(seq 100); do
    [ "$(wc -l < "$WORK/share.out")" -ge 2 ] && break
    sleep 0.1
done
TCP_URL=$(sed -n 's/^listening on \(tcp:.*\)/\1/p' "$WORK/share.out")
QUIC_URL=$(sed -n 's/^listening on \(quic:.*\)/\1/p' "$WORK/share.out")
echo "file: $SIZE; share: $TCP_URL $QUIC_URL"

for url in "$TCP_URL" "$QUIC_URL"; do
    scheme=${url%%:*}
    times=()
    for run in $(seq "$RUNS"); do
        rm -f "$WORK/out.bin" "$WORK/out.bin.tsa" "$WORK/out.bin.tsp"
        ip netns exec "$NS_LEECH" /usr/bin/time -f "%e %U %S" -o "$WORK/time" \
            "$BIN" fetch "$WORK/src.bin.tsm" --peer "$url" --out "$WORK/out.bin" 2> "$WORK/fetch.err"
        cmp -s "$WORK/src.bin" "$WORK/out.bin" || { echo "$scheme run $run: output differs"; exit 1; }
        read -r wall user sys < "$WORK/time"
        cpu=$(echo "$user + $sys" | bc)
        echo "$scheme run $run: ${wall} s wall, ${cpu} s cpu; $(grep -o '[0-9]* requests, [0-9]* retries' "$WORK/fetch.err")"
        times+=("$wall")
    done
    sorted=($(printf '%s\n' "${times[@]}" | sort -n))
    echo "$scheme: median ${sorted[$((RUNS / 2))]} s, range ${sorted[0]}–${sorted[$((RUNS - 1))]} s over $RUNS runs"
done
