#!/usr/bin/env python3
"""Where a process's CPU goes, by category, from a `perf record -g` (dwarf) profile.

    perf record -a -F 499 --call-graph dwarf,16384 -o swarm.perf -- \
        python3 dev/scripts/swarm_bench.py bench --bin target/release/tierswarm \
        --size-mib 256 --leechers 8 --repeats 1 --only tierswarm
    perf script -i swarm.perf > swarm.txt
    python3 dev/scripts/perf-categories.py swarm.txt [COMM_PREFIX]

Each sample of a thread whose name starts with COMM_PREFIX (default `tokio-rt`: tierswarm's
runtime and blocking threads) is put in the first category whose marker appears anywhere in
its stack (the order below matters: a BLAKE3 call under a write would count as the write).
The table in dev/BENCHMARKS.md "Where a swarm leecher's CPU goes".
"""
import collections
import sys

RULES = [
    ("writev", "send (writev)"), ("sock_write_iter", "send (writev)"),
    ("tcp_sendmsg", "send (writev)"),
    ("pwrite", "file write"), ("shmem_write", "file write"),
    ("pread", "file read"), ("shmem_file_read", "file read"),
    ("sock_read_iter", "recv"), ("tcp_recvmsg", "recv"),
    ("blake3", "blake3"), ("memset", "memset"), ("tierswarm_core", "core"),
    ("malloc", "malloc/free"), ("_int_free", "malloc/free"), ("cfree", "malloc/free"),
    ("tierswarm_io", "io adapter"), ("tokio", "tokio"),
]


def main():
    path = sys.argv[1]
    prefix = sys.argv[2] if len(sys.argv) > 2 else "tokio-rt"
    cats = collections.Counter()
    total = 0
    for sample in open(path).read().split("\n\n"):
        lines = sample.strip().split("\n")
        if not lines or not lines[0].strip() or not lines[0].split()[0].startswith(prefix):
            continue
        total += 1
        stack = "\n".join(lines[1:])
        cats[next((name for marker, name in RULES if marker in stack), "other")] += 1
    print(f"{total} samples of threads {prefix}*")
    for name, n in cats.most_common():
        print(f"{n:6d} {100 * n / max(total, 1):5.1f} %  {name}")


if __name__ == "__main__":
    main()
