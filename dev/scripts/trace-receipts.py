#!/usr/bin/env python3
"""Units received over time, from a simulator trace (`tierswarm-sim run … --trace T.jsonl`).

The figures in dev/SIMULATION.md "A downlink that never idles" and the `smoke` paragraph
after "Where issue 11 stands → Update (2026-12-05)" come from this.

  trace-receipts.py T.jsonl --node N --from S --to S --down RATE_MBIT
      node N: units received in [from, to), per second, and the time its downlink sat idle
      between receipts (a gap longer than one unit's serialisation at RATE_MBIT)
  trace-receipts.py T.jsonl --bins 0.25 --until 2
      the whole swarm: units received per bin of 0.25 s up to 2 s
e.g. tierswarm-sim run sim/scenarios/hetero-staggered.toml --seed 13 --strategy hierarchical \
       --threads 1 --trace /tmp/h13.jsonl
     dev/scripts/trace-receipts.py /tmp/h13.jsonl --node 50 --from 55 --to 75 --down 50
"""
import argparse
import json
import sys
from collections import Counter

UNIT_BITS = 65536 * 8

a = argparse.ArgumentParser()
a.add_argument("trace")
a.add_argument("--node", type=int)
a.add_argument("--from", dest="lo", type=float, default=0.0)
a.add_argument("--to", dest="hi", type=float, default=float("inf"))
a.add_argument("--down", type=float, help="the node's download rate, Mbit/s")
a.add_argument("--bins", type=float, default=1.0, help="bin width, s")
a.add_argument("--until", type=float, default=float("inf"))
args = a.parse_args()

times = []
for line in open(args.trace):
    r = json.loads(line)
    if r["ev"] != "received" or r.get("late"):
        continue
    if args.node is not None and r["node"] != args.node:
        continue
    t = r["t"] / 1e6
    if args.lo <= t < min(args.hi, args.until):
        times.append(t)
times.sort()
bins = Counter(int(t / args.bins) for t in times)
if not times:
    sys.exit("no units received in that range")
first, last = int(times[0] / args.bins), int(times[-1] / args.bins)
print(f"units received: {len(times)}")
print("per bin of %g s from %g s:" % (args.bins, first * args.bins),
      [bins[b] for b in range(first, last + 1)])
if args.node is not None and args.down:
    unit_s = UNIT_BITS / (args.down * 1e6)
    # Idle: the part of each gap between receipts beyond one unit's time on the link
    # (50 µs of slack for rounding).
    idle = sum(b - a - unit_s for a, b in zip(times, times[1:]) if b - a > unit_s + 50e-6)
    span = times[-1] - times[0]
    print(f"units/s {len(times) / span:.1f} (link {1 / unit_s:.1f}); downlink idle "
          f"{idle:.2f} s of {span:.2f} s between receipts")
