#!/usr/bin/env python3
"""A verified fetch against raw loopback TCP, in one run (issue 12, "done when" 1).

    dev/scripts/wire-speed.sh [SIZE_MIB=1024] [REPEATS=3] [RUNTIMES=tokio,async-std]

For each repeat: iperf3 moves SIZE over loopback (one stream, receiver's rate); SIZE is written to
a new file in the run's directory and removed, twice ("memory", the second pass: what the file
system takes to hold a download's bytes in memory used lately, as the fetches after it find it); `tierswarm manifest` hashes the source on one core ("blake3"); then for each
runtime `tierswarm share` serves a file on tmpfs and `tierswarm fetch` downloads it (a fresh
output each time; the time is the fetch process's wall time from start to exit, verification of
every unit and of the whole file included; the share's hashing is before it, outside). Prints
each run and, per measurement, the median, the range and the spread ((max-min)/median), and
the rate of one thread that would receive (at iperf3's rate), hash and write each byte in turn:
a reference, measured in the same run, for a fetch that does its work on one thread (not a
strict bound: iperf3's rate includes the sending side's work, which a fetch leaves to the
seeder, and a fetch with threads can overlap the three).

Beside each fetch it prints what reads an outlier: the CPU seconds of the fetch (user + system,
whole process) and of the seeder during the fetch (from /proc), and the machine's steal time
during the fetch (from /proc/stat, the share of CPU time the host took from this VM). A fetch
slow because it waited spends the usual CPU; one slow because the machine ran slower spends
more for the same work, or shows steal.

It prints the fetch's system CPU too: in the slow outliers it is the system time that grows
(1.5-4x), the user time stays as it is. `--warm` writes SIZE of zeros into the output's
directory and removes it before each fetch, timed and printed as "memory": the experiment of
dev/BENCHMARKS.md, "The spread, narrowed" (on this Firecracker VM, writing into memory it has
not touched lately costs the kernel up to ~6x more; warming it first did not remove the
outliers).
"""

import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import tempfile
import time

import swarm_bench as sb


def proc_cpu(pid):
    """User + system CPU seconds of process `pid` so far (its threads included)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times():
    """(steal, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    steal = v[7] if len(v) > 7 else 0
    return steal, sum(v[:8])


def iperf3(size_mib):
    srv = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", "5299"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # the server binds; iperf3 has no readiness signal
    try:
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", "5299", "-n", "%dM" % size_mib,
                              "-J"], capture_output=True, text=True, check=True).stdout
    finally:
        srv.wait(timeout=30)
    end = json.loads(out)["end"]["sum_received"]
    return end["bytes"] / end["seconds"] / 2**20


def warm_memory(work, size_mib):
    """Writes `size_mib` MiB of zeros in `work` and removes the file; returns the seconds taken.

    The pages it frees are among the first the fetch's output gets (the kernel reuses freed
    pages first), so the fetch writes into memory the VM has backed lately."""
    path = os.path.join(work, "warm.bin")
    zeros = bytes(1 << 20)
    t0 = time.time()
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(zeros)
    took = time.time() - t0
    os.remove(path)
    return took


def memory_write(work, size_mib):
    """MiB/s of writing `size_mib` MiB (1 MiB writes) to a new file in `work`, which is removed:
    what putting a download's bytes into that file system costs, without a network. Twice:
    returns (first, second). On this VM memory the host took back is 5-8x dearer to write the
    first time (dev/BENCHMARKS.md), and the fetches that follow reuse the pages the first pass
    freed, so the second pass is the one they compare with."""
    return size_mib / warm_memory(work, size_mib), size_mib / warm_memory(work, size_mib)


def blake3_one_thread(bin_, src, size_mib):
    """MiB/s of `tierswarm manifest` hashing `src` (in memory) on one core: BLAKE3's speed here.

    `taskset` leaves the process one CPU, so the hash runs on one thread (it takes a thread per
    available CPU)."""
    t0 = time.time()
    subprocess.run(["taskset", "-c", "0", bin_, "manifest", src], check=True,
                   capture_output=True)
    return size_mib / (time.time() - t0)


def fetch_once(bin_, src, runtime, work, extra, warm_mib=0):
    manifest = os.path.join(work, "src.tsm")
    share = subprocess.Popen([bin_, "share", src, "--runtime", runtime, "--manifest-out",
                              manifest], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    line = share.stdout.readline()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        share.kill()
        raise RuntimeError("share did not start: %s %s" % (line, share.stderr.read()))
    out = os.path.join(work, "out.bin")
    warm_s = warm_memory(work, warm_mib) if warm_mib else None
    seeder0, (steal0, total0) = proc_cpu(share.pid), cpu_times()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    r = subprocess.run([bin_, "fetch", manifest, "--peer", m.group(1), "--out", out,
                        "--runtime", runtime] + extra, capture_output=True, text=True)
    wall = time.time() - t0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    seeder1, (steal1, total1) = proc_cpu(share.pid), cpu_times()
    diag = {
        "fetch_cpu_s": (children1.ru_utime - children0.ru_utime)
        + (children1.ru_stime - children0.ru_stime),
        "fetch_sys_s": children1.ru_stime - children0.ru_stime,
        "warm_s": warm_s,
        "seeder_cpu_s": seeder1 - seeder0,
        "steal_pct": 100 * (steal1 - steal0) / max(1, total1 - total0),
    }
    share.send_signal(signal.SIGINT)
    share.communicate(timeout=60)
    if r.returncode != 0:
        raise RuntimeError("fetch failed: %s" % r.stderr[-2000:])
    ok = subprocess.run(["cmp", "-s", src, out]).returncode == 0
    sb.remove_outputs(out, sb.TIERSWARM_SIDE_FILES)
    return os.path.getsize(src) / wall / 2**20, ok, diag


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, action="append",
                    help="a tierswarm binary; repeat to compare builds in the same run")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runtimes", default="tokio,async-std")
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--warm", action="store_true",
                    help="write and remove SIZE in the output's directory before each fetch")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wire-speed-", dir=a.dir)
    src = os.path.join(work, "src.bin")
    sb.write_random(src, a.size_mib)
    rates = {"iperf3": [], "memory": [], "blake3": []}
    cpu = {}
    try:
        for r in range(a.repeats):
            rate = iperf3(a.size_mib)
            rates["iperf3"].append(rate)
            print("run %d iperf3 %.0f MiB/s" % (r + 1, rate), flush=True)
            first, rate = memory_write(work, a.size_mib)
            rates["memory"].append(rate)
            print("run %d memory %.0f MiB/s (%d MiB written to a new file in %s; the first of"
                  " two passes %.0f MiB/s)" % (r + 1, rate, a.size_mib, a.dir, first), flush=True)
            rate = blake3_one_thread(a.bin[0], src, a.size_mib)
            rates["blake3"].append(rate)
            print("run %d blake3 %.0f MiB/s (one thread)" % (r + 1, rate), flush=True)
            # The builds take turns at going first: in a run, the first fetch after the memory
            # and BLAKE3 passes is often the slow one (fresh VM memory, dev/BENCHMARKS.md "Reads
            # into uninitialised memory"), which a fixed order would always give the same build.
            turn = r % len(a.bin)
            for b, bin_ in [(b, a.bin[b]) for b in [*range(turn, len(a.bin)), *range(turn)]]:
                for rt in a.runtimes.split(","):
                    rate, ok, diag = fetch_once(bin_, src, rt, work, [],
                                                a.size_mib if a.warm else 0)
                    if not ok:
                        raise RuntimeError("output differs from the source")
                    name = rt if len(a.bin) == 1 else "%s #%d" % (rt, b + 1)
                    rates.setdefault(name, []).append(rate)
                    gib = a.size_mib / 1024
                    cpu.setdefault(name, []).append(
                        (diag["fetch_cpu_s"] / gib, diag["seeder_cpu_s"] / gib))
                    memory = ("" if diag["warm_s"] is None else
                              "; memory: %d MiB written in %.2f s before"
                              % (a.size_mib, diag["warm_s"]))
                    print("run %d fetch %s %.0f MiB/s (verified, output identical); CPU: fetch"
                          " %.2f s (%.2f system), seeder %.2f s; steal %.1f %%%s"
                          % (r + 1, name, rate, diag["fetch_cpu_s"], diag["fetch_sys_s"],
                             diag["seeder_cpu_s"], diag["steal_pct"], memory), flush=True)
    finally:
        subprocess.run(["rm", "-rf", work])
    ref = statistics.median(rates["iperf3"])
    # A fetch receives every byte, hashes it and writes it: one thread doing the three in turn
    # at the speeds measured alone would run at this rate (per repeat, then the median).
    serial = [1 / (1 / i + 1 / m + 1 / b)
              for i, m, b in zip(rates["iperf3"], rates["memory"], rates["blake3"])]
    rates["one thread, in turn"] = serial
    print("\nmedian MiB/s (min-max), spread, ÷ iperf3 median, ÷ one thread in turn")
    for k, v in rates.items():
        med = statistics.median(v)
        print("%-20s %6.0f (%.0f-%.0f) spread %3.0f%%  %.2f of iperf3  %.2f of one thread"
              % (k, med, min(v), max(v), 100 * (max(v) - min(v)) / med, med / ref,
                 med / statistics.median(serial)))
    # CPU per GiB repeats far better than wall time on a shared VM: compare builds by it.
    print("\nCPU s per GiB, median (min-max): fetch (whole process) / seeder (during the fetch)")
    for k, v in cpu.items():
        f, sd = [x[0] for x in v], [x[1] for x in v]
        print("%-14s fetch %.2f (%.2f-%.2f)  seeder %.2f (%.2f-%.2f)"
              % (k, statistics.median(f), min(f), max(f),
                 statistics.median(sd), min(sd), max(sd)))


if __name__ == "__main__":
    main()
