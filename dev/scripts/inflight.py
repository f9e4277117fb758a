#!/usr/bin/env python3
"""Requests in flight and units received over time, read from a flight record.

Replays RECORD with `tierswarm replay RECORD --actions` and prints, per bin of time, the units
received (and their rate) and the most requests in flight (requests sent less units received),
in all and per peer with --per-peer. This is how `dev/BENCHMARKS.md` reads the 100 ms link ("The
100 ms link, read from a flight record").

    python3 dev/scripts/inflight.py RECORD [--bin target/release/tierswarm] [--step-ms 100]
                                           [--per-peer]
"""
import argparse
import json
import subprocess
import sys
from collections import defaultdict

UNIT_MIB = 64 / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record")
    ap.add_argument("--bin", default="target/release/tierswarm")
    ap.add_argument("--step-ms", type=float, default=100.0)
    ap.add_argument("--per-peer", action="store_true")
    a = ap.parse_args()
    step = a.step_ms * 1000.0
    proc = subprocess.Popen([a.bin, "replay", a.record, "--actions"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    in_flight = defaultdict(int)  # peer -> requests sent less units received
    bins = {}  # bin -> [units, max in flight, {peer: max in flight}]
    for line in proc.stdout:
        v = json.loads(line)
        b = bins.setdefault(int(v["t"] // step), [0, 0, defaultdict(int)])
        if v["in"] == "frame" and v.get("msg", "").startswith("transfer("):
            in_flight[v["peer"]] -= 1
            b[0] += 1
        for act in v["actions"]:
            if act.get("send", "").startswith("request("):
                in_flight[act["peer"]] += 1
        b[1] = max(b[1], sum(in_flight.values()))
        for p, n in in_flight.items():
            b[2][p] = max(b[2][p], n)
    err = proc.stderr.read()
    if proc.wait() != 0:
        sys.exit(f"replay failed: {err.strip()}")
    print(err.strip())
    for k in sorted(bins):
        units, most, per = bins[k]
        rate = units * UNIT_MIB / (a.step_ms / 1000.0)
        row = f"{k * a.step_ms / 1000.0:8.2f} s  units {units:5d} ({rate:7.1f} MiB/s)  in flight ≤ {most:4d}"
        if a.per_peer:
            row += "  " + " ".join(f"{p}:{n}" for p, n in sorted(per.items()))
        print(row)


if __name__ == "__main__":
    main()
