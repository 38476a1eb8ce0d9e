#!/usr/bin/env bash
# How long riskstream takes to serve again after a restart with a large
# state, and how much disk that state takes: about a million registered
# payment methods (with their creation sessions) and 30 days of payments
# (their velocity windows, the records late feedback needs, labels and block
# lists), written through the embedded store by `riskstream replay`, then
# the server stopped (SIGTERM) and started again on the same data directory.
# Time to serving is measured from the start of the process to its
# `serving` line, on one pinned core and on both.
#
#   bash benches/restart.sh
#
# Settings (environment): CUSTOMERS (700000), DAYS (30), OUT (target/restart).
set -euo pipefail
cd "$(dirname "$0")/.."

CUSTOMERS=${CUSTOMERS:-700000}
DAYS=${DAYS:-30}
OUT=${OUT:-target/restart}
BIN=target/release
PORT=50691
DATA="$OUT/data"

mkdir -p "$OUT"
cargo build --release --bins

traffic="$OUT/state-$CUSTOMERS-$DAYS.traffic"
[ -s "$traffic" ] || "$BIN/riskstream" simulate --seed 9 --customers "$CUSTOMERS" --days "$DAYS" --out "$traffic"

SERVER_PID=
start() {
  local log=$1; shift
  "$@" "$BIN/riskstream" serve --listen 127.0.0.1:$PORT --metrics-listen 127.0.0.1:$((PORT + 1)) \
    --data-dir "$DATA" --holdout-rate 0 >"$log" 2>&1 &
  SERVER_PID=$!
}
wait_serving() {
  until grep -q " serving$" "$1"; do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server died; see $1" >&2; exit 1; }
    sleep 0.02
  done
}
stop() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}
trap stop EXIT

echo "== filling the store from $traffic"
rm -rf "$DATA"
start "$OUT/fill.log"
wait_serving "$OUT/fill.log"
"$BIN/riskstream" replay "$traffic" --target http://127.0.0.1:$PORT --order relaxed --mode stream \
  --concurrency 4 --in-flight 128 --progress off --json >"$OUT/fill.json"
curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | grep '^riskstream_store' >"$OUT/fill.metrics"
stop

bytes=$(du -sb "$DATA" | cut -f1)
for cores in one two; do
  if [ $cores = one ]; then pin=(taskset -c 0); else pin=(); fi
  t0=$(date +%s%N)
  start "$OUT/restart-$cores.log" "${pin[@]}"
  wait_serving "$OUT/restart-$cores.log"
  t1=$(date +%s%N)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
  echo "$cores core(s): serving after $(( (t1 - t0) / 1000000 )) ms, resident $(( rss / 1024 )) MiB"
  grep "state restored" "$OUT/restart-$cores.log" | sed 's/.*state restored/  restored:/'
  stop
done
methods=$(grep -o 'kind="payment_methods"} [0-9]*' "$OUT/fill.metrics" | awk '{print $2}')
payments=$(grep -o 'kind="payments"} [0-9]*' "$OUT/fill.metrics" | awk '{print $2}')
echo "disk: $bytes bytes in $DATA for $methods payment methods and $payments payments: $(( bytes / methods )) bytes per payment method, payments included"
ls -l "$DATA"
