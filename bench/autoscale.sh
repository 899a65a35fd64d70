#!/usr/bin/env bash
# Live check of the autoscaler: a real fleet of shop instances (`scaleout up`, SQLite)
# under a 10x step of open-loop load from `scaleout load`, then the step back down.
#
#   bench/autoscale.sh     # BASE_RPS=40 STEP=10 TARGET_RPS=100 P99_TARGET_MS=50
#                          # BEFORE_S=20 HIGH_S=60 AFTER_S=90 POLICIES="default hpa"
#
# Each policy in POLICIES gets the same run, one after the other (side by side).
#
# Prints, from the timestamped status lines of `scaleout up` (one a second):
#   - scale-out: seconds from the step until the fleet is at its new desired size with
#     every instance ready ("capacity enough"), and until p99 is back under
#     P99_TARGET_MS (the first of 5 consecutive status seconds at or under it), plus how
#     many seconds of the high phase had a p99 over it;
#   - scale-in: seconds from the step down until the fleet is back at min_instances.
# The autoscaler targets TARGET_RPS per instance; the scale-down window and cooldown are
# shortened (SCALE_DOWN_WINDOW_S, default 30 s) so the run fits in a few minutes: the
# figure measures reaction, not Kubernetes' 300 s default. Figures go to BENCHMARKS.md by
# hand, with the date and a note of what else ran on the machine.
set -euo pipefail

BASE_RPS=${BASE_RPS:-40}
STEP=${STEP:-10}
TARGET_RPS=${TARGET_RPS:-100}
P99_TARGET_MS=${P99_TARGET_MS:-50}
BEFORE_S=${BEFORE_S:-20}
HIGH_S=${HIGH_S:-60}
AFTER_S=${AFTER_S:-90}
POLICIES=${POLICIES:-default hpa}
MAX_INSTANCES=${MAX_INSTANCES:-4}
SCALE_DOWN_WINDOW_S=${SCALE_DOWN_WINDOW_S:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/scaleout}
if [ -z "${SKIP_BUILD:-}" ]; then (cd "$ROOT" && cargo build --release -p scaleout -q); fi

run_policy() {
TMP=$(mktemp -d /tmp/scaleout-bench-autoscale.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LB_PORT=$(free_port)
ADMIN_PORT=$(free_port)
HIGH_RPS=$((BASE_RPS * STEP))

cat > "$TMP/scaleout.toml" <<CONF
[balancer]
listen = "127.0.0.1:$LB_PORT"
[balancer.admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "bench-token-0123"

[fleet]
instances = 1
data_dir = "$TMP/data"
ready_timeout_ms = 60000

[autoscale]
policy = "$1"
min_instances = 1
max_instances = $MAX_INSTANCES
target_in_flight = 1000.0
target_rps = $TARGET_RPS.0
[autoscale.default]
scale_down_cooldown_s = $SCALE_DOWN_WINDOW_S
[autoscale.default.scale_down]
stabilization_window_s = $SCALE_DOWN_WINDOW_S
policies = [{ kind = "percent", value = 100, period_s = 15 }]
[autoscale.hpa.scale_down]
stabilization_window_s = $SCALE_DOWN_WINDOW_S
CONF

# Timestamp every status line (seconds since the epoch, with fractions).
"$BIN" up -c "$TMP/scaleout.toml" --status-every 1s > "$TMP/up.out" \
  2> >(while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done > "$TMP/up.log") &
UP_PID=$!
cleanup() {
  kill -INT "$UP_PID" 2>/dev/null || true
  # `up` drains its instances on SIGINT; give it 60 s, then SIGKILL (its children die with it).
  for _ in $(seq 600); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$UP_PID" 2>/dev/null || true
  wait "$UP_PID" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

for _ in $(seq 1 600); do
  if grep -q '\[up\] instances 1/1 ready' "$TMP/up.log" 2>/dev/null; then break; fi
  sleep 0.1
done
grep -q '\[up\] instances 1/1 ready' "$TMP/up.log" || { echo "fleet never became ready"; cat "$TMP/up.log"; exit 1; }

URL="http://127.0.0.1:$LB_PORT/catalog"
load() { "$BIN" load "$URL" -r "$1" -d "${2}s" --min-rate off --json "$TMP/load-$3.json" >/dev/null 2>&1 || true; }
echo "== policy $1: base ${BASE_RPS} rps for ${BEFORE_S}s, step to ${HIGH_RPS} rps for ${HIGH_S}s, back to ${BASE_RPS} rps for ${AFTER_S}s"
load "$BASE_RPS" "$BEFORE_S" before
T_STEP=$(date +%s.%N)
load "$HIGH_RPS" "$HIGH_S" high
T_DOWN=$(date +%s.%N)
load "$BASE_RPS" "$AFTER_S" after
T_END=$(date +%s.%N)

awk -v t_step="$T_STEP" -v t_down="$T_DOWN" -v t_end="$T_END" -v p99t="$P99_TARGET_MS" '
  / \[up\] instances / {
    t = $1
    split($4, rt, "/"); ready = rt[1]; total = rt[2]
    desired = $7; sub(/\)/, "", desired)
    p99 = ""; rps = ""
    # The first "rps"/"p99" fields are the metrics; later ones belong to the reason.
    for (i = NF; i >= 1; i--) { if ($i == "p99") p99 = $(i+1); if ($i == "rps") rps = $(i+1) }
    if (t < t_step) { base_n = desired; next }
    if (t < t_down) {
      if (desired > peak) peak = desired
      if (!cap && desired > base_n && ready == desired && total == desired) cap = t - t_step
      if (p99 != "-" && p99 + 0 > p99t) { over_s++; under_run = 0 }
      else if (p99 != "-") { under_run++; if (under_run == 1) run_start = t; if (under_run == 5 && !has_back) { has_back = 1; back = run_start - t_step } }
      if (p99 != "-" && p99 + 0 > max_p99) max_p99 = p99 + 0
      n_high++
      next
    }
    if (!in_t && desired == 1 && total == 1) in_t = t - t_down
  }
  END {
    printf "instances before the step: %s, peak after: %s\n", base_n, peak
    if (cap) printf "scale-out: capacity enough (all %s ready) %.1f s after the step\n", peak, cap
    else     printf "scale-out: never reached a larger ready fleet during the high phase\n"
    if (has_back) printf "scale-out: p99 under %s ms for 5 s in a row from %.1f s after the step\n", p99t, back
    else            printf "scale-out: p99 never 5 s in a row under %s ms in the high phase\n", p99t
    printf "scale-out: %d of %d high-phase status seconds had p99 over %s ms (worst %.1f ms)\n", over_s, n_high, p99t, max_p99
    if (in_t) printf "scale-in: back to 1 instance %.1f s after the step down\n", in_t
    else      printf "scale-in: not back to 1 instance within %.0f s of the step down\n", t_end - t_down
  }' "$TMP/up.log"

for phase in before high after; do
  f="$TMP/load-$phase.json"
  [ -s "$f" ] && python3 - "$f" "$phase" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
print(f"load {sys.argv[2]:>6}: target {r['target_rps']:.0f} rps, achieved {r['achieved_rps']:.1f} rps, "
      f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, error rate {r['error_rate']:.4f}")
PY
done
echo "decisions:"; grep -o 'autoscaler decision.*' "$TMP/up.log" | sed 's/\x1b\[[0-9;]*m//g' | head -20
}

for policy in $POLICIES; do run_policy "$policy"; cleanup; trap - EXIT; done
