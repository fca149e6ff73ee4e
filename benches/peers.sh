#!/usr/bin/env bash
# benches/peers.sh - CPU microseconds per answer of dnsshift and, where
# installed, gdnsd, serving the same zone, from one run.
#
# Method (that of ../shared/bench/peers.sh, reduced): each server runs alone,
# pinned to one CPU (--server-cpu) with one query thread (dnsshift:
# udp_workers = 1; gdnsd: udp_threads = 1); dnsperf -c 10 -q 200 is pinned
# to the other CPU (--client-cpu) and sends benches/peers/queries.txt (70%
# weighted name, 20% static name, 10% NXDOMAIN), plain DNS. Per run the
# script reads the server's CPU time (utime + stime of its process group)
# and the answers dnsperf got; CPU us per answer = server CPU time / answers.
# Repetitions alternate between the servers; the median is printed.
#
# --workers 2 --server-cpu 0,1 runs dnsshift with two workers on both CPUs
# (then dnsperf shares them: on a 2-core machine that measures scaling only
# as far as the client leaves room; see README "Performance").
#
# Needs: dnsperf, dig, taskset, setsid; a release build (cargo build --release).
# Everything talks to 127.0.0.1 only; every loop is bounded; only processes
# this script started are stopped, by their process group.
#
# Usage: benches/peers.sh [--reps N] [--duration S] [--clients C]
#        [--outstanding Q] [--workers N] [--server-cpu LIST] [--client-cpu N]
#        [--bin PATH] [--no-gdnsd] [--edns]
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
REPS=3; DURATION=15; CLIENTS=10; OUTSTANDING=200; WORKERS=1
SERVER_CPU=1; CLIENT_CPU=0; BIN="$ROOT/target/release/dnsshift"; GDNSD=1; EDNS=0
OURS_PORT=5310; GDNSD_PORT=5311; START_TIMEOUT=30

die() { echo "peers.sh: $*" >&2; exit 2; }
while (($#)); do
  case $1 in
    --reps) REPS=$2; shift 2;;
    --duration) DURATION=$2; shift 2;;
    --clients) CLIENTS=$2; shift 2;;
    --outstanding) OUTSTANDING=$2; shift 2;;
    --workers) WORKERS=$2; shift 2;;
    --server-cpu) SERVER_CPU=$2; shift 2;;
    --client-cpu) CLIENT_CPU=$2; shift 2;;
    --bin) BIN=$2; shift 2;;
    --no-gdnsd) GDNSD=0; shift;;
    --edns) EDNS=1; shift;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0;;
    *) die "unknown option $1 (see --help)";;
  esac
done
for v in REPS DURATION CLIENTS OUTSTANDING WORKERS CLIENT_CPU; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
((REPS >= 1 && REPS <= 20 && DURATION >= 1 && DURATION <= 300)) || die "--reps 1..20, --duration 1..300"
[[ $SERVER_CPU =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--server-cpu wants a CPU list like 1 or 0,1"
for c in dnsperf dig taskset setsid; do command -v $c >/dev/null || die "missing $c (apt-get install dnsperf bind9-dnsutils util-linux)"; done
[[ -x $BIN ]] || die "no binary at $BIN (cargo build --release, or --bin)"
command -v gdnsd >/dev/null || GDNSD=0

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/dnsshift-bench.XXXXXX") || die "mktemp failed"
STARTED=()
stop() {  # stop process group $1, bounded
  local pid=$1 i
  kill -TERM -- "-$pid" 2>/dev/null
  for ((i = 0; i < 50; i++)); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}
cleanup() { local p; for p in "${STARTED[@]}"; do stop "$p"; done; rm -rf -- "$SCRATCH"; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

ticks() {  # utime+stime of every process in group $1, in clock ticks
  local pid
  for pid in $(ps -e -o pid=,pgid= | awk -v g="$1" '$2 == g { print $1 }'); do
    cat "/proc/$pid/stat" 2>/dev/null
  done | awk '{ sub(/^.*\) /, ""); s += $12 + $13 } END { print s + 0 }'
}

start() {  # name -> sets PID (its process group) and PORT once the server answers
  local name=$1 dir="$SCRATCH/$1" port
  mkdir -p "$dir"
  case $name in
    dnsshift)
      port=$OURS_PORT
      mkdir -p "$dir/zones" "$dir/state"
      cp "$HERE/peers/shift.test.toml" "$dir/zones/"
      cat >"$dir/dnsshift.toml" <<T
listen = ["127.0.0.1:$port"]
zones_dir = "$dir/zones"
state_dir = "$dir/state"
control_listen = "127.0.0.1:0"
log_level = "warn"
udp_workers = $WORKERS
T
      setsid taskset -c "$SERVER_CPU" "$BIN" serve --config "$dir/dnsshift.toml" >"$dir/log" 2>&1 </dev/null &
      ;;
    gdnsd)
      port=$GDNSD_PORT
      cp -r "$HERE/peers/gdnsd/." "$dir/"
      mkdir -p "$dir/run" "$dir/state"
      sed -i -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" "$dir/config"
      setsid taskset -c "$SERVER_CPU" gdnsd -c "$dir" start >"$dir/log" 2>&1 </dev/null &
      ;;
  esac
  PID=$! PORT=$port
  STARTED+=("$PID")
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if dig +time=1 +tries=1 +short -p "$port" @127.0.0.1 shift.test SOA 2>/dev/null | grep -q .; then
      return 0
    fi
    sleep 0.2
  done
  die "$name did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s: $(tail -3 "$dir/log")"
}

run() {  # name pid port rep -> "qps answers cpu_s us_per_answer"
  local name=$1 pid=$2 port=$3 out="$SCRATCH/$1.$4.dnsperf" g0 g1 hz
  local -a args=(-s 127.0.0.1 -p "$port" -d "$HERE/peers/queries.txt" -c "$CLIENTS" -q "$OUTSTANDING" -t 2)
  ((EDNS)) && args+=(-e)
  hz=$(getconf CLK_TCK)
  timeout 60 taskset -c "$CLIENT_CPU" dnsperf "${args[@]}" -l 2 >/dev/null 2>&1   # warm-up
  g0=$(ticks "$pid")
  timeout $((DURATION + 60)) taskset -c "$CLIENT_CPU" dnsperf "${args[@]}" -l "$DURATION" >"$out" 2>&1
  g1=$(ticks "$pid")
  awk -v g="$((g1 - g0))" -v hz="$hz" '
    /Queries completed:/ { done = $3 }
    /Queries per second:/ { qps = $4 }
    END { cpu = g / hz; printf "%.0f %d %.2f %.2f\n", qps, done, cpu, done ? 1e6 * cpu / done : 0 }' "$out"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

SERVERS=(dnsshift)
((GDNSD)) && SERVERS+=(gdnsd)
declare -A RESULTS=()
echo "# $(date -u +%FT%TZ) $(nproc) CPUs; server CPU(s) $SERVER_CPU, dnsperf CPU $CLIENT_CPU; -c $CLIENTS -q $OUTSTANDING; $REPS x ${DURATION}s; dnsshift udp_workers=$WORKERS" >&2
((GDNSD)) || echo "# gdnsd not installed: dnsshift alone (apt-get install gdnsd)" >&2
for ((rep = 1; rep <= REPS; rep++)); do
  for s in "${SERVERS[@]}"; do
    start "$s"
    r=$(run "$s" "$PID" "$PORT" "$rep")
    echo "# $s rep $rep: qps answers cpu_s us/answer = $r" >&2
    RESULTS[$s]+="$r"$'\n'
    stop "$PID"
  done
done
printf '%-10s %10s %10s %14s\n' server qps "cpu %" "cpu us/answer"
for s in "${SERVERS[@]}"; do
  qps=$(awk 'NF { print $1 }' <<<"${RESULTS[$s]}" | median)
  us=$(awk 'NF { print $4 }' <<<"${RESULTS[$s]}" | median)
  cpu=$(awk -v d="$DURATION" 'NF { print 100 * $3 / d }' <<<"${RESULTS[$s]}" | median)
  printf '%-10s %10.0f %10.0f %14.2f\n' "$s" "$qps" "$cpu" "$us"
done
