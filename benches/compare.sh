#!/usr/bin/env bash
# The comparison behind BENCHMARKS.md, in one run: riskstream (with its
# default durable state, --state embedded), riskstream on Redis (one
# replica, --state redis://; and two replicas on one Redis, each fed half of
# the traffic), riskstream with --state memory,
# the gRPC transport ceiling (riskstream-ceiling: same contract, fixed
# outcomes) and the Python peer (benches/peer/server.py: grpc.aio +
# scikit-learn), each fed the same recorded traffic by `riskstream replay`,
# alternating A B C D A B C D, with the server on one core and the load
# generator on another.
# Then riskstream's unary latency at half its measured maximum rate (and the
# ceiling's at the same rate: the floor of this machine and load generator);
# registrations acknowledged per second with concurrent callers (durable with
# the embedded store, and in memory); its resident memory and disk per
# registered payment method at 1 million registered; Redis commands, script
# calls, round trips and bytes per scored payment (one replica, stream and
# unary).
#
#   bash benches/compare.sh
#
# Settings (environment): ROUNDS (3), DURATION of each measured run (10s),
# WARMUP (2s), SERVER_CPU (0), LOAD_CPU (1), OUT (target/compare);
# REDIS_CPU (redis-server's core) and REPLICA_B_CPU (the second replica's):
# CPUs 2 and 3 where the machine has four, else the server's core (then
# riskstream and its Redis share one core, as the embedded store's threads
# do); REDIS_FSYNC (always: every acknowledged write on disk, as the README
# advises; everysec for Redis's default trade); BEFORE_BIN (a riskstream
# binary built from an earlier commit: run beside the current build, as
# `before`, with the same flags, in the same rounds, so that a change on
# the scoring path is measured before and after in one run); SERVERS (the
# servers of the rounds, default all: riskstream [before] redis redis2
# memory ceiling python) and EXTRAS (the steps after them, default all:
# ops half million) to run a part.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-target/compare}
BIN=target/release
BEFORE_BIN=${BEFORE_BIN:-}
SERVERS=${SERVERS:-riskstream ${BEFORE_BIN:+before} redis redis2 memory ceiling python}
EXTRAS=${EXTRAS:-ops half million}
has_extra() { [[ " $EXTRAS " == *" $1 "* ]]; }
if [ -n "$BEFORE_BIN" ] && [ ! -x "$BEFORE_BIN" ]; then
  echo "BEFORE_BIN=$BEFORE_BIN is not an executable" >&2
  exit 1
fi
PORT=50591
if [ "$(nproc)" -ge 4 ]; then spare=(2 3); else spare=("$SERVER_CPU" "$SERVER_CPU"); fi
REDIS_CPU=${REDIS_CPU:-${spare[0]}}
REPLICA_B_CPU=${REPLICA_B_CPU:-${spare[1]}}
REDIS_FSYNC=${REDIS_FSYNC:-always}
REDIS_PORT=$((PORT + 10))
PORT_B=$((PORT + 20))
for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y redis-server" >&2; exit 1; }
done

mkdir -p "$OUT/results" "$OUT/stubs"
rm -f "$OUT"/results/*.json

echo "== building (release)"
cargo build --release --bins

echo "== Python peer: virtualenv and stubs"
[ -x "$OUT/venv/bin/python" ] || python3 -m venv "$OUT/venv"
"$OUT/venv/bin/pip" install -q -r benches/peer/requirements.txt
"$OUT/venv/bin/python" -m grpc_tools.protoc -Iproto --python_out="$OUT/stubs" \
  --grpc_python_out="$OUT/stubs" proto/riskstream/v1/riskstream.proto

echo "== traffic"
[ -s "$OUT/load.traffic" ] || "$BIN/riskstream" simulate --seed 7 --customers 40000 --days 180 --out "$OUT/load.traffic"
[ -s "$OUT/million.traffic" ] || "$BIN/riskstream" simulate --seed 8 --customers 800000 --days 1 --out "$OUT/million.traffic"
# The same traffic dealt to two replicas in turn, record by record (a
# card's payments land on both): length-delimited records, copied whole.
if [ ! -s "$OUT/load-b.traffic" ]; then
  python3 - "$OUT/load.traffic" "$OUT/load-a.traffic" "$OUT/load-b.traffic" <<'PY'
import sys
src, outs = open(sys.argv[1], "rb"), [open(p, "wb") for p in sys.argv[2:4]]
n = 0
while True:
    prefix = b""
    while True:
        b = src.read(1)
        if not b:
            break
        prefix += b
        if b[0] < 0x80:
            break
    if not prefix:
        break
    length = 0
    for i, b in enumerate(prefix):
        length |= (b & 0x7F) << (7 * i)
    outs[n % 2].write(prefix + src.read(length))
    n += 1
PY
fi

# CPU time the hypervisor gave to other guests ("steal"), over the run, so
# that a noisy run can be told from a slow build.
cpu_ticks() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
read -r steal0 total0 < <(cpu_ticks)

# A fresh redis-server for each run that uses one, saving to an append-only
# file synced as REDIS_FSYNC says.
REDIS_PID=
start_redis() {
  rm -rf "$OUT/redis" && mkdir -p "$OUT/redis"
  taskset -c "$REDIS_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$OUT/redis" \
    --save '' --appendonly yes --appendfsync "$REDIS_FSYNC" >"$OUT/redis-server.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server did not start; see $OUT/redis-server.log" >&2
  exit 1
}
stop_redis() {
  [ -n "$REDIS_PID" ] || return 0
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=
}

SERVER_PID=
REPLICA_B_PID=
start_server() {
  local name=$1
  case $name in
    riskstream) rm -rf "$OUT/data"
                exec taskset -c "$SERVER_CPU" "$BIN/riskstream" serve --listen 127.0.0.1:$PORT \
                  --metrics-listen 127.0.0.1:$((PORT + 1)) --holdout-rate 0 --data-dir "$OUT/data" ;;
    before)     rm -rf "$OUT/data"
                exec taskset -c "$SERVER_CPU" "$BEFORE_BIN" serve --listen 127.0.0.1:$PORT \
                  --metrics-listen 127.0.0.1:$((PORT + 1)) --holdout-rate 0 --data-dir "$OUT/data" ;;
    redis)      exec taskset -c "$SERVER_CPU" "$BIN/riskstream" serve --listen 127.0.0.1:$PORT \
                  --metrics-listen 127.0.0.1:$((PORT + 1)) --holdout-rate 0 \
                  --state "redis://127.0.0.1:$REDIS_PORT" ;;
    memory)     exec taskset -c "$SERVER_CPU" "$BIN/riskstream" serve --listen 127.0.0.1:$PORT \
                  --metrics-listen 127.0.0.1:$((PORT + 1)) --holdout-rate 0 --state memory ;;
    ceiling)    exec taskset -c "$SERVER_CPU" "$BIN/riskstream-ceiling" --listen 127.0.0.1:$PORT ;;
    python)     PYTHONPATH="$OUT/stubs" exec taskset -c "$SERVER_CPU" "$OUT/venv/bin/python" \
                  benches/peer/server.py --listen 127.0.0.1:$PORT ;;
  esac >"$OUT/$name.log" 2>&1 &
  SERVER_PID=$!
  wait_ready "$name"
}
wait_ready() {
  local name=$1
  for _ in $(seq 100); do
    # riskstream is ready once its state is restored; the others once they listen.
    case $name in riskstream|before|memory|redis|redis-b) ready="serving$" ;; *) ready="grpc listening" ;; esac
    grep -qE "$ready" "$OUT/$name.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not start; see $OUT/$name.log" >&2
  exit 1
}
# A second replica on the same Redis (and namespace), on its own port.
start_replica_b() {
  taskset -c "$REPLICA_B_CPU" "$BIN/riskstream" serve --listen 127.0.0.1:$PORT_B \
    --metrics-listen 127.0.0.1:$((PORT_B + 1)) --admin-listen 127.0.0.1:$((PORT_B + 2)) \
    --holdout-rate 0 --state "redis://127.0.0.1:$REDIS_PORT" >"$OUT/redis-b.log" 2>&1 &
  REPLICA_B_PID=$!
  wait_ready redis-b
}
stop_server() {
  for pid in "$SERVER_PID" "$REPLICA_B_PID"; do
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PID= REPLICA_B_PID=
  stop_redis
}
trap stop_server EXIT

replay_at() {
  local port=$1
  shift
  taskset -c "$LOAD_CPU" "$BIN/riskstream" replay "$@" --target http://127.0.0.1:$port \
    --progress off --json
}
replay() { replay_at "$PORT" "$@"; }

stream_args=(--mode stream --concurrency 4 --in-flight 128 --order relaxed)
unary_args=(--mode unary --concurrency 64 --connections 4 --order relaxed)

echo "{\"redis_cpu\": \"$REDIS_CPU\", \"replica_b_cpu\": \"$REPLICA_B_CPU\", \"server_cpu\": \"$SERVER_CPU\", \"load_cpu\": \"$LOAD_CPU\", \"redis_fsync\": \"$REDIS_FSYNC\", \"redis_version\": \"$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')\"}" \
  >"$OUT/results/redis-setup.json"

for round in $(seq "$ROUNDS"); do
  for server in $SERVERS; do
    for mode in stream unary; do
      echo "== round $round: $server, $mode"
      if [ "$mode" = stream ]; then args=("${stream_args[@]}"); else args=("${unary_args[@]}"); fi
      case $server in
        redis|redis2) start_redis; start_server redis ;;
        *) start_server "$server" ;;
      esac
      # The cards first (not measured), then payments and fraud reports.
      replay "$OUT/load.traffic" --kinds register "${stream_args[@]}" >/dev/null
      if [ "$server" = redis2 ]; then
        # Two replicas, each fed every other record by a load generator of
        # its own (both on the load core), at once.
        start_replica_b
        replay_at "$PORT" "$OUT/load-a.traffic" --kinds payment,feedback "${args[@]}" --warmup "$WARMUP" \
          --duration "$DURATION" >"$OUT/results/redis2a-$mode-$round.json" &
        a=$!
        replay_at "$PORT_B" "$OUT/load-b.traffic" --kinds payment,feedback "${args[@]}" --warmup "$WARMUP" \
          --duration "$DURATION" >"$OUT/results/redis2b-$mode-$round.json" &
        b=$!
        wait "$a" "$b"
      else
        replay "$OUT/load.traffic" --kinds payment,feedback "${args[@]}" --warmup "$WARMUP" \
          --duration "$DURATION" >"$OUT/results/$server-$mode-$round.json"
      fi
      stop_server
    done
  done
done

metric() {
  "$OUT/venv/bin/python" - "http://127.0.0.1:$((PORT + 1))/metrics" "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1]).read().decode()
print(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(sys.argv[2] + " ") or l.startswith(sys.argv[2] + "{")))
PY
}
has_extra ops && echo "== Redis operations and bytes per scored payment (one replica, stream then unary)"
for mode in stream unary; do
  has_extra ops || break
  if [ "$mode" = stream ]; then args=("${stream_args[@]}"); else args=("${unary_args[@]}"); fi
  start_redis
  start_server redis
  replay "$OUT/load.traffic" --kinds register "${stream_args[@]}" >/dev/null
  # Counted from here: every command and byte the payments and fraud reports
  # cost Redis (no warm-up, so that the replay counts every payment sent).
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  trips0=$(metric riskstream_store_round_trip_seconds_count)
  replay "$OUT/load.traffic" --kinds payment,feedback "${args[@]}" --duration "$DURATION" \
    >"$OUT/results/ops-$mode.json"
  trips1=$(metric riskstream_store_round_trip_seconds_count)
  redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/results/ops-$mode-commandstats.txt"
  redis-cli -p "$REDIS_PORT" info stats >"$OUT/results/ops-$mode-stats.txt"
  echo "{\"round_trips\": $trips1, \"round_trips_before\": $trips0}" >"$OUT/results/ops-$mode-trips.json"
  stop_server
done

if has_extra half; then
echo "== unary latency at half riskstream's maximum rate: riskstream, then the ceiling at the same rate"
half=$("$OUT/venv/bin/python" - "$OUT/results" <<'PY'
import glob, json, statistics, sys
rates = [json.load(open(f))["events_per_s"] for f in glob.glob(sys.argv[1] + "/riskstream-unary-[0-9]*.json")]
print(int(statistics.median(rates) / 2))
PY
)
for round in $(seq "$ROUNDS"); do
  for server in riskstream ceiling; do
    echo "== round $round: $server, unary at $half/s"
    start_server "$server"
    replay "$OUT/load.traffic" --kinds register "${stream_args[@]}" >/dev/null
    replay "$OUT/load.traffic" --kinds payment,feedback "${unary_args[@]}" --rate "$half" --warmup "$WARMUP" \
      --duration "$DURATION" >"$OUT/results/$server-half-$round.json"
    stop_server
  done
done
fi

read -r steal1 total1 < <(cpu_ticks)
echo "{\"steal_ticks\": $((steal1 - steal0)), \"total_ticks\": $((total1 - total0))}" >"$OUT/results/steal.json"

if has_extra million; then
echo "== riskstream: registrations acknowledged per second, 1 million, 128 in flight (memory, then durable)"
start_server memory
replay "$OUT/million.traffic" --kinds register --mode stream --concurrency 4 --in-flight 128 --order relaxed \
  >"$OUT/results/million-register-memory.json"
stop_server
echo "== riskstream: the same, durable; memory and disk at 1 million registered payment methods"
start_server riskstream
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
replay "$OUT/million.traffic" --kinds register --mode stream --concurrency 4 --in-flight 128 --order relaxed \
  >"$OUT/results/million-register.json"
rss_after=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
# Registered = registrations answered without error.
methods=$("$OUT/venv/bin/python" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["by_kind"]["register"] - sum(r["errors"].values()))' "$OUT/results/million-register.json")
stop_server
disk=$(du -sb "$OUT/data" | cut -f1)
printf '{"rss_before_kib": %s, "rss_after_kib": %s, "payment_methods": %s, "disk_bytes": %s}\n' \
  "$rss_before" "$rss_after" "$methods" "$disk" >"$OUT/results/memory.json"
fi

echo "== summary"
"$OUT/venv/bin/python" benches/summarize.py "$OUT/results" | tee "$OUT/summary.md"
