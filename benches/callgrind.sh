#!/usr/bin/env bash
# benches/callgrind.sh - instructions per query of the fast path and of the
# hickory handler (no sockets), counted by valgrind's callgrind. Counts are
# repeatable on a loaded machine, unlike wall-clock time; they leave out the
# kernel's share (recvmmsg/sendmmsg), which benches/peers.sh measures.
# signed-do0 / signed-do1: the fast path on the zone signed, queries with
# EDNS and DO=0 / DO=1 (issue 20).
#
# Usage: benches/callgrind.sh [QUERIES]    (default 20000; needs valgrind)
#        MODES="fast-from sticky" benches/callgrind.sh   (random vs sticky assignment)
set -euo pipefail
N=${1:-20000}
[[ $N =~ ^[0-9]+$ ]] && ((N >= 1000 && N <= 10000000)) || { echo "QUERIES: 1000..10000000" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 2; }
cd "$(dirname "$0")/.."
bin=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
[[ -x $bin ]] || { echo "could not build the instructions bench" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf -- "$tmp"' EXIT
ir() {  # mode count -> total instructions
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" "$1" "$2" >/dev/null 2>"$tmp/err"
  awk '/^summary:/ { print $2 }' "$tmp/out"
}
printf '%-8s %14s\n' path "instr/query"
for mode in ${MODES:-fast hickory signed-do0 signed-do1}; do
  a=$(ir "$mode" "$N"); b=$(ir "$mode" $((2 * N)))
  awk -v a="$a" -v b="$b" -v n="$N" -v m="$mode" 'BEGIN { printf "%-8s %14.0f\n", m, (b - a) / n }'
done
