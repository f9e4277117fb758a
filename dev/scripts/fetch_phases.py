#!/usr/bin/env python3
"""Where the wall time of one verified fetch goes, by phase (issue 12).

    dev/scripts/fetch_phases.py BIN FILE [RUNTIME=tokio] [REPEATS=3]

Starts `BIN share FILE`, then `BIN fetch --json-events` into a fresh output beside FILE (put
FILE on tmpfs), timestamping each JSON line as it arrives (the CLI hands events over in
batches every 20 ms, so each time is good to ~20 ms). Phases: start (process start to the
first verified unit: runtime, manifest, output file, connection, handshake), transfer (first
verified unit to the `complete` event: every unit verified and written), end (`complete` to
the process's exit: the whole-file BLAKE3 check, final persist, closing).
"""
import json, os, re, signal, subprocess, sys, time

bin_, src = sys.argv[1], sys.argv[2]
rt = sys.argv[3] if len(sys.argv) > 3 else "tokio"
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
work = os.path.dirname(os.path.abspath(src))
man = os.path.join(work, "phases.tsm")
share = subprocess.Popen([bin_, "share", src, "--runtime", rt, "--manifest-out", man],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
url = re.search(r"listening on (\S+)", share.stdout.readline()).group(1)
out = os.path.join(work, "phases.out")
try:
    for r in range(reps):
        t0 = time.time()
        f = subprocess.Popen([bin_, "fetch", man, "--peer", url, "--out", out, "--runtime", rt,
                              "--json-events"], stdout=subprocess.PIPE, text=True)
        first = complete = None
        for line in f.stdout:
            t = time.time() - t0
            kind = json.loads(line).get("event")
            if kind == "unit_verified" and first is None:
                first = t
            if kind == "complete":
                complete = t
        f.wait()
        end = time.time() - t0
        assert f.returncode == 0 and first is not None and complete is not None
        same = subprocess.run(["cmp", "-s", src, out]).returncode == 0
        for e in ("", ".tsa", ".tsp", ".tsk"):
            if os.path.exists(out + e):
                os.remove(out + e)
        print("run %d %s: start %.2f s, transfer %.2f s, end %.2f s, total %.2f s (%s; load %.1f)"
              % (r + 1, rt, first, complete - first, end - complete, end,
                 "identical" if same else "DIFFERS", os.getloadavg()[0]), flush=True)
finally:
    share.send_signal(signal.SIGINT)
    share.communicate(timeout=60)
