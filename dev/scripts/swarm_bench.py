#!/usr/bin/env python3
"""Real swarms on real sockets (issue 12): one seeder and N leechers as separate processes on
loopback, every leecher also serving, run with tierswarm and with libtorrent 2.x in the same run.

    dev/scripts/swarm-bench.sh [SIZE_MIB] [LEECHERS] [REPEATS]

(the wrapper builds the release CLI and calls this with --bin). Each repeat runs tierswarm then
libtorrent on the same file (random bytes on tmpfs) and topology:

- the seeder starts first and the clock starts once it serves (tierswarm: its `listening on`
  line, after hashing; libtorrent: the torrent is seeding, after its check);
- then N leechers start at once; each listens on its own port and dials the seeder and every
  other leecher; each exits as soon as it has the whole file verified (as `tierswarm fetch`
  does), so late finishers lose early ones as sources in both swarms;
- "all done" is the time from the start of the leechers until the last one exited;
- every leecher process runs under `/usr/bin/time` (CPU user+system, peak RSS); the seeder too;
- units served by leechers and by the seeder come from each process's final stats (tierswarm:
  the `served N units` of `share` and `fetch`; libtorrent: payload bytes uploaded);
- every output is compared with the input file byte for byte afterwards.

libtorrent peers run as `swarm_bench.py lt-peer ...` processes: TCP only (uTP, DHT, LSD, UPnP,
NAT-PMP off), the `high_performance_seed` settings pack, several connections per IP allowed (all
peers share 127.0.0.1), piece size chosen by libtorrent for the file.
"""

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

# libtorrent's Python API marks the file_storage route to a torrent deprecated; it still works.
warnings.filterwarnings("ignore", category=DeprecationWarning)

TIME_FMT = "%e %U %S %M"


def timed(cmd, time_out, **kw):
    # A process group of its own: `time` ignores SIGINT while it waits, so a
    # signal meant for the peer goes to the group (see `stop`).
    return subprocess.Popen(["/usr/bin/time", "-f", TIME_FMT, "-o", time_out] + cmd,
                            start_new_session=True, **kw)


def stop(proc, sig):
    """Signals the peer under `time` and returns what it printed (stdout, stderr)."""
    os.killpg(proc.pid, sig)
    return proc.communicate(timeout=60)


def read_time(path):
    wall, user, sys_, rss = open(path).read().split()[-4:]
    return {"cpu": float(user) + float(sys_), "rss_mib": int(rss) / 1024}


def wait_line(stream, pattern, limit=120):
    """Reads a process's stream (text) until a line matches; returns the match."""
    deadline = time.time() + limit
    lines = []
    while time.time() < deadline:
        line = stream.readline()
        if not line:
            raise RuntimeError("process ended before %r:\n%s" % (pattern, "".join(lines)))
        lines.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise RuntimeError("timeout waiting for %r" % pattern)


def free_ports(n):
    base = random.randrange(20000, 60000 - n)
    return [base + i for i in range(n)]


def wait_all(procs, start):
    """Waits for every process; returns when each ended, in seconds after `start`."""
    done = [None] * len(procs)
    while None in done:
        for i, p in enumerate(procs):
            if done[i] is None and p.poll() is not None:
                done[i] = time.time() - start
        time.sleep(0.002)
    return done


def same(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def run_tierswarm(args, src, work):
    ports = free_ports(args.leechers)
    manifest = os.path.join(work, "file.tsm")
    seed_time = os.path.join(work, "ts-seed.time")
    seeder = timed(
        [args.bin, "share", src, "--listen", "127.0.0.1:0", "--runtime", args.runtime,
         "--manifest-out", manifest],
        seed_time, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seed_addr = wait_line(seeder.stdout, r"listening on (?:tcp://)?(\S+)").group(1)
    outs, procs = [], []
    start = time.time()
    for i, port in enumerate(ports):
        out = os.path.join(work, "ts-out-%d" % i)
        outs.append(out)
        peers = ["--peer", seed_addr]
        for j, p in enumerate(ports):
            if j != i:
                peers += ["--peer", "127.0.0.1:%d" % p]
        err = open(os.path.join(work, "ts-leech-%d.err" % i), "w")
        procs.append(timed(
            [args.bin, "fetch", manifest, "--out", out, "--runtime", args.runtime,
             "--listen", "127.0.0.1:%d" % port] + peers,
            os.path.join(work, "ts-leech-%d.time" % i), stderr=err, stdout=subprocess.DEVNULL))
    finish = wait_all(procs, start)
    all_done = max(finish)
    rest = stop(seeder, signal.SIGINT)[1]
    m = re.search(r"served (\d+) units", rest)
    seed_units = int(m.group(1)) if m else None
    leech = []
    for i, p in enumerate(procs):
        err = open(os.path.join(work, "ts-leech-%d.err" % i)).read()
        m = re.search(r"from (\d+) peers.*; (\d+) requests.*served (\d+) units", err)
        if p.returncode != 0 or not m:
            raise RuntimeError("leecher %d failed (%s):\n%s" % (i, p.returncode, err[-2000:]))
        t = read_time(os.path.join(work, "ts-leech-%d.time" % i))
        t.update(peers=int(m.group(1)), requests=int(m.group(2)), served=int(m.group(3)),
                 done=finish[i], verified=same(src, outs[i]))
        leech.append(t)
    for o in outs:
        for ext in ("", ".tsa", ".tsp", ".tsk"):
            if os.path.exists(o + ext):
                os.remove(o + ext)
    return summarise("tierswarm", all_done, leech, read_time(seed_time), seed_units,
                     unit_bytes=64 * 1024, size=os.path.getsize(src))


def lt_settings(port):
    import libtorrent as lt
    s = lt.high_performance_seed()
    s.update({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "enable_incoming_utp": False, "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": 0,
    })
    return s


def lt_peer(a):
    """One libtorrent peer (a process of its own): seed until SIGINT, or leech until done."""
    import libtorrent as lt
    ses = lt.session(lt_settings(a.port))
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(a.torrent)
    p.save_path = a.dir
    if a.role == "seed":
        p.flags |= lt.torrent_flags.seed_mode
    h = ses.add_torrent(p)
    for peer in a.peers or []:
        host, port = peer.rsplit(":", 1)
        h.connect_peer((host, int(port)))
    if a.role == "seed":
        stop = []
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        while not h.status().is_seeding:
            time.sleep(0.01)
        print("ready", file=sys.stderr, flush=True)
        while not stop:
            time.sleep(0.05)
    else:
        while not h.status().is_seeding:
            time.sleep(0.005)
    st = h.status()
    print(json.dumps({"uploaded": st.total_payload_upload, "peers": st.num_peers}), flush=True)


def run_libtorrent(args, src, work):
    import libtorrent as lt
    ports = free_ports(args.leechers + 1)
    seed_port, ports = ports[0], ports[1:]
    fs = lt.file_storage()
    lt.add_files(fs, src)
    t = lt.create_torrent(fs)
    lt.set_piece_hashes(t, os.path.dirname(src))
    torrent = os.path.join(work, "file.torrent")
    open(torrent, "wb").write(lt.bencode(t.generate()))
    piece = lt.torrent_info(torrent).piece_length()
    me = [sys.executable, os.path.abspath(__file__), "lt-peer", "--torrent", torrent]
    seed_time = os.path.join(work, "lt-seed.time")
    seeder = timed(me + ["--role", "seed", "--port", str(seed_port), "--dir",
                         os.path.dirname(src)], seed_time,
                   stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    wait_line(seeder.stderr, r"ready")
    procs, dirs = [], []
    start = time.time()
    for i, port in enumerate(ports):
        d = os.path.join(work, "lt-out-%d" % i)
        os.makedirs(d, exist_ok=True)
        dirs.append(d)
        peers = ["127.0.0.1:%d" % seed_port] + ["127.0.0.1:%d" % p for j, p in enumerate(ports)
                                                 if j != i]
        procs.append(timed(me + ["--role", "leech", "--port", str(port), "--dir", d,
                                 "--peers"] + peers,
                           os.path.join(work, "lt-leech-%d.time" % i),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    # Each leecher prints one short line: it fits the pipe, so waiting before reading is safe.
    finish = wait_all(procs, start)
    all_done = max(finish)
    outs = [p.communicate()[0] for p in procs]
    seed_out = stop(seeder, signal.SIGINT)[0]
    seed_bytes = json.loads(seed_out.strip().splitlines()[-1])["uploaded"]
    leech = []
    name = os.path.basename(src)
    for i, p in enumerate(procs):
        if p.returncode != 0:
            raise RuntimeError("libtorrent leecher %d failed" % i)
        st = json.loads(outs[i].strip().splitlines()[-1])
        t = read_time(os.path.join(work, "lt-leech-%d.time" % i))
        out = os.path.join(dirs[i], name)
        t.update(peers=None, requests=None, served=st["uploaded"] / (64 * 1024),
                 done=finish[i], verified=same(src, out))
        os.remove(out)
        leech.append(t)
    res = summarise("libtorrent", all_done, leech, read_time(seed_time),
                    seed_bytes / (64 * 1024), unit_bytes=64 * 1024, size=os.path.getsize(src))
    res["piece_kib"] = piece // 1024
    return res


def summarise(name, all_done, leech, seed, seed_units, unit_bytes, size):
    by_leech = sum(l["served"] for l in leech)
    total = by_leech + (seed_units or 0)
    units = size / unit_bytes
    return {
        "impl": name,
        "all_done_s": round(all_done, 3),
        "first_done_s": round(min(l["done"] for l in leech), 3),
        "verified": all(l["verified"] for l in leech),
        "leecher_cpu_s": [round(l["cpu"], 2) for l in leech],
        "leecher_rss_mib": [round(l["rss_mib"], 1) for l in leech],
        "seeder_cpu_s": round(seed["cpu"], 2),
        "seeder_rss_mib": round(seed["rss_mib"], 1),
        # In 64 KiB units (libtorrent: payload bytes uploaded / 64 KiB).
        "served_by_seeder": round(seed_units or 0),
        "served_by_leechers": round(by_leech),
        "from_leechers": round(by_leech / total, 3) if total else None,
        "served_over_needed": round(total / (units * len(leech)), 3),
        # tierswarm: handshakes completed (a connection closed as a duplicate may count too).
        "peers_seen": [l["peers"] for l in leech],
        "requests": [l["requests"] for l in leech],
    }


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    b = sub.add_parser("bench")
    b.add_argument("--bin", required=True, help="the tierswarm binary (release build)")
    b.add_argument("--size-mib", type=int, default=256)
    b.add_argument("--leechers", type=int, default=8)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--runtime", default="tokio")
    b.add_argument("--dir", default="/dev/shm")
    b.add_argument("--only", choices=["tierswarm", "libtorrent"])
    b.add_argument("--json", help="append each result as a JSON line here")
    p = sub.add_parser("lt-peer")
    p.add_argument("--role", choices=["seed", "leech"], required=True)
    p.add_argument("--torrent", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--peers", nargs="*")
    a = ap.parse_args()
    if a.cmd == "lt-peer":
        return lt_peer(a)
    if a.cmd != "bench":
        ap.error("bench or lt-peer")
    work = tempfile.mkdtemp(prefix="swarm-bench-", dir=a.dir)
    src = os.path.join(work, "src", "file.bin")
    os.makedirs(os.path.dirname(src))
    with open(src, "wb") as f:
        for _ in range(a.size_mib):
            f.write(os.urandom(1 << 20))
    results = []
    try:
        for r in range(a.repeats):
            for impl in ("tierswarm", "libtorrent"):
                if a.only and a.only != impl:
                    continue
                run = run_tierswarm if impl == "tierswarm" else run_libtorrent
                res = run(a, src, work)
                res["repeat"] = r + 1
                print(json.dumps(res), flush=True)
                if a.json:
                    open(a.json, "a").write(json.dumps(res) + "\n")
                results.append(res)
    finally:
        subprocess.run(["rm", "-rf", work])
    print("\nsummary (all leechers done, s): median (min-max); spread = (max-min)/median")
    for impl in ("tierswarm", "libtorrent"):
        t = [r["all_done_s"] for r in results if r["impl"] == impl]
        if t:
            med = statistics.median(t)
            ok = all(r["verified"] for r in results if r["impl"] == impl)
            fl = [r["from_leechers"] for r in results if r["impl"] == impl]
            print("%-10s %.2f (%.2f-%.2f) spread %.0f%%, from leechers %s, verified %s"
                  % (impl, med, min(t), max(t), 100 * (max(t) - min(t)) / med, fl, ok))


if __name__ == "__main__":
    main()
