#!/usr/bin/env python3
"""How many copies of the file a simulated seeder sent, and how late its duplicates were asked.

    tierswarm-sim run SCENARIO [--seed N] [--strategy S] --trace T.jsonl
    python3 dev/scripts/seeder_copies.py T.jsonl [NODE]

NODE (default 0, the first seeder) is the node whose `serve` records are counted. Prints the
units it served, how many distinct ones, the copies of the file that makes, and, for each unit
it served more than once, how long after its first serve of that unit the later requester asked
for it (quartiles, ms): how stale the requesters' knowledge was (dev/SIMULATION.md, "Fast
links").
"""
import collections
import json
import sys


def main():
    path = sys.argv[1]
    node = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    served = collections.defaultdict(list)
    asked = {}
    for line in open(path):
        d = json.loads(line)
        if d["ev"] == "serve" and d["node"] == node:
            served[d["unit"]].append((d["t"], d["peer"]))
        elif d["ev"] == "request" and d["peer"] == node:
            for u in range(d["unit"], d["unit"] + d["count"]):
                asked.setdefault((d["node"], u), d["t"])
    total = sum(len(v) for v in served.values())
    lags = sorted((asked.get((p, u), t) - min(served[u])[0]) / 1000
                  for u in served for (t, p) in sorted(served[u])[1:])
    q = lambda p: round(lags[int(p * (len(lags) - 1))], 1) if lags else None
    print("served %d units, %d distinct: %.2f copies; duplicates asked after the first serve, "
          "ms: quartiles %s, median %s"
          % (total, len(served), total / max(1, len(served)), [q(0.25), q(0.75)], q(0.5)))


if __name__ == "__main__":
    main()
