#!/usr/bin/env python3
"""One file, one seeder, one leecher, on the ordinary disk: tierswarm against libtorrent 2.x and
rqbit in the same run (issue 12, done-when 2: the same 1 GiB transfer on the ordinary disk at
least 4x the rate of the faster of libtorrent and rqbit).

    dev/scripts/disk-bench.sh [SIZE_MIB=1024] [REPEATS=3] [extra args...]

(the wrapper builds the release CLI and calls this with --bin). The source (random bytes, written
once and synced) and every output live under --dir, which must be a real disk: the script
refuses tmpfs. Each repeat runs tierswarm, then libtorrent, then rqbit (interleaved), each as:

- the seeder starts and the script waits until it serves: tierswarm `share` printed its
  `listening on` line (after hashing the file); the libtorrent peer (`swarm_bench.py lt-peer`,
  seed mode, no check) reports seeding; rqbit (`rqbit download --overwrite` on the source's
  directory: it checks every piece of the existing file) says `live` and `finished` on its
  HTTP API;
- `sync` and `echo 3 > /proc/sys/vm/drop_caches` (recorded whether it worked: without it, the
  source is in the page cache for every implementation alike after its first read), then the
  leecher's program is read back into the cache (its executable; for libtorrent the interpreter,
  the module and what the peer imports), so that the leecher's start does not read the disk;
- the clock starts and the leecher process starts; "done" is when the leecher has the whole file
  verified: tierswarm `fetch` exits 0 (it fsyncs the output and hashes all of it against the
  root before it exits); the libtorrent peer prints its final line once the torrent is seeding
  (every piece hash-checked on arrival; no fsync); rqbit `download --exit-on-finish` logs
  `All downloads completed` (every piece hash-checked; no fsync). The leecher's exit is
  recorded too;
- after the leecher exited, the script fsyncs the output and records how long that took:
  exit + that is when the file is on the disk for every implementation (`durable_s`);
- every process runs under `/usr/bin/time` (CPU user+system, peak RSS); a seeder's CPU during
  the transfer alone (its start-up hashing excluded) comes from /proc before it is stopped;
  the disk's sectors read and written (all processes, /proc/diskstats) from the start of the
  leecher to its exit, and written from its exit to the end of the fsync;
- the output is compared with the source byte for byte (`cmp`), a mismatch fails the run, and
  is removed.

Each repeat ends with a reference, `copy`: no peers, the disk copying the file by itself
(`dd bs=1M conv=fsync`, cache dropped first, timed to its exit), i.e. what reading the source
cold and writing the output durably cost on this disk, one block after the other (`--no-copy`
leaves it out).

libtorrent: the `high_performance_seed` settings pack, TCP only (swarm_bench.py's `lt_settings`
and `lt-peer`). rqbit: both ends `rqbit download` with DHT, LSD, trackers and UPnP off, TCP only,
on 127.0.0.1; the leecher is given the seeder with `--initial-peers`. Both use the same .torrent,
made by libtorrent's Python API with the piece size libtorrent chooses, v1 only by default
(rqbit uses only the v1 part of a hybrid torrent, and a hybrid one makes libtorrent hash SHA-256
blocks on top of SHA-1 pieces: the stronger libtorrent is the one measured; `--hybrid` for
libtorrent's default format). Prints each transfer as JSON, then
per implementation the median rate and range, and tierswarm / max(libtorrent, rqbit).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import swarm_bench as sb

IMPLS = ("tierswarm", "libtorrent", "rqbit", "copy")
CLK = os.sysconf("SC_CLK_TCK")


class Lines:
    """Reads a process's text stream on a thread, noting when each line arrived."""

    def __init__(self, stream):
        self.lines, self.eof = [], False
        self.cond = threading.Condition()
        threading.Thread(target=self._run, args=(stream,), daemon=True).start()

    def _run(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append((time.time(), line))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait(self, text, limit=600):
        """The time the first line containing `text` arrived (None: the stream ended first)."""
        deadline = time.time() + limit
        with self.cond:
            while True:
                for t, line in self.lines:
                    if text in line:
                        return t
                if self.eof:
                    return None
                if time.time() > deadline:
                    raise RuntimeError("timeout waiting for %r" % text)
                self.cond.wait(0.5)

    def text(self):
        with self.cond:
            return "".join(line for _, line in self.lines)


def drop_caches():
    """Writes dirty pages back and drops the page cache; returns whether that worked."""
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def warm(a, impl):
    """Reads the leecher's program back into the page cache (after a drop), so that the timed
    transfer reads the source from the disk but not the program: its executable and, for
    libtorrent, the interpreter with every module the peer imports."""
    if impl == "copy":
        return
    if impl == "libtorrent":
        import libtorrent
        here = os.path.dirname(os.path.abspath(sb.__file__))
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                        "import swarm_bench, libtorrent" % here], check=True)
        files = [sys.executable, libtorrent.__file__]
    else:
        exe = a.bin if impl == "tierswarm" else a.rqbit
        subprocess.run([exe, "--version"], check=True, stdout=subprocess.DEVNULL)
        files = [exe]
    for f in files:
        with open(os.path.realpath(f), "rb") as fh:
            while fh.read(1 << 20):
                pass


def disk_of(path):
    """The block device under `path` (as /proc/diskstats names it) and the file system type."""
    fstype = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                            text=True).stdout.strip()
    src = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "--target", path],
                         capture_output=True, text=True).stdout.strip()
    return os.path.basename(src), fstype


def disk_sectors(dev):
    """(sectors read, sectors written) of `dev` so far, 512 bytes each."""
    for line in open("/proc/diskstats"):
        f = line.split()
        if f[2] == dev:
            return int(f[5]), int(f[9])
    return None


def child_cpu(timed_proc):
    """CPU seconds (user+system) so far of the process `/usr/bin/time` runs for us."""
    try:
        pid = int(open("/proc/%d/task/%d/children" % (timed_proc.pid, timed_proc.pid))
                  .read().split()[0])
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK
    except (OSError, IndexError, ValueError):
        return None


def fsync_path(path):
    t = time.time()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.time() - t


def wait_exit(proc, start):
    return sb.wait_all([proc], start)[0]


def start_tierswarm(a, src, work, port):
    manifest = os.path.join(work, "file.tsm")
    seeder = sb.timed([a.bin, "share", src, "--listen", "tcp://127.0.0.1:%d" % port,
                       "--runtime", a.runtime, "--manifest-out", manifest],
                      os.path.join(work, "seed.time"), stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    url = sb.wait_line(seeder.stdout, r"listening on (\S+)", limit=600).group(1)
    out = os.path.join(work, "out", "ts.bin")

    def leech(start):
        err = open(os.path.join(work, "leech.err"), "w")
        p = sb.timed([a.bin, "fetch", manifest, "--peer", url, "--out", out, "--runtime",
                      a.runtime], os.path.join(work, "leech.time"), stdout=subprocess.DEVNULL,
                     stderr=err)
        exit_s = wait_exit(p, start)
        if p.returncode != 0:
            raise RuntimeError("tierswarm fetch failed (%s):\n%s" % (
                p.returncode, open(err.name).read()[-2000:]))
        # fetch exits once the output is fsynced and hashed to the root: done = exit.
        return exit_s, exit_s

    return seeder, out, leech, lambda: sb.remove_outputs(out, sb.TIERSWARM_SIDE_FILES)


def start_libtorrent(a, src, work, port, torrent):
    me = [sys.executable, os.path.abspath(sb.__file__), "lt-peer", "--torrent", torrent]
    seeder = sb.timed(me + ["--role", "seed", "--listen", "127.0.0.1:%d" % port, "--dir",
                            os.path.dirname(src)], os.path.join(work, "seed.time"),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sb.wait_line(seeder.stderr, r"ready", limit=600)
    d = os.path.join(work, "out")
    out = os.path.join(d, os.path.basename(src))

    def leech(start):
        p = sb.timed(me + ["--role", "leech", "--listen", "127.0.0.1:%d" % (port + 1), "--dir",
                           d, "--peers", "127.0.0.1:%d" % port],
                     os.path.join(work, "leech.time"), stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True)
        lines = Lines(p.stdout)
        # The peer prints its stats line as soon as the torrent is seeding (every piece
        # checked), before the session is torn down.
        done = lines.wait('"uploaded"')
        exit_s = wait_exit(p, start)
        if p.returncode != 0 or done is None:
            raise RuntimeError("libtorrent leecher failed (%s)" % p.returncode)
        return done - start, exit_s

    return seeder, out, leech, lambda: sb.remove_outputs(out)


def rqbit_cmd(a, port, extra):
    return [a.rqbit, "--disable-dht", "--disable-dht-persistence", "--disable-lsd",
            "--disable-trackers", "--disable-upnp-port-forward", "--listen-ip", "127.0.0.1",
            "--listen-port", str(port)] + extra


def start_rqbit(a, src, work, port, torrent):
    api = port + 2
    log = open(os.path.join(work, "rqbit-seed.log"), "w")
    seeder = sb.timed(rqbit_cmd(a, port, ["--http-api-listen-addr", "127.0.0.1:%d" % api,
                                          "download", torrent, "--overwrite", "-o",
                                          os.path.dirname(src)]),
                      os.path.join(work, "seed.time"), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while True:
        try:
            st = json.load(urllib.request.urlopen(
                "http://127.0.0.1:%d/torrents/0/stats/v1" % api, timeout=2))
            if st.get("state") == "live" and st.get("finished"):
                break
            if st.get("error"):
                raise RuntimeError("rqbit seeder: %s" % st["error"])
        except OSError:
            pass
        if seeder.poll() is not None:
            raise RuntimeError("rqbit seeder exited:\n%s"
                               % open(log.name).read()[-2000:])
        if time.time() > deadline:
            raise RuntimeError("rqbit seeder not ready")
        time.sleep(0.1)
    d = os.path.join(work, "out")
    out = os.path.join(d, os.path.basename(src))

    def leech(start):
        p = sb.timed(rqbit_cmd(a, port + 1, ["download", torrent, "-o", d, "--exit-on-finish",
                                             "--disable-http-api", "--initial-peers",
                                             "127.0.0.1:%d" % port]),
                     os.path.join(work, "leech.time"), stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, text=True)
        lines = Lines(p.stdout)
        done = lines.wait("All downloads completed")
        exit_s = wait_exit(p, start)
        open(os.path.join(work, "rqbit-leech.log"), "w").write(lines.text())
        if p.returncode != 0 or done is None:
            raise RuntimeError("rqbit leecher failed (%s):\n%s"
                               % (p.returncode, lines.text()[-2000:]))
        return done - start, exit_s

    return seeder, out, leech, lambda: sb.remove_outputs(out)


def start_copy(a, src, work):
    """The reference: the disk copying the file by itself (`dd ... conv=fsync`: sequential
    1 MiB reads and writes, one thread, then an fsync), no seeder."""
    out = os.path.join(work, "out", "copy.bin")

    def leech(start):
        p = sb.timed(["dd", "if=" + src, "of=" + out, "bs=1M", "conv=fsync"],
                     os.path.join(work, "leech.time"), stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
        exit_s = wait_exit(p, start)
        if p.returncode != 0:
            raise RuntimeError("dd failed (%s)" % p.returncode)
        return exit_s, exit_s

    return None, out, leech, lambda: sb.remove_outputs(out)


def transfer(a, impl, src, work, torrent, dev):
    """One seeder, one leecher; returns the measurements of the transfer."""
    port = sb.free_ports(3)[0]
    os.makedirs(os.path.join(work, "out"), exist_ok=True)
    if impl == "tierswarm":
        seeder, out, leech, clean = start_tierswarm(a, src, work, port)
    elif impl == "libtorrent":
        seeder, out, leech, clean = start_libtorrent(a, src, work, port, torrent)
    elif impl == "rqbit":
        seeder, out, leech, clean = start_rqbit(a, src, work, port, torrent)
    else:
        seeder, out, leech, clean = start_copy(a, src, work)
    try:
        dropped = drop_caches()
        warm(a, impl)
        load = os.getloadavg()[0]
        seed_cpu0 = child_cpu(seeder) if seeder else None
        disk0 = disk_sectors(dev)
        start = time.time()
        done_s, exit_s = leech(start)
        disk1 = disk_sectors(dev)
        fsync_s = fsync_path(out)
        disk2 = disk_sectors(dev)
        seed_cpu1 = child_cpu(seeder) if seeder else None
        if seeder:
            sb.stop(seeder, signal.SIGINT)
        verified = sb.same(src, out)
    finally:
        sb.kill_live()
        clean()
    size = os.path.getsize(src)
    lt_ = sb.read_time(os.path.join(work, "leech.time"))
    st = (sb.read_time(os.path.join(work, "seed.time")) if seeder
          else {"cpu": None, "rss_mib": None})
    res = {
        "impl": impl,
        "done_s": round(done_s, 3),
        "mib_s": round(size / 2**20 / done_s, 1),
        "exit_s": round(exit_s, 3),
        # After the leecher exited: fsync of the output (tierswarm synced before it exited).
        "fsync_after_s": round(fsync_s, 3),
        "durable_s": round(exit_s + fsync_s, 3),
        "verified": verified,
        "leecher_cpu_s": round(lt_["cpu"], 2),
        "leecher_rss_mib": round(lt_["rss_mib"], 1),
        "seeder_cpu_s": round(st["cpu"], 2) if seeder else None,
        "seeder_cpu_transfer_s": (round(seed_cpu1 - seed_cpu0, 2)
                                  if None not in (seed_cpu0, seed_cpu1) else None),
        "seeder_rss_mib": round(st["rss_mib"], 1) if seeder else None,
        "disk_read_mib": round((disk1[0] - disk0[0]) * 512 / 2**20) if disk0 else None,
        "disk_written_mib": round((disk1[1] - disk0[1]) * 512 / 2**20) if disk0 else None,
        # Written between the leecher's exit and the end of the fsync above.
        "disk_written_fsync_mib": (round((disk2[1] - disk1[1]) * 512 / 2**20)
                                   if disk0 else None),
        "cache_dropped": dropped,
        "load_at_start": round(load, 2),
    }
    if not verified:
        raise RuntimeError("%s: the output differs from the source: %s" % (impl, res))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the tierswarm binary (release build)")
    ap.add_argument("--rqbit", default=os.environ.get("RQBIT"),
                    help="the rqbit binary (default $RQBIT); without it, rqbit is skipped")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runtime", default="tokio", help="tierswarm's runtime")
    ap.add_argument("--dir", default="/var/tmp",
                    help="a directory on the disk to measure (not tmpfs)")
    ap.add_argument("--only", action="append", choices=IMPLS, help="repeatable")
    ap.add_argument("--hybrid", action="store_true",
                    help="a hybrid v1+v2 torrent (libtorrent's default) instead of v1 only")
    ap.add_argument("--no-copy", action="store_true",
                    help="without the reference copy (dd conv=fsync) in each repeat")
    ap.add_argument("--json", help="append each transfer as a JSON line here")
    a = ap.parse_args()
    impls = [i for i in IMPLS if (not a.only or i in a.only)
             and (i != "rqbit" or a.rqbit) and (i != "copy" or not a.no_copy)]
    if "rqbit" not in impls and not a.only:
        print("rqbit skipped: no --rqbit (or $RQBIT) given", flush=True)
    dev, fstype = disk_of(a.dir)
    if fstype in ("tmpfs", "ramfs"):
        sys.exit("%s is on %s: give --dir on the disk to measure" % (a.dir, fstype))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    work = tempfile.mkdtemp(prefix="disk-bench-", dir=a.dir)
    results = []
    try:
        src = os.path.join(work, "src", "file.bin")
        os.makedirs(os.path.dirname(src))
        sb.write_random(src, a.size_mib, fsync=True)
        torrent = os.path.join(work, "file.torrent")
        piece = sb.make_torrent(src, torrent, v1_only=not a.hybrid)
        versions = {"libtorrent": __import__("libtorrent").__version__}
        if a.rqbit:
            versions["rqbit"] = subprocess.run([a.rqbit, "--version"], capture_output=True,
                                               text=True).stdout.strip()
        print(json.dumps({"dir": a.dir, "device": dev, "fs": fstype, "size_mib": a.size_mib,
                          "piece_kib": piece // 1024, "torrent": "hybrid" if a.hybrid
                          else "v1", "versions": versions}), flush=True)
        for r in range(a.repeats):
            for impl in impls:
                res = transfer(a, impl, src, work, torrent, dev)
                res["repeat"] = r + 1
                res["piece_kib"] = piece // 1024
                res["load"] = [round(x, 2) for x in os.getloadavg()]
                print(json.dumps(res), flush=True)
                if a.json:
                    open(a.json, "a").write(json.dumps(res) + "\n")
                results.append(res)
    finally:
        sb.kill_live()
        subprocess.run(["rm", "-rf", work])
    print("\nsummary: MiB/s to done, median (min-max); spread = (max-min)/median; seconds")
    med = {}
    for impl in impls:
        rs = [r for r in results if r["impl"] == impl]
        if not rs:
            continue
        v = [r["mib_s"] for r in rs]
        med[impl] = statistics.median(v)
        print("%-10s %6.0f (%.0f-%.0f) spread %3.0f%%  done %s  durable %s  leecher CPU %s  "
              "seeder CPU %s  verified %s"
              % (impl, med[impl], min(v), max(v), 100 * (max(v) - min(v)) / med[impl],
                 [r["done_s"] for r in rs], [r["durable_s"] for r in rs],
                 [r["leecher_cpu_s"] for r in rs], [r["seeder_cpu_transfer_s"] for r in rs],
                 all(r["verified"] for r in rs)))
    others = [med[i] for i in ("libtorrent", "rqbit") if i in med]
    if "tierswarm" in med and others:
        best = max(others)
        print("tierswarm / max(%s): %.2f (done-when 2 asks for >= 4)"
              % (", ".join(i for i in ("libtorrent", "rqbit") if i in med),
                 med["tierswarm"] / best))
    if "tierswarm" in med and "copy" in med:
        print("tierswarm / the disk's own copy (dd conv=fsync): %.2f"
              % (med["tierswarm"] / med["copy"]))


if __name__ == "__main__":
    main()
