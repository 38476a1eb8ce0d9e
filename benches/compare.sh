#!/usr/bin/env bash
# The comparison behind BENCHMARKS.md, in one run: riskstream (with its
# default durable state, --state embedded), riskstream with --state memory,
# the gRPC transport ceiling (riskstream-ceiling: same contract, fixed
# outcomes) and the Python peer (benches/peer/server.py: grpc.aio +
# scikit-learn), each fed the same recorded traffic by `riskstream replay`,
# alternating A B C D A B C D, with the server on one core and the load
# generator on another.
# Then riskstream's unary latency at half its measured maximum rate (and the
# ceiling's at the same rate: the floor of this machine and load generator);
# registrations acknowledged per second with concurrent callers (durable with
# the embedded store, and in memory); its resident memory and disk per
# registered payment method at 1 million registered.
#
#   bash benches/compare.sh
#
# Settings (environment): ROUNDS (3), DURATION of each measured run (10s),
# WARMUP (2s), SERVER_CPU (0), LOAD_CPU (1), OUT (target/compare).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-target/compare}
BIN=target/release
PORT=50591

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

# CPU time the hypervisor gave to other guests ("steal"), over the run, so
# that a noisy run can be told from a slow build.
cpu_ticks() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
read -r steal0 total0 < <(cpu_ticks)

SERVER_PID=
start_server() {
  local name=$1
  case $name in
    riskstream) rm -rf "$OUT/data"
                exec taskset -c "$SERVER_CPU" "$BIN/riskstream" serve --listen 127.0.0.1:$PORT \
                  --metrics-listen 127.0.0.1:$((PORT + 1)) --holdout-rate 0 --data-dir "$OUT/data" ;;
    memory)     exec taskset -c "$SERVER_CPU" "$BIN/riskstream" serve --listen 127.0.0.1:$PORT \
                  --metrics-listen 127.0.0.1:$((PORT + 1)) --holdout-rate 0 --state memory ;;
    ceiling)    exec taskset -c "$SERVER_CPU" "$BIN/riskstream-ceiling" --listen 127.0.0.1:$PORT ;;
    python)     PYTHONPATH="$OUT/stubs" exec taskset -c "$SERVER_CPU" "$OUT/venv/bin/python" \
                  benches/peer/server.py --listen 127.0.0.1:$PORT ;;
  esac >"$OUT/$name.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    # riskstream is ready once its state is restored; the others once they listen.
    case $name in riskstream|memory) ready="serving$" ;; *) ready="grpc listening" ;; esac
    grep -qE "$ready" "$OUT/$name.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not start; see $OUT/$name.log" >&2
  exit 1
}
stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}
trap stop_server EXIT

replay() {
  taskset -c "$LOAD_CPU" "$BIN/riskstream" replay "$@" --target http://127.0.0.1:$PORT \
    --progress off --json
}

stream_args=(--mode stream --concurrency 4 --in-flight 128 --order relaxed)
unary_args=(--mode unary --concurrency 64 --connections 4 --order relaxed)

for round in $(seq "$ROUNDS"); do
  for server in riskstream memory ceiling python; do
    for mode in stream unary; do
      echo "== round $round: $server, $mode"
      start_server "$server"
      # The cards first (not measured), then payments and fraud reports.
      replay "$OUT/load.traffic" --kinds register "${stream_args[@]}" >/dev/null
      if [ "$mode" = stream ]; then args=("${stream_args[@]}"); else args=("${unary_args[@]}"); fi
      replay "$OUT/load.traffic" --kinds payment,feedback "${args[@]}" --warmup "$WARMUP" \
        --duration "$DURATION" >"$OUT/results/$server-$mode-$round.json"
      stop_server
    done
  done
done

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

read -r steal1 total1 < <(cpu_ticks)
echo "{\"steal_ticks\": $((steal1 - steal0)), \"total_ticks\": $((total1 - total0))}" >"$OUT/results/steal.json"

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

echo "== summary"
"$OUT/venv/bin/python" benches/summarize.py "$OUT/results" | tee "$OUT/summary.md"
