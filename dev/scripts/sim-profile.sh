#!/usr/bin/env bash
# Where the simulator's instructions go: runs a scenario under callgrind and splits the
# instruction count (exclusive, by function) into the simulator's parts and the core.
#   usage: dev/scripts/sim-profile.sh SCENARIO.toml TIME_LIMIT [run options...]
#   e.g.   dev/scripts/sim-profile.sh sim/scenarios/thousand.toml 12s
#          dev/scripts/sim-profile.sh sim/scenarios/crowd-300.toml 6s --strategy legacy
# (from the workspace root, after cargo build --release -p tierswarm-sim; SIM= picks another
# binary). Instruction counts are repeatable on a loaded machine; wall times are not.
set -euo pipefail
SIM=${SIM:-target/release/tierswarm-sim}
scenario=$1; limit=$2; shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s/^time_limit = .*/time_limit = \"$limit\"/" "$scenario" > "$dir/s.toml"
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$SIM" run "$dir/s.toml" "$@" \
    > "$dir/run.txt" 2> "$dir/valgrind.txt" || true
grep -E '^events' "$dir/run.txt" || true
callgrind_annotate --auto=no --threshold=100 "$dir/cg.out" > "$dir/excl.txt"
python3 - "$dir/excl.txt" <<'PY'
import collections, re, sys
parts = collections.Counter()
total = 0
for line in open(sys.argv[1]):
    m = re.match(r'^\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$', line)
    if not m or 'PROGRAM TOTALS' in line:
        continue
    n = int(m.group(1).replace(',', ''))
    where = m.group(2)
    # "file:function [object]": inlined code is charged to the function it was inlined into.
    fn = re.sub(r'\s*\[.*\]$', '', where.split(':', 1)[1] if ':' in where else where)
    if 'tierswarm_sim::events' in fn or ('binary_heap' in fn and 'tierswarm' not in fn):
        k = 'sim: event queue (heap)'
    elif 'tierswarm_sim::network' in fn:
        k = 'sim: network / link model'
    elif 'blake3' in where or 'digest' in fn:
        k = 'sim: trace hash (BLAKE3)'
    elif 'tierswarm_sim::report' in fn or 'serde' in fn:
        k = 'sim: report'
    elif 'tierswarm_sim' in fn:
        k = 'sim: engine (event loop, dispatch, host)'
    elif 'tierswarm_core' in fn:
        k = 'core (Node::handle_*, scheduler, views)'
    elif re.search(r'malloc|free|realloc|__rust_(de)?alloc|__rdl_', where):
        k = 'allocator'
    elif re.search(r'mem(cpy|move|set|cmp)', where):
        k = 'libc mem* (callers: see callgrind_annotate --tree=caller)'
    elif 'btree' in fn or 'vec_deque' in fn or 'alloc::vec' in fn or 'bitvec' in fn:
        k = 'std/bitvec not inlined (callers: mostly core)'
    else:
        k = 'other'
    parts[k] += n
    total += n
print(f'{total / 1e9:.3f} G instructions')
for k, n in parts.most_common():
    print(f'{100 * n / total:5.1f} %  {n / 1e6:9.1f} M  {k}')
PY
