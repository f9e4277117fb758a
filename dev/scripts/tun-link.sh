# Sourced by the link scripts (lossy-link.sh, rtt-window.sh): two network namespaces joined by
# `lossy_tun.py` (a delayed, lossy point-to-point link in user space; this kernel has no
# `sch_netem`). Needs root.
#
#   tun_link NS_A NS_B DEV_A DEV_B IP_A IP_B DELAY_MS LOSS LOG
#
# Creates both namespaces, starts the forwarder (its output in LOG, its pid in LINK_PID), moves
# DEV_A into NS_A and DEV_B into NS_B with the addresses, and brings them and loopback up. The
# caller removes the namespaces and stops LINK_PID at exit.
tun_link() {
    local ns_a=$1 ns_b=$2 dev_a=$3 dev_b=$4 ip_a=$5 ip_b=$6 delay=$7 loss=$8 log=$9
    ip netns add "$ns_a"
    ip netns add "$ns_b"
    python3 "$(dirname "${BASH_SOURCE[0]}")/lossy_tun.py" --a "$dev_a" --b "$dev_b" \
        --delay-ms "$delay" --loss "$loss" > "$log" &
    LINK_PID=$!
    for _ in $(seq 50); do
        grep -q ready "$log" 2>/dev/null && break
        sleep 0.1
    done
    ip link set "$dev_a" netns "$ns_a"
    ip link set "$dev_b" netns "$ns_b"
    ip -n "$ns_a" addr add "$ip_a" peer "$ip_b" dev "$dev_a"
    ip -n "$ns_b" addr add "$ip_b" peer "$ip_a" dev "$dev_b"
    ip -n "$ns_a" link set lo up
    ip -n "$ns_b" link set lo up
    ip -n "$ns_a" link set "$dev_a" up
    ip -n "$ns_b" link set "$dev_b" up
}
