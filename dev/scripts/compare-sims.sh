#!/usr/bin/env bash
# Two simulator builds side by side on the same seeds, both paths: per seed the makespans of
# base/hierarchical, base/flat, new/hierarchical, new/flat, then mean, median and efficiency
# of each, and the average leecher's completion. The tables in dev/SIMULATION.md "Endgame duplicates where they arrive first".
#   usage: dev/scripts/compare-sims.sh BASE_SIM NEW_SIM SCENARIO START N
#   e.g.   git worktree add /tmp/base 426f76d && cargo build --release -p tierswarm-sim \
#            --manifest-path /tmp/base/Cargo.toml && cargo build --release -p tierswarm-sim &&
#          dev/scripts/compare-sims.sh /tmp/base/target/release/tierswarm-sim \
#            target/release/tierswarm-sim sim/scenarios/lossy-churn.toml 11 12
set -euo pipefail
[ $# -eq 5 ] || { sed -n 2,9p "$0"; exit 2; }
base=$1 new=$2 scenario=$3 start=$4 n=$5
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for b in base new; do
  sim=$base; [ "$b" = new ] && sim=$new
  for st in hierarchical legacy; do
    "$sim" sweep "$scenario" --seeds "$n" --start "$start" --strategy "$st" --jobs 2 \
      --json "$dir/$b-$st.json" >/dev/null 2>"$dir/err" || { cat "$dir/err" >&2; exit 1; }
  done
done
python3 - "$dir" "$(basename "$scenario" .toml)" <<'PY'
import json, statistics as st, sys
d, name = sys.argv[1], sys.argv[2]
cols = [(b, s) for b in ("base", "new") for s in ("hierarchical", "legacy")]
res = {c: {r["seed"]: r for r in json.load(open(f"{d}/{c[0]}-{c[1]}.json"))["runs"]} for c in cols}
print(name)
print("seed   base-h   base-f    new-h    new-f | new hier. no later than new flat")
for seed in sorted(res[cols[0]]):
    v = [res[c][seed].get("makespan_s") for c in cols]
    cell = lambda x: f"{x:8.3f}" if x else "    fail"
    ok = v[2] and v[3] and v[2] <= v[3]
    print(f"{seed:<5}", " ".join(cell(x) for x in v), "|", "ok" if ok else "BEHIND")
for c in cols:
    runs = res[c].values()
    ms = [r["makespan_s"] for r in runs if r.get("makespan_s")]
    eff = [r["efficiency"] for r in runs if r.get("efficiency")]
    # The average leecher's completion, beside the last one's (the makespan).
    per = [st.mean(x["complete_s"] for x in r["leechers_detail"] if x.get("complete_s"))
           for r in runs if r.get("leechers_detail")]
    print(f"{c[0]} {c[1]}: mean {st.mean(ms):.3f} median {st.median(ms):.3f}"
          f"  efficiency median {st.median(eff):.3f} min {min(eff):.3f}"
          f"  mean leecher completion {st.mean(per):.3f}")
PY
