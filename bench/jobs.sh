#!/usr/bin/env bash
# bench/jobs.sh: job-queue throughput (jobs/s) per backend with 1, 2 and 4 workers.
#
# Each run enqueues JOBS jobs (8 concurrent enqueuers), then drains them with W workers
# (each its own consumer and store connections, 16 jobs in flight each) and reports jobs
# drained per second. Handler `noop` does nothing (the cost of the queue itself: reserve +
# ack); handler `pg-effect` does what an idempotent handler does: one PostgreSQL
# transaction marking the job id processed and inserting an effect row. Backends: Redis Streams (127.0.0.1:6379), PostgreSQL (127.0.0.1:5432,
# SKIP LOCKED), SQLite (a file in a temp dir, WAL).
#
# It starts the state tier (scripts/services up), builds the example in release mode, and
# prints a Markdown table for BENCHMARKS.md on stdout (progress on stderr) with the load
# average before and after. Queues are named jobs_bench_<pid> and removed afterwards.
#
# Part "checkout" (PARTS contains checkout): checkout's latency with the order
# confirmation inline vs enqueued on each backend, through the shop's router in process
# (crates/shop/examples/checkout_p99.rs; rounds interleave the modes), with EMAIL_MS of
# simulated e-mail (0 = the confirmation transaction only, then EMAIL_MS_SLOW).
#
# Part "burst" (PARTS contains burst): time from a burst of BURST_JOBS jobs (each with
# BURST_EMAIL_MS of simulated e-mail) to an empty Redis queue, real `shop --role worker`
# processes under the backlog autoscaler (1..=4 workers, 50 jobs per worker) vs a fixed
# single worker, alternating, BURST_ROUNDS rounds (crates/fleet/examples/burst_drain.rs).
#
# usage: bench/jobs.sh    (env: JOBS=20000 WORKERS="1 2 4" BACKENDS="redis postgres sqlite"
#                          HANDLERS="noop pg-effect" PROFILE=release|dev PARTS="queue checkout burst"
#                          CK_ROUNDS=5 CK_CHECKOUTS=400 CK_CONC=8 EMAIL_MS_SLOW=20
#                          BURST_JOBS=1000 BURST_EMAIL_MS=50 BURST_ROUNDS=2)
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-20000}
WORKERS=${WORKERS:-"1 2 4"}
BACKENDS=${BACKENDS:-"redis postgres sqlite"}
HANDLERS=${HANDLERS:-"noop pg-effect"}
PROFILE=${PROFILE:-release}
PARTS=${PARTS:-"queue checkout burst"}
CK_ROUNDS=${CK_ROUNDS:-5}
CK_CHECKOUTS=${CK_CHECKOUTS:-400}
CK_CONC=${CK_CONC:-8}
EMAIL_MS_SLOW=${EMAIL_MS_SLOW:-20}
BURST_JOBS=${BURST_JOBS:-1000}
BURST_EMAIL_MS=${BURST_EMAIL_MS:-50}
BURST_ROUNDS=${BURST_ROUNDS:-2}
NAME=jobs_bench_$$
PG=postgres://postgres@127.0.0.1:5432/postgres
WORK=$(mktemp -d /tmp/scaleout-bench-jobs.XXXXXX)

log() { printf 'bench/jobs: %s\n' "$*" >&2; }
cleanup() {
  redis-cli -h 127.0.0.1 -p 6379 DEL "jobs:{$NAME}:stream" "jobs:{$NAME}:ids" \
    "jobs:{$NAME}:delayed" "jobs:{$NAME}:held" "jobs:{$NAME}:meta" "jobs:{$NAME}:dead" "jobs:{$NAME}:prune" >/dev/null 2>&1 || true
  psql -X -h 127.0.0.1 -U postgres -w -d postgres -qc \
    "DROP TABLE IF EXISTS jobs_$NAME, jobs_${NAME}_dead, ${NAME}_done, ${NAME}_effects" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Reuse the state tier when it answers; otherwise start it (fails loudly if it cannot).
if ! { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 &&
  psql -X -h 127.0.0.1 -U postgres -w -d postgres -Atqc 'select 1' >/dev/null 2>&1; }; then
  scripts/services up >/dev/null
fi
if [ "$PROFILE" = release ]; then
  log "building the examples (release)"
  cargo build --release -q -p jobs --example jobs_bench
  [[ $PARTS == *checkout* ]] && cargo build --release -q -p shop --example checkout_p99
  [[ $PARTS == *burst* ]] && cargo build --release -q -p fleet --example burst_drain &&
    cargo build --release -q -p scaleout
  BIN=target/release/examples/jobs_bench
  CK_BIN=target/release/examples/checkout_p99
  BURST_BIN=target/release/examples/burst_drain
  SCALEOUT_BIN=$PWD/target/release/scaleout
else
  log "building the examples (dev profile: dependencies optimised, our crates not)"
  cargo build -q -p jobs --example jobs_bench
  [[ $PARTS == *checkout* ]] && cargo build -q -p shop --example checkout_p99
  [[ $PARTS == *burst* ]] && cargo build -q -p fleet --example burst_drain &&
    cargo build -q -p scaleout
  BIN=target/debug/examples/jobs_bench
  CK_BIN=target/debug/examples/checkout_p99
  BURST_BIN=target/debug/examples/burst_drain
  SCALEOUT_BIN=$PWD/target/debug/scaleout
fi

url_of() {
  case $1 in
    redis) echo redis://127.0.0.1:6379 ;;
    postgres) echo "$PG" ;;
    sqlite) echo "sqlite:$WORK/jobs.db" ;;
  esac
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE"
if [[ $PARTS == *queue* ]]; then
echo "| handler | backend | workers | jobs | drain jobs/s | enqueue jobs/s | load (1 min) |"
echo "|---|---|---|---|---|---|---|"
for h in $HANDLERS; do
  extra=()
  [ "$h" = pg-effect ] && extra=("$PG")
  for b in $BACKENDS; do
    for w in $WORKERS; do
      line=$("$BIN" "$(url_of "$b")" "$JOBS" "$w" "$NAME" "${extra[@]}")
      load=$(cut -d' ' -f1 /proc/loadavg)
      log "$line load=$load"
      python3 - "$line" "$load" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["processed"] >= r["jobs"], r
print(f"| {r['handler']} | {r['backend']} | {r['workers']} | {r['jobs']} | {r['jobs_per_s']} | {r['enqueue_per_s']} | {sys.argv[2]} |")
PY
    done
  done
done
fi
if [[ $PARTS == *checkout* ]]; then
  echo
  echo "| confirmation | e-mail ms | checkouts | concurrency | p50 ms | p99 ms | mean ms | load (1 min) |"
  echo "|---|---|---|---|---|---|---|---|"
  for email in 0 "$EMAIL_MS_SLOW"; do
    log "checkout: e-mail ${email} ms, $CK_ROUNDS rounds of $CK_CHECKOUTS"
    "$CK_BIN" "$CK_ROUNDS" "$CK_CHECKOUTS" "$CK_CONC" "$email" inline redis postgres sqlite |
      while read -r line; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        python3 - "$line" "$load" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
mode = "inline" if r["mode"] == "inline" else f"enqueued ({r['mode']})"
print(f"| {mode} | {r['email_ms']} | {r['checkouts']} | {r['conc']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_ms']:.2f} | {sys.argv[2]} |")
PY
      done
  done
fi
if [[ $PARTS == *burst* ]]; then
  echo
  echo "| workers | jobs | e-mail ms | drain s | most workers ready | load (1 min) |"
  echo "|---|---|---|---|---|---|"
  log "burst: $BURST_JOBS jobs, $BURST_ROUNDS rounds"
  "$BURST_BIN" "$SCALEOUT_BIN" redis://127.0.0.1:6379 "$BURST_JOBS" "$BURST_EMAIL_MS" "$BURST_ROUNDS" |
    while read -r line; do
      load=$(cut -d' ' -f1 /proc/loadavg)
      python3 - "$line" "$load" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"| {r['fleet']} | {r['jobs']} | {r['email_ms']} | {r['drain_s']:.2f} | {r['most_ready']} | {sys.argv[2]} |")
PY
    done
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'jobs:{burst*' | xargs -r redis-cli -h 127.0.0.1 -p 6379 DEL >/dev/null
fi
echo
echo "Load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)."
