#!/usr/bin/env bash
# How fast riskstream on Redis could be on this machine, whatever its Redis
# scripts did: one replica's streamed throughput with its batch script
# (OBSERVE) replaced by
#
#   noop   a script that touches nothing and answers every payment as new
#          with nothing counted (the cost of the batch path itself: the
#          round trip, the script call, its arguments and answer);
#   incr   one HINCRBY per payment in each of its six windows (card short
#          and long, email, IP, device, merchant) and nothing read: the
#          least a store that writes each window once per payment from a
#          script does;
#   real   the store's own script;
#
# beside `--state embedded`, alternating rounds, with Redis and the server
# on one core (Redis on CPU 2 where the machine has four) and the load
# generator on another, as benches/compare.sh places them (without its
# warm-up). The replacement scripts are in benches/redis-floor.patch,
# applied to a copy of the checked-out commit built in its own target
# directory (never in a release build). SKIPS (e.g. "short merchant") adds
# runs of the real script with those parts left out (EXP_SKIP: trailing,
# short, merchant, index, longadd; comma-separated for several at once).
#
#   bash benches/redis-floor.sh
#
# With COUNT=1 it counts instead of timing: for each Redis run (one round),
# redis-server runs under callgrind (no append-only file), instrumented only
# while the payments are replayed (DURATION, 20s by default: Redis runs
# about fifty times slower), and the script prints the instructions Redis
# executed per payment, a measure this machine's drifting speed does not
# move (needs valgrind).
#
# Settings: ROUNDS (3), DURATION (12s), SERVER_CPU (0), LOAD_CPU (1),
# REDIS_CPU (the server's), REDIS_AOF (Redis's append-only settings,
# default "--appendonly yes --appendfsync always"), OUT (target/redis-floor),
# COUNT (0).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

COUNT=${COUNT:-0}
if [ "$COUNT" = 1 ]; then
  command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 1; }
  ROUNDS=1
  DURATION=${DURATION:-20s}
  REDIS_AOF="--appendonly no"
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-12s}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# Redis on a core of its own where the machine has four, as compare.sh does.
if [ "$(nproc)" -ge 4 ]; then REDIS_CPU=${REDIS_CPU:-2}; else REDIS_CPU=${REDIS_CPU:-$SERVER_CPU}; fi
REDIS_AOF=${REDIS_AOF:---appendonly yes --appendfsync always}
OUT=${OUT:-target/redis-floor}
SKIPS=${SKIPS:-}
TRAFFIC=target/compare/load.traffic
PORT=50651
REDIS_PORT=50661
for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y redis-server" >&2; exit 1; }
done
for tool in patch python3 taskset; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

echo "== building the commit with benches/redis-floor.patch applied"
# Extracted again only when the commit or the patch changed (keeps the build).
stamp="$(git rev-parse HEAD) $(sha256sum benches/redis-floor.patch | cut -d' ' -f1)"
if [ ! -d "$OUT/src" ] || [ "$(cat "$OUT/src.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$OUT/src" && mkdir -p "$OUT/src"
  git archive HEAD | tar -x -C "$OUT/src"
  patch -d "$OUT/src" -p1 -s --fuzz=0 <"$ROOT/benches/redis-floor.patch"
  echo "$stamp" >"$OUT/src.stamp"
fi
(cd "$OUT/src" && CARGO_TARGET_DIR="$OUT/target" cargo build --release --bin riskstream)
BIN=$OUT/target/release/riskstream

[ -s "$TRAFFIC" ] || { mkdir -p "$(dirname "$TRAFFIC")"; "$BIN" simulate --seed 7 --customers 40000 --days 180 --out "$TRAFFIC"; }

REDIS_PID= SERVER_PID=
stop() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "$REDIS_PID" ]; then
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  SERVER_PID= REDIS_PID=
}
trap stop EXIT

# run NAME [env...]: one measured run; prints "events/s payments
# evalsha_usec instructions". Runs in this shell (its processes are the
# trap's to stop), its output redirected to a file.
run() {
  local name=$1; shift
  local state
  rm -rf "$OUT/redis" "$OUT/data" && mkdir -p "$OUT/redis"
  if [ "$name" = embedded ]; then
    state=(--data-dir "$OUT/data")
  else
    local under=()
    [ "$COUNT" = 1 ] && under=(valgrind --tool=callgrind --instr-atstart=no
      "--callgrind-out-file=$OUT/callgrind.$name.out")
    # shellcheck disable=SC2086
    taskset -c "$REDIS_CPU" "${under[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$OUT/redis" \
      --save '' $REDIS_AOF >"$OUT/redis-server.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 300); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    # A Redis left from another run would answer the ping in its place.
    kill -0 "$REDIS_PID" 2>/dev/null || { echo "redis-server did not start; see $OUT/redis-server.log" >&2; exit 1; }
    state=(--state "redis://127.0.0.1:$REDIS_PORT")
    # Under callgrind a batch's round trip takes far longer than the default.
    [ "$COUNT" = 1 ] && state+=(--redis-timeout 60s)
  fi
  : >"$OUT/server.log"
  env "$@" taskset -c "$SERVER_CPU" "$BIN" serve --listen 127.0.0.1:$PORT --metrics-listen 127.0.0.1:$((PORT + 1)) \
    --admin-listen 127.0.0.1:$((PORT + 2)) --holdout-rate 0 "${state[@]}" >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 300); do grep -q "serving$" "$OUT/server.log" && break; sleep 0.1; done
  grep -q "serving$" "$OUT/server.log" || { echo "the server did not start; see $OUT/server.log" >&2; exit 1; }
  local replay=(taskset -c "$LOAD_CPU" "$BIN" replay "$TRAFFIC" --target http://127.0.0.1:$PORT --progress off --json
    --mode stream --concurrency 4 --in-flight 128 --order relaxed)
  "${replay[@]}" --kinds register >/dev/null
  [ -n "$REDIS_PID" ] && redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  [ "$COUNT" = 1 ] && callgrind_control -i on "$REDIS_PID" >/dev/null 2>&1
  # A script that records nothing leaves fraud reports naming unknown payments.
  local allow=()
  [[ "$*" == *EXP_OBSERVE=* ]] && allow=(--allow-errors)
  "${replay[@]}" --kinds payment,feedback --duration "$DURATION" "${allow[@]}" >"$OUT/replay.json"
  [ "$COUNT" = 1 ] && callgrind_control -i off "$REDIS_PID" >/dev/null 2>&1
  local evalsha=0
  if [ -n "$REDIS_PID" ]; then
    evalsha=$(redis-cli -p "$REDIS_PORT" info commandstats | sed -n 's/^cmdstat_evalsha:calls=[0-9]*,usec=\([0-9]*\),.*/\1/p')
  fi
  stop
  local instructions=0
  if [ "$COUNT" = 1 ]; then
    instructions=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$OUT/callgrind.$name.out")
  fi
  python3 - "$OUT/replay.json" "${evalsha:-0}" "${instructions:-0}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['events_per_s']:.0f} {r['by_kind'].get('payment', 0)} {sys.argv[2]} {sys.argv[3]}")
PY
}

variants=(embedded real noop incr)
[ "$COUNT" = 1 ] && variants=(real noop incr)
for s in $SKIPS; do variants+=("skip:$s"); done
: >"$OUT/runs.txt"
for round in $(seq "$ROUNDS"); do
  for v in "${variants[@]}"; do
    case $v in
      embedded|real) run "$v" >"$OUT/line" ;;
      noop|incr) run "$v" EXP_OBSERVE="$v" >"$OUT/line" ;;
      skip:*) run "$v" EXP_SKIP="${v#skip:}" >"$OUT/line" ;;
    esac
    line=$(<"$OUT/line")
    echo "$round $v $line" | tee -a "$OUT/runs.txt"
  done
done

if [ "$COUNT" = 1 ]; then
  python3 - "$OUT/runs.txt" <<'PY'
import sys
print(f"{'run':<24}{'payments':>10}{'Redis instructions per payment':>34}")
for line in open(sys.argv[1]):
    _, v, _, payments, _, instructions = line.split()
    print(f"{v:<24}{int(payments):>10,}{int(instructions) / max(int(payments), 1):>34,.0f}")
PY
  exit 0
fi
python3 - "$OUT/runs.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    _, v, rate, payments, usec, _ = line.split()
    runs.setdefault(v, []).append((float(rate), int(payments), int(usec)))
base = statistics.median(r for r, _, _ in runs["embedded"])
print(f"{'run':<24}{'events/s (median, range)':>32}{'/ embedded':>12}{'Redis µs/payment in scripts':>30}")
for v, rs in runs.items():
    rates = [r for r, _, _ in rs]
    us = [u / p for _, p, u in rs if p and u]
    cost = f"{statistics.median(us):.1f}" if us else "-"
    print(f"{v:<24}{statistics.median(rates):>14,.0f} ({min(rates):,.0f}-{max(rates):,.0f}){statistics.median(rates) / base:>12.2f}{cost:>30}")
PY
