#!/usr/bin/env python3
"""Where a unit waits: per-unit timestamps of both ends of one fetch (issue 12, third pass).

    git apply dev/scripts/unit-trace.patch     # an experiment build, not for main
    cargo build --release -p tierswarm-cli
    TIERSWARM_UTRACE=/dev/shm/ut.share tierswarm share src.bin ... &   # SIGINT it after the fetch
    TIERSWARM_UTRACE=/dev/shm/ut.fetch tierswarm fetch ...
    dev/scripts/unit_trace.py /dev/shm/ut.fetch.PID /dev/shm/ut.share.PID

The patch stamps (wall clock, ns; both processes on one machine) each unit at: req (fetch: the
REQUEST leaves the core), RQ (seeder: its reader cut the frame), rq (seeder loop got it), sv
(seeder: TRANSFER handed to the writer), wr (written to the socket), st (seeder loop got the
writer's report: the upload slot is free), RX (fetch: reader cut the TRANSFER), rx (fetch
loop: the request is settled here and its window room freed), vs (handed to a verify worker),
vb (worker began), vd (verified and written), vl (loop: UnitComplete fed to the core); 'end'
and 'ver' bracket the final whole-file check. Prints each stage's latency, its mean occupancy
(Little's law: units waiting there on average), the gaps between units at each stage, and the
requests in flight each time one is sent (the window actually used). It also lets
TIERSWARM_LIMITS='{"min_window":16}' (JSON, merged over the session's limits) set limits.
"""
import sys, collections, statistics as st
def load(p):
    d=collections.defaultdict(dict); ends={}
    for line in open(p):
        t,u,ts=line.split(); u=int(u); ts=int(ts)
        if t in('end','ver'): ends[t]=ts; continue
        d[t].setdefault(u,ts)   # first occurrence
    return d,ends
f,fe=load(sys.argv[1]); s,se=load(sys.argv[2])
M=f.keys()|s.keys()
merged={**f,**s}
units=sorted(f['vl'].keys())
print("units",len(units))
t0=min(f['req'].values()); t1=max(f['vl'].values())
print("transfer span %.3f s, end->ver %.3f s"%((t1-t0)/1e9,(fe['ver']-fe['end'])/1e9))
def lat(a,b):
    xs=[(merged[b][u]-merged[a][u])/1e3 for u in units if u in merged[a] and u in merged[b]]
    xs.sort()
    if not xs: return
    n=len(xs)
    print("%4s->%-4s n=%5d p10 %8.1f p50 %8.1f p90 %8.1f mean %8.1f us"%(a,b,n,xs[n//10],xs[n//2],xs[9*n//10],sum(xs)/n))
chain=['req','RQ','rq','sv','wr','RX','rx','vs','vb','vw','vd','vl']
for a,b in zip(chain,chain[1:]): lat(a,b)
lat('wr','st'); lat('req','vl'); lat('req','RX')
# occupancy via Little: mean in-flight per stage = sum(latency)/span
span=(t1-t0)/1e3
for a,b in zip(chain,chain[1:]):
    xs=[(merged[b][u]-merged[a][u])/1e3 for u in units if u in merged[a] and u in merged[b]]
    print("  occupancy %s->%s %.2f"%(a,b,sum(xs)/span))
# inter-arrival at stages
for tag in ['RQ','sv','wr','RX','vl']:
    ts=sorted(merged[tag].values()); gaps=[(b-a)/1e3 for a,b in zip(ts,ts[1:])]; gaps.sort(); n=len(gaps)
    print("gap %s p50 %.1f p90 %.1f p99 %.1f mean %.1f"%(tag,gaps[n//2],gaps[9*n//10],gaps[99*n//100],sum(gaps)/n))
# in-flight requests (req sent, RX not yet) sampled at each req
ev=[]
for u in units:
    if u in f['req'] and u in f['RX']:
        ev.append((f['req'][u],1)); ev.append((f['RX'][u],-1))
ev.sort(); cur=0; samples=[]
for t,d in ev:
    cur+=d
    if d==1: samples.append(cur)
samples.sort(); n=len(samples)
print("in flight at each request: p10 %d p50 %d p90 %d max %d"%(samples[n//10],samples[n//2],samples[9*n//10],samples[-1]))
