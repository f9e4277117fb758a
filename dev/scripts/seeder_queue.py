#!/usr/bin/env python3
"""How long a swarm's leechers' requests waited at the seeder, from their flight records.

    python3 dev/scripts/swarm_bench.py bench ... --record --keep-over SECONDS   # keeps records
    python3 dev/scripts/seeder_queue.py --bin target/release/tierswarm DIR [DIR ...]

Each DIR holds one run's `rec-N.jsonl` (one per leecher). Every record is replayed with
`tierswarm replay --actions`; the seeder is the peer whose first T3 summary says it has every
block. For each leecher: units received from the seeder, the most requests sent to it and not
yet answered by a unit (a request withdrawn or refused still counts: an upper bound), the wait
from a request to its unit (median and 90th percentile, seconds), and CANCELs sent to it.
"""
import argparse
import glob
import json
import os
import re
import subprocess


def analyse(bin_, path):
    out = subprocess.run([bin_, "replay", path, "--actions"], capture_output=True, text=True,
                         check=True).stdout
    seeder, sent, waits, inflight, most, got, cancels = None, {}, [], 0, 0, 0, 0
    for line in out.splitlines():
        d = json.loads(line)
        t, msg = d["t"], d.get("msg", "")
        if seeder is None and d.get("in") == "frame" and msg.startswith("summary(t3, 0, all="):
            m = re.search(r'all=b"([^"]*)", partial=b"([^"]*)"', msg)
            if m and m.group(2) in ("", "\\0") and m.group(1) not in ("", "\\0"):
                seeder = d["peer"]
        if d.get("in") == "frame" and d.get("peer") == seeder and msg.startswith("transfer("):
            unit = int(re.match(r"transfer\((\d+)", msg).group(1))
            got += 1
            if unit in sent:
                waits.append((t - sent.pop(unit)) / 1e6)
                inflight -= 1
        for a in d.get("actions", []):
            s = a.get("send", "")
            if a.get("peer") != seeder:
                continue
            if s.startswith("request("):
                sent[int(re.match(r"request\((\d+)", s).group(1))] = t
                inflight += 1
                most = max(most, inflight)
            elif s.startswith("cancel("):
                cancels += 1
    waits.sort()
    q = lambda p: round(waits[int(p * (len(waits) - 1))], 2) if waits else None
    return {"from_seeder": got, "most_in_flight": most, "wait_median_s": q(0.5),
            "wait_p90_s": q(0.9), "cancels": cancels}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    for d in a.dirs:
        rows = [analyse(a.bin, f) for f in sorted(glob.glob(os.path.join(d, "rec-*.jsonl")))]
        print(d)
        for key in rows[0] if rows else []:
            print("  %-15s %s" % (key, [r[key] for r in rows]))


if __name__ == "__main__":
    main()
