#!/usr/bin/env bash
# bench/shop.sh: the shop's state-tier measurements, side by side in one run.
#
#   A. catalog reads, Redis cache-aside vs no cache (PostgreSQL primary, same data, same
#      Zipf workload): throughput, cache hit rate and DB queries per request, from the
#      shop's /metrics.
#   B. read scaling: the primary made the bottleneck (pool of --pool-size connections, no
#      cache), reads with 0 vs 2 streaming replicas (127.0.0.1:5433 and :5434).
#   C. SQLite multi-process writes: 1, 2 and 4 instance processes sharing one SQLite file
#      (WAL, BEGIN IMMEDIATE), POST /cart with JWT tokens of 8 users: throughput, errors.
#
# The machine is shared and noisy, so every comparison is interleaved: all instances of a
# part run at once, idle except the one under load, and ROUNDS rounds alternate between
# the configurations; the tables give the median and every round's figure.
#
# It starts what it needs (scripts/services up --replicas 2), builds the release binary,
# runs everything on loopback, and prints a Markdown block for BENCHMARKS.md on stdout
# (progress on stderr). It stops only the shop processes it started.
#
# usage: bench/shop.sh    (env: DUR=15s WARM=3s CONNS=32 POOL=1 THREADS=1 ROUNDS=3;
#                          BIN=path skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${DUR:-15s}       # measured length of each run
WARM=${WARM:-3s}      # warm-up before each measured run (not counted)
CONNS=${CONNS:-32}    # closed-loop connections of the load generator
POOL=${POOL:-1}       # part B: connections per pool (primary and each replica)
THREADS=${THREADS:-1} # load generator threads
ROUNDS=${ROUNDS:-3}   # interleaved rounds per comparison
PG=postgres://postgres@127.0.0.1:5432
DB=scaleout_bench_shop

log() { printf 'bench/shop: %s\n' "$*" >&2; }
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
for tool in jq:jq curl:curl python3:python3; do
  command -v "${tool%%:*}" >/dev/null && continue
  log "installing ${tool#*:}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${tool#*:}" >/dev/null
done

scripts/services up --replicas 2 >/dev/null
if [ -n "${BIN:-}" ]; then
  log "using BIN=$BIN (no build)"
else
  log "building the release binary"
  cargo build --release -q -p scaleout
  BIN=$PWD/target/release/scaleout
fi

WORK=$(mktemp -d /tmp/scaleout-bench-shop.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Metrics port of each shop port: /metrics is served only on --metrics-listen.
declare -A MPORT
# start_shop NAME PORT ARGS... : starts one instance, waits until /readyz answers 200.
# Every instance of a run shares one JWT key file (created by the first).
start_shop() {
  local name=$1 port=$2
  shift 2
  MPORT[$port]=$(free_port)
  "$BIN" shop --listen "127.0.0.1:$port" --instance-id "$name" \
    --metrics-listen "127.0.0.1:${MPORT[$port]}" --jwt-secret-file "$WORK/jwt-secret" "$@" \
    >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  local i
  for ((i = 0; i < 600; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && return
    sleep 0.1
  done
  log "$name did not become ready; its log:"; cat "$WORK/$name.log" >&2; exit 1
}

stop_shops() { cleanup; PIDS=(); }

# metric PORT NAME [LABEL-SUBSTRING...]: sum of every sample of NAME whose labels contain
# all the substrings.
metric() {
  local port=$1 name=$2
  shift 2
  curl -s "http://127.0.0.1:${MPORT[$port]}/metrics" | awk -v name="$name" -v subs="$*" '
    BEGIN { n = split(subs, want, " ") }
    $0 !~ /^#/ {
      split($1, parts, "{"); if (parts[1] != name) next
      for (i = 1; i <= n; i++) if (index($1, want[i]) == 0) next
      sum += $NF
    }
    END { printf "%.0f\n", sum }'
}

# warm NAME SCENARIO URL...: a short closed-loop run whose figures are not kept.
warm() {
  local name=$1 scenario=$2
  shift 2
  "$BIN" load --closed-loop -c "$CONNS" -t "$THREADS" -d "$WARM" --scenario "$scenario" \
    --seed 1 --progress off --json "$WORK/$name.warm.json" "$@" >/dev/null 2>&1 || true
}
# measure NAME SEED SCENARIO URL...: a measured closed-loop run (JSON report in $WORK).
# Each run uses its own seed, so virtual users' names never collide with an earlier run's.
measure() {
  local name=$1 seed=$2 scenario=$3
  shift 3
  "$BIN" load --closed-loop -c "$CONNS" -t "$THREADS" -d "$DUR" --scenario "$scenario" \
    --seed "$seed" --progress off --json "$WORK/$name.json" "$@" >/dev/null 2>"$WORK/$name.load.err" || true
  [ -s "$WORK/$name.json" ] || { log "load $name produced no report"; cat "$WORK/$name.load.err" >&2; exit 1; }
}
# Catalog and product requests an instance has served so far.
reads_served() {
  echo $(( $(metric "$1" shop_requests_total 'route="/products/{id}"') + $(metric "$1" shop_requests_total 'route="/catalog"') ))
}
rps() { jq -r '.achieved_rps | . * 10 | round / 10' "$WORK/$1.json"; }
errs() { jq -r '.errors.total' "$WORK/$1.json"; }
p99() { jq -r '.p99_ms | . * 100 | round / 100' "$WORK/$1.json"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

fresh_pg_db() {
  psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" \
    -c "CREATE DATABASE $DB" >/dev/null
}

# ------------------------------------------------------------------ scenarios
cat >"$WORK/reads.toml" <<'EOF'
# Catalog reads: product pages with Zipf popularity over 1,000 ids, and category listings
# weighted like a Zipf over the categories.
[catalog]
products = 1000
zipf_s = 1.0
[[request]]
name = "product"
weight = 14
path = "/products/{product_id}"
[[request]]
name = "catalog books"
weight = 3
path = "/catalog?category=books"
[[request]]
name = "catalog music"
weight = 2
path = "/catalog?category=music"
[[request]]
name = "catalog garden"
weight = 1
path = "/catalog?category=garden"
EOF

# writes_scenario PORT FILE: signs up and logs in 8 users on the instance at PORT (once,
# outside the measurement: argon2 is deliberately slow) and writes a scenario of cart
# writes spread evenly over them, products drawn with Zipf popularity.
writes_scenario() {
  local port=$1 file=$2 i token cred
  printf '[catalog]\nproducts = 1000\nzipf_s = 1.0\n' >"$file"
  for ((i = 0; i < 8; i++)); do
    cred="{\"username\":\"writer$i\",\"password\":\"bench-password-$i\"}"
    curl -s -o /dev/null -X POST -H 'content-type: application/json' -d "$cred" \
      "http://127.0.0.1:$port/signup"
    token=$(curl -s -X POST -H 'content-type: application/json' -d "$cred" \
      "http://127.0.0.1:$port/login" | jq -r .token)
    [ -n "$token" ] && [ "$token" != null ] || { log "login of writer$i failed"; exit 1; }
    cat >>"$file" <<EOF
[[request]]
name = "add to cart $i"
method = "POST"
path = "/cart"
body = '{"product_id": {product_id}, "quantity": {quantity}}'
headers = { content-type = "application/json", authorization = "Bearer $token" }
EOF
  done
}

OUT=$WORK/figures.md
{
  echo "Run: \`bench/shop.sh\` (DUR=$DUR after WARM=$WARM warm-up, closed loop, $CONNS connections, $THREADS generator thread(s)), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores. The machine was shared with other builds and tests at the time; the load generator, the shop instances, PostgreSQL (+2 replicas) and Redis all ran on the same $(nproc) cores."
  echo
} >"$OUT"

# ------------------------------------------------------------------ A. cache vs no cache
log "A. catalog reads: cache (redis) vs none, $ROUNDS interleaved rounds"
fresh_pg_db
declare -A PORT HITS MISSES QUERIES READS RUNS ERRS P99S
for mode in redis none; do
  PORT[$mode]=$(free_port)
  start_shop "cache-$mode" "${PORT[$mode]}" --db "$PG/$DB" --redis redis://127.0.0.1:6379 \
    --cache "$mode" --key-prefix "bench$$-$mode" --pool-size 8
  warm "cache-$mode" "$WORK/reads.toml" "http://127.0.0.1:${PORT[$mode]}/"
  HITS[$mode]=0; MISSES[$mode]=0; QUERIES[$mode]=0; READS[$mode]=0; RUNS[$mode]=""; ERRS[$mode]=0; P99S[$mode]=""
done
seed=100
for ((r = 1; r <= ROUNDS; r++)); do
  for mode in redis none; do
    port=${PORT[$mode]}
    # Counters over the measured run only: scraped before and after it.
    h0=$(metric "$port" shop_cache_hits_total); m0=$(metric "$port" shop_cache_misses_total)
    q0=$(metric "$port" shop_db_queries_total); r0=$(reads_served "$port")
    seed=$((seed + 1))
    measure "cache-$mode-$r" "$seed" "$WORK/reads.toml" "http://127.0.0.1:$port/"
    HITS[$mode]=$(( HITS[$mode] + $(metric "$port" shop_cache_hits_total) - h0 ))
    MISSES[$mode]=$(( MISSES[$mode] + $(metric "$port" shop_cache_misses_total) - m0 ))
    QUERIES[$mode]=$(( QUERIES[$mode] + $(metric "$port" shop_db_queries_total) - q0 ))
    READS[$mode]=$(( READS[$mode] + $(reads_served "$port") - r0 ))
    RUNS[$mode]+=" $(rps "cache-$mode-$r")"
    ERRS[$mode]=$(( ERRS[$mode] + $(errs "cache-$mode-$r") ))
    P99S[$mode]+=" $(p99 "cache-$mode-$r")"
    log "  round $r $mode: $(rps "cache-$mode-$r") req/s"
  done
done
stop_shops
{
  echo "### A. Catalog reads: Redis cache-aside vs no cache (PostgreSQL primary, pool 8, Zipf s=1.0 over 1,000 products)"
  echo
  echo "| cache | req/s (median) | req/s per round | p99 ms (median) | errors | cache hit rate | DB queries / request |"
  echo "|---|---|---|---|---|---|---|"
  for mode in redis none; do
    hit=$(awk -v h="${HITS[$mode]}" -v m="${MISSES[$mode]}" 'BEGIN { if (h + m > 0) printf "%.1f%%", 100 * h / (h + m); else print "n/a (no cache)" }')
    qpr=$(awk -v q="${QUERIES[$mode]}" -v r="${READS[$mode]}" 'BEGIN { if (r > 0) printf "%.3f", q / r; else print "n/a" }')
    # shellcheck disable=SC2086
    echo "| $mode | $(median ${RUNS[$mode]}) |${RUNS[$mode]} | $(median ${P99S[$mode]}) | ${ERRS[$mode]} | $hit | $qpr |"
  done
  echo
  # shellcheck disable=SC2086
  echo "Throughput ratio cached / uncached (medians): **$(ratio "$(median ${RUNS[redis]})" "$(median ${RUNS[none]})")x**. Hit rate and DB queries per catalog/product request are deltas of the shop's /metrics over the measured runs only (after a $WARM warm-up from a cold cache); ${READS[redis]} and ${READS[none]} requests."
  echo
} >>"$OUT"

# ------------------------------------------------------------------ B. read scaling
log "B. read scaling: pool $POOL, no cache, 0 vs 2 replicas, $ROUNDS interleaved rounds"
declare -A PRIM REPL
for n in 0 2; do
  PORT[$n]=$(free_port)
  reps=()
  if [ "$n" = 2 ]; then
    reps=(--replica "postgres://postgres@127.0.0.1:5433/$DB" --replica "postgres://postgres@127.0.0.1:5434/$DB")
  fi
  start_shop "replicas-$n" "${PORT[$n]}" --db "$PG/$DB" --cache none --pool-size "$POOL" "${reps[@]}"
  warm "replicas-$n" "$WORK/reads.toml" "http://127.0.0.1:${PORT[$n]}/"
  PRIM[$n]=0; REPL[$n]=0; RUNS[$n]=""; ERRS[$n]=0; P99S[$n]=""
done
for ((r = 1; r <= ROUNDS; r++)); do
  for n in 0 2; do
    port=${PORT[$n]}
    p0=$(metric "$port" shop_db_queries_total 'role="primary"')
    q0=$(metric "$port" shop_db_queries_total 'role="replica"')
    seed=$((seed + 1))
    measure "replicas-$n-$r" "$seed" "$WORK/reads.toml" "http://127.0.0.1:$port/"
    PRIM[$n]=$(( PRIM[$n] + $(metric "$port" shop_db_queries_total 'role="primary"') - p0 ))
    REPL[$n]=$(( REPL[$n] + $(metric "$port" shop_db_queries_total 'role="replica"') - q0 ))
    RUNS[$n]+=" $(rps "replicas-$n-$r")"
    ERRS[$n]=$(( ERRS[$n] + $(errs "replicas-$n-$r") ))
    P99S[$n]+=" $(p99 "replicas-$n-$r")"
    log "  round $r, $n replicas: $(rps "replicas-$n-$r") req/s"
  done
done
stop_shops
{
  echo "### B. Read scaling: primary pool of $POOL connection(s), no cache, 0 vs 2 streaming replicas"
  echo
  echo "| replicas | req/s (median) | req/s per round | p99 ms (median) | errors | queries served by replicas |"
  echo "|---|---|---|---|---|---|"
  for n in 0 2; do
    share=$(awk -v p="${PRIM[$n]}" -v r="${REPL[$n]}" 'BEGIN { if (p + r > 0) printf "%.1f%%", 100 * r / (p + r); else print "n/a" }')
    # shellcheck disable=SC2086
    echo "| $n | $(median ${RUNS[$n]}) |${RUNS[$n]} | $(median ${P99S[$n]}) | ${ERRS[$n]} | $share |"
  done
  echo
  # shellcheck disable=SC2086
  echo "Throughput ratio 2 replicas / none (medians): **$(ratio "$(median ${RUNS[2]})" "$(median ${RUNS[0]})")x**. Each replica pool also has $POOL connection(s), so the replicas add connections; they (ports 5433 and 5434, made by scripts/services) run on the same cores as the primary, so they add no CPU."
  echo
} >>"$OUT"

# ------------------------------------------------------------------ C. SQLite writes
log "C. SQLite writes with 1, 2, 4 instance processes, $ROUNDS interleaved rounds"
declare -A URLS CART_ERRS
for n in 1 2 4; do
  db="sqlite:$WORK/writes-$n.db"
  URLS[$n]=""
  for ((i = 0; i < n; i++)); do
    port=$(free_port)
    start_shop "sqlite-$n-$i" "$port" --db "$db" --cache none --expected-instances "$n"
    URLS[$n]+=" http://127.0.0.1:$port/"
  done
  writes_scenario "$port" "$WORK/writes-$n.toml"
  # shellcheck disable=SC2086
  warm "sqlite-$n" "$WORK/writes-$n.toml" ${URLS[$n]}
  RUNS[$n]=""; CART_ERRS[$n]=0; P99S[$n]=""
done
for ((r = 1; r <= ROUNDS; r++)); do
  for n in 1 2 4; do
    seed=$((seed + 1))
    # shellcheck disable=SC2086
    measure "sqlite-$n-$r" "$seed" "$WORK/writes-$n.toml" ${URLS[$n]}
    f="$WORK/sqlite-$n-$r.json"
    RUNS[$n]+=" $(jq -r '([.per_kind[] | select(.name | startswith("add to cart")) | .completed - .errors.total] | add) / .duration_s | . * 10 | round / 10' "$f")"
    CART_ERRS[$n]=$(( CART_ERRS[$n] + $(jq -r '[.per_kind[] | select(.name | startswith("add to cart")) | .errors.total] | add' "$f") ))
    P99S[$n]+=" $(jq -r '[.per_kind[] | select(.name | startswith("add to cart")) | .p99_ms] | max | . * 100 | round / 100' "$f")"
    log "  round $r, $n instance(s): $(echo "${RUNS[$n]}" | awk '{ print $NF }') writes/s"
  done
done
stop_shops
{
  echo "### C. SQLite, one file shared by N instance processes: POST /cart ($CONNS connections spread over the instances)"
  echo
  echo "| instances | successful writes/s (median) | per round | cart p99 ms (median) | cart errors | SQLITE_BUSY / locked in logs |"
  echo "|---|---|---|---|---|---|"
  for n in 1 2 4; do
    busy=$(cat "$WORK"/sqlite-"$n"-*.log | grep -ci -E 'SQLITE_BUSY|database is locked' || true)
    # shellcheck disable=SC2086
    echo "| $n | $(median ${RUNS[$n]}) |${RUNS[$n]} | $(median ${P99S[$n]}) | ${CART_ERRS[$n]} | $busy |"
  done
  echo
  echo "8 users (signed up and logged in before the runs; JWT, so any instance accepts any token) add Zipf-drawn products to their carts. Every write is one \`BEGIN IMMEDIATE\` transaction on the one shared file."
  echo
} >>"$OUT"

cat "$OUT"
log "raw reports and logs in $WORK"
