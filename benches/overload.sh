#!/usr/bin/env bash
# Overload on loopback (BENCHMARKS.md, "Overload"). The server is pinned to
# SERVER_CPU and the load to LOAD_CPU (taskset), both release builds:
#
# 1. capacity: unary Score calls in closed loop (64 callers, 4 connections);
# 2. open loop at RATE_FACTOR (3) times that capacity, OPEN_CALLERS (2,048)
#    callers over OPEN_CONNECTIONS (32) connections, with the default --max-concurrent-calls and then with the
#    limit lifted (as before it existed): payments answered and refused,
#    latency of each (from the client, and the server's own from
#    grpc_server_handling_seconds), and the server's largest VmRSS;
# 3. the same in closed loop with 2,048 callers over 32 connections;
# 4. memory: the server's VmRSS with 2,000 idle streams, 20,000 idle
#    streams, 2,000 half-sent messages and 2,000 streams that sent one
#    whole message of --max-message-bytes (benches/hold_streams.rs), each
#    on a fresh server.
#
# 5. metadata flood: what refusing 20,000-key messages costs the server
#    (CPU per message, from /proc) and whether other clients' latency moves
#    (open loop at half capacity, without and with two flood streams;
#    benches/flood.rs).
#
# SERVER_CPU_SHARE (e.g. 0.3) runs the server on that share of its core
# (a cgroup CPU quota with the shortest period the kernel allows for it;
# cgroup v1 or v2, as root), so
# that one core of the load generator can offer three times what the
# server serves; unset, the server has the whole core.
#
# Reports go to target/overload/; the figures are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
RATE_FACTOR=${RATE_FACTOR:-3}
# Which of steps 2-5 to run (the capacity is always measured).
# ("refusal": the rate at which the server refuses calls, when it refuses
# nearly all of them.)
STEPS=${STEPS:-refusal open closed memory flood}
step() { [[ " $STEPS " == *" $1 "* ]]; }
PORT=${PORT:-50071}
MPORT=${MPORT:-50072}
OUT=target/overload
mkdir -p "$OUT"

cargo build --release --bins
cargo bench --no-run --bench hold_streams --bench flood
BIN=target/release/riskstream
HOLD=(cargo bench -q --bench hold_streams --)
FLOOD=(cargo bench -q --bench flood --)
TRAFFIC="$OUT/payments.traffic"
if [ ! -s "$TRAFFIC" ]; then
  "$BIN" simulate --seed 7 --customers 40000 --days 120 --out "$TRAFFIC"
fi

# The server's cgroup when SERVER_CPU_SHARE is set.
CGROUP=
if [ -n "${SERVER_CPU_SHARE:-}" ]; then
  # The kernel's smallest quota is 1 ms: the period is as short as that
  # allows (the server waits at most period - quota when it is over).
  read -r quota_us period_us < <(python3 -c "
import math, sys
share = float(sys.argv[1])
period = max(1000, math.ceil(1000 / share))
print(round(share * period), period)" "$SERVER_CPU_SHARE")
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    CGROUP=/sys/fs/cgroup/riskstream-overload
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
    mkdir -p "$CGROUP"
    echo "$quota_us $period_us" >"$CGROUP/cpu.max"
  else
    CGROUP=/sys/fs/cgroup/cpu/riskstream-overload
    mkdir -p "$CGROUP"
    echo "$period_us" >"$CGROUP/cpu.cfs_period_us"
    echo "$quota_us" >"$CGROUP/cpu.cfs_quota_us"
  fi
  echo "the server runs on $SERVER_CPU_SHARE of CPU $SERVER_CPU ($quota_us us every $period_us us, $CGROUP)"
fi

SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
cleanup() {
  stop_server
  if [ -n "$CGROUP" ]; then rmdir "$CGROUP" 2>/dev/null || true; fi
}
trap cleanup EXIT

# start_server NAME [FLAGS...]: a fresh server on one core, in memory.
start_server() {
  local name=$1
  shift
  stop_server
  local confine=()
  if [ -n "$CGROUP" ]; then
    # The shell joins the cgroup, then becomes the server.
    confine=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CGROUP")
  fi
  "${confine[@]}" taskset -c "$SERVER_CPU" "$BIN" serve --state memory --holdout-rate 0 \
    --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" --admin-listen off \
    "$@" 2>"$OUT/$name.server.log" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    grep -q ' serving' "$OUT/$name.server.log" && return 0
    sleep 0.1
  done
  echo "the server did not start: $OUT/$name.server.log" >&2
  exit 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }

# sample_rss FILE: the largest VmRSS (KiB) every 200 ms until killed.
sample_rss() {
  local max=0 v
  while true; do
    v=$(rss_kib 2>/dev/null || echo 0)
    [ "${v:-0}" -gt "$max" ] && max=$v && echo "$max" >"$1"
    sleep 0.2
  done
}

replay() {
  taskset -c "$LOAD_CPU" "$BIN" replay "$TRAFFIC" --target "http://127.0.0.1:$PORT" \
    --progress off --json "$@"
}

register() {
  replay --kinds register --mode stream --concurrency 4 --in-flight 128 --order relaxed >/dev/null
}

json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# 1. Capacity.
start_server capacity
register
replay --kinds payment --mode unary --concurrency 64 --connections 4 \
  --warmup "$WARMUP" --duration "$DURATION" >"$OUT/capacity.json"
CAPACITY=$(json "$OUT/capacity.json" "round(d['events_per_s'])")
RATE=$(python3 -c "import sys; print(round(float(sys.argv[1]) * float(sys.argv[2])))" "$CAPACITY" "$RATE_FACTOR")
echo "capacity: $CAPACITY calls/s; open loop at $RATE/s"

# The server's own latency of Score calls (arrival to status), as upper
# bucket bounds of grpc_server_handling_seconds.
server_side() {
  python3 - "$1" <<'PY'
import re, sys
buckets = []
for line in open(sys.argv[1]):
    if line.startswith("grpc_server_handling_seconds_bucket") and 'grpc_method="Score"' in line:
        le = re.search(r'le="([^"]+)"', line).group(1)
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
total = buckets[-1][1]
q = lambda p: next(le for le, v in buckets if v >= p * total)
print(f"  server side: {int(total)} Score calls, p50 <= {q(.5) * 1e3:g} ms, p90 <= {q(.9) * 1e3:g} ms, p99 <= {q(.99) * 1e3:g} ms")
PY
}

# load NAME REPLAY_FLAGS... -- SERVER_FLAGS...: one measured run.
load() {
  local name=$1
  shift
  local flags=()
  while [ "$1" != "--" ]; do
    flags+=("$1")
    shift
  done
  shift
  start_server "$name" "$@"
  # (Registrations are unary calls: a server with one slot refuses them.)
  if [ "${REGISTER:-1}" = 1 ]; then register; fi
  local during=
  if [ -n "${DURING:-}" ]; then
    # Started with the load; ends with it.
    $DURING &
    during=$!
  fi
  local rss_file="$OUT/$name.rss"
  echo 0 >"$rss_file"
  sample_rss "$rss_file" &
  local sampler=$!
  replay --kinds payment --mode unary "${flags[@]}" \
    --allow-errors --warmup "$WARMUP" --duration "$DURATION" >"$OUT/$name.json" || true
  curl -s "127.0.0.1:$MPORT/metrics" >"$OUT/$name.metrics"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  if [ -n "$during" ]; then wait "$during" || true; fi
  echo "$name: $(json "$OUT/$name.json" "round(d['events_per_s'])") calls/s answered," \
    "errors $(json "$OUT/$name.json" "d['errors']"), max VmRSS $(($(cat "$rss_file") / 1024)) MiB"
  json "$OUT/$name.json" "'  all:      ' + str(d['latency_us'])"
  json "$OUT/$name.json" "'  answered: ' + str(d['answered_latency_us'])"
  json "$OUT/$name.json" "'  failed:   ' + str(d['failed_latency_us'])"
  server_side "$OUT/$name.metrics"
}

# What refusing costs: nearly every call refused (one slot), closed loop.
if step refusal; then
  REGISTER=0 load refusal-only --concurrency 256 --connections 4 -- --max-concurrent-calls 1
fi

# 2. Open loop at RATE_FACTOR times capacity.
if step open; then
  # Enough callers that the generator keeps its schedule while calls wait.
  open_loop=(--rate "$RATE" --concurrency "${OPEN_CALLERS:-2048}" --connections "${OPEN_CONNECTIONS:-32}")
  load open-limited "${open_loop[@]}" --
  load open-unlimited "${open_loop[@]}" -- --max-concurrent-calls 100000
fi

# 3. Closed loop, 2,048 callers.
if step closed; then
  closed=(--concurrency 2048 --connections 32)
  load closed-limited "${closed[@]}" --
  load closed-unlimited "${closed[@]}" -- --max-concurrent-calls 100000
fi

# 4. Memory of idle and half-sent streams.
hold() {
  local name=$1 kind=$2 streams=$3 connections=$4
  start_server "$name"
  sleep 1
  local before after
  before=$(rss_kib)
  taskset -c "$LOAD_CPU" "${HOLD[@]}" "127.0.0.1:$PORT" "$kind" "$streams" "$connections" 12 \
    >"$OUT/$name.hold.json" &
  local holder=$!
  # Measured before --message-timeout (10 s) ends the half-sent ones, and
  # before other clients add payments to the state.
  sleep 4
  after=$(rss_kib)
  # Other clients meanwhile: 2 s of unary calls, 8 callers.
  replay --kinds payment --mode unary --concurrency 8 --connections 2 \
    --allow-errors --warmup 0s --duration 2s >"$OUT/$name.others.json" || true
  local streams_open
  streams_open=$(curl -s "127.0.0.1:$MPORT/metrics" | awk '/^riskstream_active_streams / {print $2}')
  wait "$holder"
  echo "$name: VmRSS $((before / 1024)) MiB -> $((after / 1024)) MiB" \
    "($(((after - before) * 1024 / streams)) bytes per stream sent; $streams_open open)" \
    "$(cat "$OUT/$name.hold.json")"
  json "$OUT/$name.others.json" "'  other clients meanwhile: ' + str(round(d['events_per_s'])) + ' calls/s, errors ' + str(d['errors']) + ', latency ' + str(d['latency_us'])"
}
if step memory; then
  hold idle-2000 idle 2000 20
  hold idle-20000 idle 20000 200
  hold half-2000 half 2000 20
  hold full-2000 full 2000 20
fi

# 5. Metadata flood.
if step flood; then
cpu_seconds() {
  python3 -c "
import os, sys
f = open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split()
print((int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'))" "$SERVER_PID"
}
flood() {
  local name=$1 seconds=$2
  taskset -c "$LOAD_CPU" "${FLOOD[@]}" "127.0.0.1:$PORT" 2 "$seconds" >"$OUT/$name.flood.json"
}
start_server flood-alone
register
sleep 1
cpu_before=$(cpu_seconds)
flood flood-alone 10
cpu_after=$(cpu_seconds)
python3 - "$OUT/flood-alone.flood.json" "$cpu_before" "$cpu_after" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
cpu = float(sys.argv[3]) - float(sys.argv[2])
print(f"flood alone: {d['sent']} messages of {d['message_bytes']} bytes on {d['streams']} streams in {d['seconds']:g} s, "
      f"{d['metadata_errors']} refused naming metadata; server CPU {cpu:.2f} s = "
      f"{cpu / max(d['sent'], 1) * 1e6:.0f} us per message")
PY
half=(--rate "$((CAPACITY / 2))" --concurrency 64 --connections 4)
load flood-quiet "${half[@]}" --
flood_during() { sleep 0.5; flood flood-busy "$(python3 -c "import re,sys; t=lambda s: float(re.sub('s$','',s)); print(t(sys.argv[1]) + t(sys.argv[2]))" "$WARMUP" "$DURATION")"; }
DURING=flood_during load flood-busy "${half[@]}" --
cat "$OUT/flood-busy.flood.json"
fi
