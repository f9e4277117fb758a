#!/usr/bin/env bash
# TCP against QUIC over a lossy, delayed link: two network namespaces joined by a veth pair,
# netem on both ends, one `tierswarm share` listening on TCP and QUIC in one namespace, and
# `tierswarm fetch` runs over each transport from the other. Needs root (`ip netns`, `tc`).
#
#   cargo build --release -p tierswarm-cli
#   sudo dev/scripts/lossy-link.sh [SIZE] [RUNS] [LOSS] [DELAY]     # defaults: 32MiB 3 1% 20ms
#
# DELAY and LOSS apply to each direction (round trip = 2 × DELAY). Files live in /dev/shm so
# the disk stays out. Prints one line per fetch (transport, run, wall seconds, user+sys CPU
# seconds of the fetch process) and the median and range per transport. Everything it makes
# (namespaces, links, files, the share process) is removed at exit.
set -euo pipefail

SIZE=${1:-32MiB}
RUNS=${2:-3}
LOSS=${3:-1%}
DELAY=${4:-20ms}
BIN=$(realpath "${TIERSWARM:-target/release/tierswarm}")
NS_SEED=tierswarm-seed
NS_LEECH=tierswarm-leech
SEED_IP=10.213.0.1
LEECH_IP=10.213.0.2
WORK=$(mktemp -d /dev/shm/tierswarm-lossy.XXXXXX)
SHARE_PID=

cleanup() {
    [ -n "$SHARE_PID" ] && kill "$SHARE_PID" 2>/dev/null || true
    ip netns del "$NS_SEED" 2>/dev/null || true
    ip netns del "$NS_LEECH" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NS_SEED"
ip netns add "$NS_LEECH"
ip link add ts-veth-s type veth peer name ts-veth-l
ip link set ts-veth-s netns "$NS_SEED"
ip link set ts-veth-l netns "$NS_LEECH"
ip -n "$NS_SEED" addr add "$SEED_IP/24" dev ts-veth-s
ip -n "$NS_LEECH" addr add "$LEECH_IP/24" dev ts-veth-l
for ns in "$NS_SEED" "$NS_LEECH"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_SEED" link set ts-veth-s up
ip -n "$NS_LEECH" link set ts-veth-l up
ip netns exec "$NS_SEED" tc qdisc add dev ts-veth-s root netem delay "$DELAY" loss "$LOSS" limit 100000
ip netns exec "$NS_LEECH" tc qdisc add dev ts-veth-l root netem delay "$DELAY" loss "$LOSS" limit 100000
echo "link: ${DELAY} each way, ${LOSS} loss each way; $(ip netns exec "$NS_LEECH" ping -c 3 -q "$SEED_IP" | tail -1)"

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
