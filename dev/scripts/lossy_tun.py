#!/usr/bin/env python3
"""A lossy, delayed point-to-point link in user space, for kernels without `sch_netem`.

Creates two TUN devices (A and B) and forwards every IP packet read from one to the other after
DELAY, unless it is dropped, independently, with probability LOSS (a seeded generator, so a run
can be repeated). Prints `ready` once the devices exist; the caller then moves each into its
network namespace and gives it an address (the open descriptors follow the devices). Stops on
SIGTERM or SIGINT and prints what it forwarded and dropped.

    dev/scripts/lossy_tun.py --a ts-a --b ts-b --delay-ms 20 --loss 0.01 --seed 1

One thread, so it forwards a few tens of thousands of packets a second at most: measure the link
without loss too, to know where it caps.
"""
import argparse
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--delay-ms", type=float, default=20.0)
    p.add_argument("--loss", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    a, b = open_tun(args.a), open_tun(args.b)
    other = {a: b, b: a}
    rng = random.Random(args.seed)
    delay = args.delay_ms / 1000.0
    queue = []  # (due, sequence, output fd, packet)
    seq = 0
    forwarded = dropped = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("ready", flush=True)
    while not stop:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.5
        try:
            readable, _, _ = select.select([a, b], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if rng.random() < args.loss:
                    dropped += 1
                    continue
                heapq.heappush(queue, (now + delay, seq, other[fd], packet))
                seq += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, packet = heapq.heappop(queue)
            try:
                os.write(out, packet)
                forwarded += 1
            except OSError:
                pass  # the device is down: the packet is lost, as on a dead link
    print(f"forwarded {forwarded} packets, dropped {dropped}", flush=True)


if __name__ == "__main__":
    main()
