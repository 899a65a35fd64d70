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
# usage: bench/jobs.sh    (env: JOBS=20000 WORKERS="1 2 4" BACKENDS="redis postgres sqlite"
#                          HANDLERS="noop pg-effect" PROFILE=release|dev)
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-20000}
WORKERS=${WORKERS:-"1 2 4"}
BACKENDS=${BACKENDS:-"redis postgres sqlite"}
HANDLERS=${HANDLERS:-"noop pg-effect"}
PROFILE=${PROFILE:-release}
NAME=jobs_bench_$$
PG=postgres://postgres@127.0.0.1:5432/postgres
WORK=$(mktemp -d /tmp/scaleout-bench-jobs.XXXXXX)

log() { printf 'bench/jobs: %s\n' "$*" >&2; }
cleanup() {
  redis-cli -h 127.0.0.1 -p 6379 DEL "jobs:{$NAME}:stream" "jobs:{$NAME}:ids" \
    "jobs:{$NAME}:delayed" "jobs:{$NAME}:held" "jobs:{$NAME}:meta" "jobs:{$NAME}:dead" >/dev/null 2>&1 || true
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
  log "building the example (release)"
  cargo build --release -q -p jobs --example jobs_bench
  BIN=target/release/examples/jobs_bench
else
  log "building the example (dev profile: dependencies optimised, jobs crate not)"
  cargo build -q -p jobs --example jobs_bench
  BIN=target/debug/examples/jobs_bench
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
echo
echo "Load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)."
