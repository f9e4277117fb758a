#!/usr/bin/env python3
"""Per-leecher download rates from a simulator trace (issue 11, "Least advanced first").

For each node that completed: when its first unit came, when it finished, the mean rate in
units per second over that span, the rate over the first and over the last quarter of its
units, and how many distinct peers it received units from. Sorted by first unit, so the late joiners come last.

    target/release/tierswarm-sim run sim/scenarios/crowd-100.toml --trace t.jsonl
    python3 dev/scripts/leecher_rates.py t.jsonl [--last N]
"""
import argparse
import json
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--last", type=int, default=0, help="only the N latest to start")
    a = ap.parse_args()
    times = defaultdict(list)  # node -> times (s) of units completed
    sources = defaultdict(set)  # node -> peers it received from
    done = set()
    for line in open(a.trace):
        r = json.loads(line)
        ev = r.get("ev")
        if ev == "completed":
            times[r["node"]].append(r["t"] / 1e6)
        elif ev == "received":
            sources[r["node"]].add(r["peer"])
        elif ev == "complete":
            done.add(r["node"])
    rows = []
    for node in done:
        t = sorted(times[node])
        if len(t) < 4:
            continue
        span = t[-1] - t[0]
        q = len(t) // 4
        rate = lambda a, b: (b - a + 1) / (t[b] - t[a]) if t[b] > t[a] else float("nan")
        rows.append((t[0], t[-1], len(t) / span if span else float("nan"),
                     rate(0, q), rate(len(t) - 1 - q, len(t) - 1), len(sources[node]), node))
    rows.sort()
    if a.last:
        rows = rows[-a.last:]
    print("| node | first unit (s) | done (s) | units/s | first quarter | last quarter | peers sent to it |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for first, last, mean, head, tail, peers, node in rows:
        print(f"| {node} | {first:.2f} | {last:.2f} | {mean:.1f} | {head:.1f} | {tail:.1f} | {peers} |")


if __name__ == "__main__":
    main()
