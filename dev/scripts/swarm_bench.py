#!/usr/bin/env python3
"""Real swarms on real sockets (issue 12): one seeder and N leechers as separate processes on
loopback, every leecher also serving, run with tierswarm and with libtorrent 2.x in the same run.

    dev/scripts/swarm-bench.sh [SIZE_MIB] [LEECHERS] [REPEATS]

(the wrapper builds the release CLI and calls this with --bin). Each repeat runs tierswarm and
libtorrent on the same file (random bytes on tmpfs) and topology, in turn, the one that goes first
alternating from repeat to repeat (`--warm` also writes and removes the leechers' total size
twice before the first; `--floor` measures the least CPU any swarm of the shape needs here):

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
peers share 127.0.0.1), piece size chosen by libtorrent for the file, a v1-only torrent unless
`--lt-torrent hybrid` (libtorrent 2.x's own default, slower here: dev/BENCHMARKS.md).

With `--netns` (root, `ip` and `tc` needed; `dev/scripts/netns-swarm.sh` is the wrapper) every
peer runs in a network namespace of its own, `tsnet-h0` (the seeder, 10.77.0.1) and `tsnet-h1`..
(the leechers, 10.77.0.2..), each joined to a bridge `tsnet-br` in the root namespace by a veth
pair, with per-host rate limits from `tc ... tbf`: the upload limit on the host's end of its veth
(inside its namespace), the download limit on the bridge's end (egress towards the host). No
delay is added (this kernel has no `sch_netem`): the round trip is the bridge's, well under a
millisecond. Every peer listens on one port (6881, then 6882, ... run by run) of its own address and
dials the others there.
The namespaces and the bridge are removed at exit. With `--sim BIN` the script also writes a
simulator scenario with the same capacities and file size and runs `BIN run` on it for a few
seeds, and prints the real all-done times beside the simulated makespan and the bounds.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

# libtorrent's Python API marks the file_storage route to a torrent deprecated; it still works.
warnings.filterwarnings("ignore", category=DeprecationWarning)

TIME_FMT = "%e %U %S %M %R %w %c"


LIVE = []


# What a tierswarm fetch leaves beside its output: the store, the proof log, the QUIC key.
TIERSWARM_SIDE_FILES = (".tsa", ".tsp", ".tsk")


def write_random(path, size_mib, fsync=False):
    """Writes `size_mib` MiB of random bytes at `path` (synced to the disk if `fsync`)."""
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def remove_outputs(path, side_files=()):
    """Removes `path` and `path + ext` for each of `side_files`, those that exist."""
    for p in [path] + [path + ext for ext in side_files]:
        if os.path.exists(p):
            os.remove(p)


def timed(cmd, time_out, **kw):
    # A process group of its own: `time` ignores SIGINT while it waits, so a
    # signal meant for the peer goes to the group (see `stop`).
    proc = subprocess.Popen(["/usr/bin/time", "-f", TIME_FMT, "-o", time_out] + cmd,
                            start_new_session=True, **kw)
    LIVE.append(proc)
    return proc


def kill_live():
    """Stops every peer this script started that still runs (after an error or a signal)."""
    for proc in LIVE:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    LIVE.clear()


def stop(proc, sig):
    """Signals the peer under `time` and returns what it printed (stdout, stderr)."""
    os.killpg(proc.pid, sig)
    return proc.communicate(timeout=60)


def read_time(path):
    wall, user, sys_, rss, faults, vol, invol = open(path).read().split()[-7:]
    return {"cpu": float(user) + float(sys_), "rss_mib": int(rss) / 1024,
            "minor_faults": int(faults), "switches": int(vol) + int(invol)}


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
    """`n` consecutive ports that bind now, below the kernel's ephemeral range (a port in it
    may be taken meanwhile by an outgoing connection's local end: "Address already in use")."""
    import socket
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first_ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    while True:
        base = random.randrange(10000, max(10001, first_ephemeral - n))
        ports = list(range(base, base + n))
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return ports


class Loopback:
    """Every peer on 127.0.0.1, each on a port of its own. Host 0 is the seeder."""

    def __init__(self, hosts):
        self.ports = free_ports(hosts)

    def addr(self, host):
        return "127.0.0.1:%d" % self.ports[host]

    def next_run(self):
        self.ports = free_ports(len(self.ports))

    def wrap(self, host, cmd):
        return cmd

    def close(self):
        pass


def sh(*cmd):
    subprocess.run(cmd, check=True)


class Netns:
    """Every peer in a network namespace of its own, the namespaces joined by a bridge through
    veth pairs, each host's upload and download limited by `tc tbf`. Host 0 is the seeder."""

    PREFIX = "tsnet"

    def __init__(self, rates, burst, tbf_latency):
        """`rates`: (upload, download) in Mbit/s per host."""
        if os.geteuid() != 0:
            sys.exit("--netns needs root (network namespaces, veth pairs, tc)")
        for tool in ("ip", "tc"):
            if not shutil.which(tool):
                sys.exit("--netns needs `%s` (iproute2), not found on PATH" % tool)
        if len(rates) > 250:
            sys.exit("--netns: at most 250 hosts (one /24)")
        self.bridge = self.PREFIX + "-br"
        self.names = ["%s-h%d" % (self.PREFIX, h) for h in range(len(rates))]
        existing = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                  text=True).stdout.split()
        stale = ["namespace " + n for n in existing if n.startswith(self.PREFIX + "-")]
        if os.path.exists("/sys/class/net/" + self.bridge):
            stale.append("bridge " + self.bridge)
        if stale:
            sys.exit("--netns: left by another run (or one that was killed): %s; remove them "
                     "with `ip netns del NAME` and `ip link del %s`"
                     % (", ".join(stale), self.bridge))
        self.made = []
        self.port = 6881
        try:
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            self.made.append(("link", self.bridge))
            sh("ip", "link", "set", self.bridge, "up")
            for h, (up, down) in enumerate(rates):
                ns, outer, inner = self.names[h], "%s-v%d" % (self.PREFIX, h), "%s-p%d" % (
                    self.PREFIX, h)
                sh("ip", "netns", "add", ns)
                self.made.append(("netns", ns))
                sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
                self.made.append(("link", outer))
                sh("ip", "link", "set", outer, "master", self.bridge)
                sh("ip", "link", "set", outer, "up")
                sh("ip", "link", "set", inner, "netns", ns)
                sh("ip", "-n", ns, "link", "set", inner, "name", "eth0")
                sh("ip", "-n", ns, "addr", "add", "%s/24" % self.ip(h), "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                # Upload: what leaves the host. Download: what the bridge sends towards it.
                sh("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate",
                   "%gmbit" % up, "burst", burst, "latency", tbf_latency)
                sh("tc", "qdisc", "add", "dev", outer, "root", "tbf", "rate",
                   "%gmbit" % down, "burst", burst, "latency", tbf_latency)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def ip(host):
        return "10.77.0.%d" % (host + 1)

    def addr(self, host):
        return "%s:%d" % (self.ip(host), self.port)

    def next_run(self):
        # A fresh port each run, so no socket of the last one (TIME_WAIT) is in the way.
        self.port += 1

    def wrap(self, host, cmd):
        # `ip netns exec` execs the command: `time` around it measures the peer itself.
        return ["ip", "netns", "exec", self.names[host]] + cmd

    def qdisc_stats(self):
        """Bytes sent and packets dropped by each tbf (upload, download) per host."""
        out = []
        for h, ns in enumerate(self.names):
            pair = []
            for cmd in (["tc", "-s", "-n", ns, "qdisc", "show", "dev", "eth0"],
                        ["tc", "-s", "qdisc", "show", "dev", "%s-v%d" % (self.PREFIX, h)]):
                text = subprocess.run(cmd, capture_output=True, text=True).stdout
                m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+)", text)
                pair.append([int(x) for x in m.groups()] if m else None)
            out.append(pair)
        return out

    def close(self):
        for kind, name in reversed(self.made):
            if kind == "netns":
                subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
            else:
                subprocess.run(["ip", "link", "del", name], stderr=subprocess.DEVNULL)
        self.made = []


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


def run_tierswarm(args, src, work, topo):
    manifest = os.path.join(work, "file.tsm")
    seed_time = os.path.join(work, "ts-seed.time")
    seeder = timed(topo.wrap(0, [
        args.bin, "share", src, "--listen", "tcp://" + topo.addr(0), "--runtime", args.runtime,
        "--manifest-out", manifest]),
        seed_time, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seed_addr = wait_line(seeder.stdout, r"listening on (?:tcp://)?(\S+)").group(1)
    outs, procs = [], []
    start = time.time()
    for i in range(args.leechers):
        out = os.path.join(work, "ts-out-%d" % i)
        outs.append(out)
        peers = ["--peer", "tcp://" + seed_addr]
        for j in range(args.leechers):
            if j != i:
                peers += ["--peer", "tcp://" + topo.addr(j + 1)]
        err = open(os.path.join(work, "ts-leech-%d.err" % i), "w")
        procs.append(timed(topo.wrap(i + 1, [
            args.bin, "fetch", manifest, "--out", out, "--runtime", args.runtime,
            "--listen", "tcp://" + topo.addr(i + 1)] + peers
            + (["--record", os.path.join(work, "rec-%d.jsonl" % i)] if args.record else [])),
            os.path.join(work, "ts-leech-%d.time" % i), stderr=err, stdout=subprocess.DEVNULL))
    finish = wait_all(procs, start)
    all_done = max(finish)
    rest = stop(seeder, signal.SIGINT)[1]
    m = re.search(r"served (\d+) units", rest)
    seed_units = int(m.group(1)) if m else None
    leech = []
    for i, p in enumerate(procs):
        err = open(os.path.join(work, "ts-leech-%d.err" % i)).read()
        m = re.search(r"from (\d+) peers?; (\d+) requests.*served (\d+) units", err)
        refines = re.search(r"(\d+) refinements", err)
        if p.returncode != 0 or not m:
            raise RuntimeError("leecher %d failed (%s):\n%s" % (i, p.returncode, err[-2000:]))
        t = read_time(os.path.join(work, "ts-leech-%d.time" % i))
        t.update(peers=int(m.group(1)), requests=int(m.group(2)), served=int(m.group(3)),
                 refines=int(refines.group(1)) if refines else None,
                 done=finish[i], verified=same(src, outs[i]))
        leech.append(t)
    for o in outs:
        for ext in ("", ".tsa", ".tsp", ".tsk"):
            if os.path.exists(o + ext):
                os.remove(o + ext)
    return summarise("tierswarm", all_done, leech, read_time(seed_time), seed_units,
                     unit_bytes=64 * 1024, size=os.path.getsize(src))


def keep_records(work, res, keep_over):
    """Moves a slow run's flight records and leecher logs out of the work directory (which is
    removed at the end), or deletes them."""
    names = [n for n in os.listdir(work) if n.startswith(("rec-", "ts-leech-"))]
    if keep_over is not None and res["all_done_s"] > keep_over:
        kept = tempfile.mkdtemp(prefix="swarm-records-", dir=os.path.dirname(work))
        for n in names:
            os.rename(os.path.join(work, n), os.path.join(kept, n))
        res["records"] = kept
        print("records of a %.2f s run kept in %s" % (res["all_done_s"], kept), flush=True)
    else:
        for n in names:
            if n.startswith("rec-"):
                os.remove(os.path.join(work, n))


def lt_settings(listen):
    import libtorrent as lt
    s = lt.high_performance_seed()
    s.update({
        "listen_interfaces": listen,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "enable_incoming_utp": False, "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": 0,
    })
    return s


def lt_peer(a):
    """One libtorrent peer (a process of its own): seed until SIGINT, or leech until done."""
    import libtorrent as lt
    ses = lt.session(lt_settings(a.listen))
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


def make_torrent(src, torrent, v1_only=False):
    """Writes a tracker-less .torrent of the file `src` at `torrent`, with the piece size
    libtorrent chooses; returns the piece size in bytes. libtorrent 2.x makes a hybrid (v1 + v2)
    torrent unless `v1_only`."""
    import libtorrent as lt
    fs = lt.file_storage()
    lt.add_files(fs, src)
    t = lt.create_torrent(fs, 0, lt.create_torrent.v1_only) if v1_only else lt.create_torrent(fs)
    lt.set_piece_hashes(t, os.path.dirname(src))
    open(torrent, "wb").write(lt.bencode(t.generate()))
    return lt.torrent_info(torrent).piece_length()


def run_libtorrent(args, src, work, topo):
    torrent = os.path.join(work, "file.torrent")
    piece = make_torrent(src, torrent, v1_only=args.lt_torrent == "v1")
    me = [sys.executable, os.path.abspath(__file__), "lt-peer", "--torrent", torrent]
    seed_time = os.path.join(work, "lt-seed.time")
    seeder = timed(topo.wrap(0, me + ["--role", "seed", "--listen", topo.addr(0), "--dir",
                                      os.path.dirname(src)]), seed_time,
                   stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    wait_line(seeder.stderr, r"ready")
    procs, dirs = [], []
    start = time.time()
    for i in range(args.leechers):
        d = os.path.join(work, "lt-out-%d" % i)
        os.makedirs(d, exist_ok=True)
        dirs.append(d)
        peers = [topo.addr(0)] + [topo.addr(j + 1) for j in range(args.leechers) if j != i]
        procs.append(timed(topo.wrap(i + 1, me + ["--role", "leech", "--listen",
                                                  topo.addr(i + 1), "--dir", d,
                                                  "--peers"] + peers),
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


def warm_memory(work, mib):
    """Writes `mib` MiB into the run's directory and removes it, twice: the first run on a fresh
    VM otherwise pays for memory the host has not backed yet (fresh pages cost 5-8x more to
    write there: dev/BENCHMARKS.md, "Against what one thread can do")."""
    path = os.path.join(work, "warm.bin")
    for _ in range(2):
        subprocess.run(["dd", "if=/dev/zero", "of=" + path, "bs=1M", "count=%d" % mib,
                        "status=none"], check=True)
        os.remove(path)


def cpu_of(time_file):
    user, sys_ = open(time_file).read().split()[-2:]
    return float(user) + float(sys_)


def floor(src, work, leechers, size_mib):
    """The least CPU any swarm of this topology spends on this machine, measured in the same run by
    programs that do only the work every byte needs, and the time that CPU takes on all cores.

    Each of the N leechers ends with the whole file, so N x SIZE bytes are, at least once each:
    read from some sender's page cache and written into a new file on the same filesystem (N `dd`s
    in parallel, 64 KiB blocks, `src` into new files: both copies, with the fresh pages a download
    takes); sent and received over loopback TCP (`iperf3 -n N x SIZE`, CPU of both ends: the two
    socket copies and TCP); hashed once (BLAKE3 on one thread over bytes in memory, Python's
    `blake3` package, the same Rust crate; libtorrent hashes SHA-1, dearer). Nothing else is
    counted: no protocol, no proofs, no scheduling, perfect use of every core. `floor_s` is that
    CPU over the machine's cores: no swarm here finishes sooner (dev/BENCHMARKS.md, "The swarm's
    floor")."""
    total_mib = leechers * size_mib
    # Read and write: N copies of the file, in parallel, into new files.
    outs = [os.path.join(work, "floor-%d.bin" % i) for i in range(leechers)]
    tfile = os.path.join(work, "floor-dd.time")
    script = " ".join("dd if=%s of=%s bs=64K status=none &" % (src, o) for o in outs) + " wait"
    subprocess.run(["/usr/bin/time", "-f", "%U %S", "-o", tfile, "sh", "-c", script], check=True)
    copy_cpu = cpu_of(tfile)
    for o in outs:
        os.remove(o)
    # TCP: both ends of one iperf3 stream carrying the same bytes.
    port = free_ports(1)[0]
    sfile, cfile = os.path.join(work, "floor-iperf-s.time"), os.path.join(work, "floor-iperf-c.time")
    srv = subprocess.Popen(["/usr/bin/time", "-f", "%U %S", "-o", sfile, "iperf3", "-s", "-1",
                            "-B", "127.0.0.1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):  # until it listens (a probe connection would end a one-off server)
        if subprocess.run(["ss", "-Hltn", "sport = :%d" % port],
                          capture_output=True, text=True).stdout.strip():
            break
        time.sleep(0.01)
    subprocess.run(["/usr/bin/time", "-f", "%U %S", "-o", cfile, "iperf3", "-c", "127.0.0.1",
                    "-p", str(port), "-n", "%dM" % total_mib],
                   check=True, stdout=subprocess.DEVNULL)
    srv.wait(timeout=60)
    tcp_cpu = cpu_of(sfile) + cpu_of(cfile)
    # Hash: once per byte received, one thread.
    out = subprocess.run([sys.executable, "-c", (
        "import blake3, sys, time\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "t = time.thread_time()\n"
        "for _ in range(int(sys.argv[2])): blake3.blake3(data).digest()\n"
        "print(time.thread_time() - t)"), src, str(leechers)],
        check=True, capture_output=True, text=True).stdout
    hash_cpu = float(out)
    cpu = copy_cpu + tcp_cpu + hash_cpu
    return {"impl": "floor", "copy_cpu_s": round(copy_cpu, 3), "tcp_cpu_s": round(tcp_cpu, 3),
            "hash_cpu_s": round(hash_cpu, 3), "cpu_s": round(cpu, 3),
            "cores": os.cpu_count(), "floor_s": round(cpu / os.cpu_count(), 3)}


def summarise(name, all_done, leech, seed, seed_units, unit_bytes, size):
    by_leech = sum(l["served"] for l in leech)
    total = by_leech + (seed_units or 0)
    units = size / unit_bytes
    return {
        "impl": name,
        "all_done_s": round(all_done, 3),
        "first_done_s": round(min(l["done"] for l in leech), 3),
        "leecher_done_s": sorted(round(l["done"], 2) for l in leech),
        "verified": all(l["verified"] for l in leech),
        "leecher_cpu_s": [round(l["cpu"], 2) for l in leech],
        "leecher_rss_mib": [round(l["rss_mib"], 1) for l in leech],
        "seeder_cpu_s": round(seed["cpu"], 2),
        "seeder_rss_mib": round(seed["rss_mib"], 1),
        # Minor page faults and context switches (voluntary + involuntary), from `time`.
        "leecher_faults": [l["minor_faults"] for l in leech],
        "leecher_switches": [l["switches"] for l in leech],
        "seeder_faults": seed["minor_faults"],
        "seeder_switches": seed["switches"],
        # In 64 KiB units (libtorrent: payload bytes uploaded / 64 KiB).
        "served_by_seeder": round(seed_units or 0),
        # Copies of the file the seeder sent (1 at best when it is the bottleneck).
        "seeder_copies": round((seed_units or 0) / units, 2),
        "served_by_leechers": round(by_leech),
        "from_leechers": round(by_leech / total, 3) if total else None,
        "served_over_needed": round(total / (units * len(leech)), 3),
        # tierswarm: handshakes completed (a connection closed as a duplicate may count too).
        "peers_seen": [l["peers"] for l in leech],
        "requests": [l["requests"] for l in leech],
        # tierswarm: refine requests sent (builds before 2026-12-06 do not print them: None).
        "refines": [l.get("refines") for l in leech],
    }


TCP_PAYLOAD = 1448 / 1514  # payload of a full frame: MTU 1500, TCP timestamps, Ethernet header


def sim_scenario(a):
    """The simulator's scenario for the netns topology: same file, hosts and capacities."""
    return """# Written by dev/scripts/swarm_bench.py --netns --sim: the netns swarm's capacities.
name = "netns-swarm"
file_size = "%dMiB"
seed = 1
time_limit = "30m"

[[group]]
name = "seed"
count = 1
role = "seeder"
upload = "%gMbit/s"
download = "%gMbit/s"
latency = "%s"

[[group]]
name = "leechers"
count = %d
role = "leecher"
upload = "%gMbit/s"
download = "%gMbit/s"
latency = "%s"
""" % (a.size_mib, a.seed_up, a.seed_down, a.sim_latency, a.leechers, a.leech_up,
       a.leech_down, a.sim_latency)


def run_sim(a, work):
    path = a.scenario_out or os.path.join(work, "netns-swarm.toml")
    open(path, "w").write(sim_scenario(a))
    runs = []
    for seed in range(1, a.sim_seeds + 1):
        out = os.path.join(work, "sim-%d.json" % seed)
        subprocess.run([a.sim, "run", path, "--seed", str(seed), "--json", out], check=True,
                       stdout=subprocess.DEVNULL)
        rep = json.load(open(out))
        runs.append({k: rep[k] for k in ("seed", "makespan_s", "bound_s", "bound_kr_s",
                                         "bound_fluid_s", "efficiency", "duplicate_units")})
    return path, runs


def link_stats(before, after):
    """Per host, MiB sent through its upload and its download tbf, and packets they dropped."""
    up, down, drops = [], [], 0
    for b, e in zip(before, after):
        up.append(round((e[0][0] - b[0][0]) / 2**20, 1))
        down.append(round((e[1][0] - b[1][0]) / 2**20, 1))
        drops += (e[0][2] - b[0][2]) + (e[1][2] - b[1][2])
    return {"link_up_mib": up, "link_down_mib": down, "link_drops": drops}


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
    b.add_argument("--lt-torrent", choices=["v1", "hybrid"], default="v1",
                   help="libtorrent's torrent: v1 only (its faster setting here, the default) "
                        "or libtorrent 2.x's own default, hybrid v1 + v2")
    b.add_argument("--json", help="append each result as a JSON line here")
    b.add_argument("--warm", action="store_true",
                   help="before the first repeat, write and remove as much as the leechers will "
                   "write (twice), so that no run pays for memory the VM has not backed yet")
    b.add_argument("--floor", action="store_true",
                   help="after each repeat, measure the least CPU any swarm of this topology "
                   "needs here (copies, loopback TCP, one hash per byte; needs iperf3 and "
                   "Python's blake3) and the time it takes on all cores")
    b.add_argument("--netns", action="store_true",
                   help="every peer in a network namespace of its own, rate-limited (root)")
    b.add_argument("--seed-up", type=float, default=100, help="Mbit/s (--netns)")
    b.add_argument("--seed-down", type=float, default=100, help="Mbit/s (--netns)")
    b.add_argument("--leech-up", type=float, default=20, help="Mbit/s (--netns)")
    b.add_argument("--leech-down", type=float, default=100, help="Mbit/s (--netns)")
    b.add_argument("--burst", default="64kb", help="tbf burst (--netns; tc units, kb = KiB)")
    b.add_argument("--tbf-latency", default="50ms", help="tbf queue, in time (--netns)")
    b.add_argument("--sim", help="the tierswarm-sim binary: run the same capacities (--netns)")
    b.add_argument("--sim-seeds", type=int, default=3)
    b.add_argument("--sim-latency", default="100us", help="each host's latency in the scenario")
    b.add_argument("--scenario-out", help="keep the generated scenario here")
    b.add_argument("--record", action="store_true",
                   help="every tierswarm leecher writes a flight record (fetch --record; "
                        "`tierswarm replay` checks it); deleted after each run unless --keep-over")
    b.add_argument("--keep-over", type=float,
                   help="with --record: keep a run's records and leecher logs (set RUST_LOG=info "
                        "for connection events) when all leechers took longer than this many s")
    p = sub.add_parser("lt-peer")
    p.add_argument("--role", choices=["seed", "leech"], required=True)
    p.add_argument("--torrent", required=True)
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--dir", required=True)
    p.add_argument("--peers", nargs="*")
    a = ap.parse_args()
    if a.cmd == "lt-peer":
        return lt_peer(a)
    if a.cmd != "bench":
        ap.error("bench or lt-peer")
    if a.sim and not a.netns:
        ap.error("--sim compares with the rate-limited swarm: it needs --netns")
    if a.floor and a.netns:
        ap.error("--floor measures the loopback swarm's floor (CPU on this host): not with --netns")
    # A signal ends the run through the `finally`s below (peers, namespaces, files).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    if a.netns:
        topo = Netns([(a.seed_up, a.seed_down)] + [(a.leech_up, a.leech_down)] * a.leechers,
                     a.burst, a.tbf_latency)
    else:
        topo = Loopback(a.leechers + 1)
    work = tempfile.mkdtemp(prefix="swarm-bench-", dir=a.dir)
    results, sim = [], None
    try:
        src = os.path.join(work, "src", "file.bin")
        os.makedirs(os.path.dirname(src))
        write_random(src, a.size_mib)
        if a.sim:
            scenario, sim = run_sim(a, work)
            print("simulator (%s): %s" % (scenario, json.dumps(sim)), flush=True)
        if a.warm:
            warm_memory(work, a.leechers * a.size_mib)
        for r in range(a.repeats):
            # Who goes first alternates: the first run after files were removed pays for memory
            # the VM handed back (dev/BENCHMARKS.md, "The spread, narrowed").
            order = ("tierswarm", "libtorrent") if r % 2 == 0 else ("libtorrent", "tierswarm")
            for impl in order:
                if a.only and a.only != impl:
                    continue
                run = run_tierswarm if impl == "tierswarm" else run_libtorrent
                topo.next_run()
                before = topo.qdisc_stats() if a.netns else None
                res = run(a, src, work, topo)
                if a.netns:
                    res.update(link_stats(before, topo.qdisc_stats()))
                res["repeat"] = r + 1
                res["load"] = [round(x, 2) for x in os.getloadavg()]
                print(json.dumps(res), flush=True)
                if a.json:
                    open(a.json, "a").write(json.dumps(res) + "\n")
                if a.record and impl == "tierswarm":
                    keep_records(work, res, a.keep_over)
                results.append(res)
            if a.floor:
                res = floor(src, work, a.leechers, a.size_mib)
                res["repeat"] = r + 1
                print(json.dumps(res), flush=True)
                if a.json:
                    open(a.json, "a").write(json.dumps(res) + "\n")
                results.append(res)
    finally:
        kill_live()
        topo.close()
        subprocess.run(["rm", "-rf", work])
    print("\nsummary (all leechers done, s): median (min-max); spread = (max-min)/median")
    med = {}
    for impl in ("tierswarm", "libtorrent"):
        t = [r["all_done_s"] for r in results if r["impl"] == impl]
        if t:
            med[impl] = statistics.median(t)
            ok = all(r["verified"] for r in results if r["impl"] == impl)
            fl = [r["from_leechers"] for r in results if r["impl"] == impl]
            print("%-10s %.2f (%.2f-%.2f) spread %.0f%%, from leechers %s, verified %s"
                  % (impl, med[impl], min(t), max(t), 100 * (max(t) - min(t)) / med[impl], fl,
                     ok))
    if len(med) == 2:
        print("libtorrent / tierswarm: %.2f" % (med["libtorrent"] / med["tierswarm"]))
    fl = [r for r in results if r["impl"] == "floor"]
    if fl:
        f = statistics.median(r["floor_s"] for r in fl)
        print("floor      %.2f (%.2f-%.2f) s: CPU %.2f s (copies %.2f, TCP %.2f, hash %.2f) on %d "
              "cores" % (f, min(r["floor_s"] for r in fl), max(r["floor_s"] for r in fl),
                         statistics.median(r["cpu_s"] for r in fl),
                         statistics.median(r["copy_cpu_s"] for r in fl),
                         statistics.median(r["tcp_cpu_s"] for r in fl),
                         statistics.median(r["hash_cpu_s"] for r in fl), fl[0]["cores"]))
        for impl, t in med.items():
            cpu = [sum(r["leecher_cpu_s"]) + r["seeder_cpu_s"] for r in results
                   if r["impl"] == impl]
            print("%-10s %.2f of the floor's time, %.2f of its CPU" %
                  (impl, t / f, statistics.median(cpu) / statistics.median(r["cpu_s"] for r in fl)))
    if sim:
        span = statistics.median(x["makespan_s"] for x in sim)
        bound, kr = sim[0]["bound_s"], sim[0]["bound_kr_s"]
        print("simulator: makespan median %.2f (%.2f-%.2f) over %d seeds, bound_s %.2f, "
              "bound_kr_s %.2f; bound at TCP payload rate (x%.4f) %.2f"
              % (span, min(x["makespan_s"] for x in sim), max(x["makespan_s"] for x in sim),
                 len(sim), bound, kr, 1 / TCP_PAYLOAD, bound / TCP_PAYLOAD))
        for impl, t in med.items():
            print("%-10s / simulated makespan %.2f, / bound %.2f, / bound at TCP payload %.2f"
                  % (impl, t / span, t / bound, t * TCP_PAYLOAD / bound))


if __name__ == "__main__":
    main()
