#!/usr/bin/env bash
# Side-by-side benchmark of the load balancer: the same wrk load, on loopback, through
#   direct    the fixed backend itself (`scaleout backend`, or nginx static if missing)
#   nginx     1 worker process, upstream keepalive
#   haproxy   nbthread 1, http-reuse always
#   scaleout  `scaleout lb --workers 1`, keep-alive pool to the backend
# alternating targets within each round (ROUNDS rounds) in one invocation.
#
#   bench/lb.sh              # ROUNDS=3 DURATION=10 CONNS=64 RATE=auto WORKERS=1
#   WORKERS=2 bench/lb.sh    # nginx worker_processes 2, HAProxy nbthread 2, --workers 2,
#                            # every process on both cores (GEN_CPU=SRV_CPU=0,1)
#
# CPU per request: utime+stime of each target's processes (nginx: master + workers) from
# /proc over each wrk run, divided by the requests wrk completed.
#
# CPU pinning (taskset; the machine has 2 cores): the load generator runs on GEN_CPU
# (default 0); every proxy and the backend run on SRV_CPU (default 1), so each proxy
# shares one core with the backend exactly as the others do, and never with wrk. Set
# BACKEND_CPU to move the backend elsewhere.
#
# Phase 1, saturation: `wrk -t1 -cCONNS -dDURATION --latency`: requests/s, p50, p99.
# Phase 2, fixed rate: `scaleout load --rate RATE` (open loop, one thread): p50/p99 and
# the p50 each proxy adds over direct. RATE=auto (the default) takes half the slowest
# proxy's phase-1 req/s, so no target is pushed past saturation (an overloaded target
# measures its queue, not its added latency); set RATE=10000 to follow the issue literally. wrk2 is not in Debian; scaleout's own generator is
# open loop, so queueing behind a stall is counted.
#
# Tools come from Debian when missing (apt-get update at most once). Every server runs
# from its own config, pid file and logs under a temp dir, on free ports of 127.0.0.1;
# only processes this script started are stopped, by pid. Figures go to BENCHMARKS.md by
# hand with the date and a note of what else ran on the machine.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
RATE=${RATE:-auto}
WORKERS=${WORKERS:-1}
if [ "$WORKERS" -gt 1 ]; then
  GEN_CPU=${GEN_CPU:-0,1}
  SRV_CPU=${SRV_CPU:-0,1}
fi
GEN_CPU=${GEN_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
BACKEND_CPU=${BACKEND_CPU:-$SRV_CPU}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/scaleout}
SKIP_BUILD=${SKIP_BUILD:-0}

# --- tools ------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v taskset >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian"
  apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

if [ "$SKIP_BUILD" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p scaleout)
fi
[ -x "$BIN" ] || { echo "missing $BIN" >&2; exit 2; }

# --- processes --------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/scaleout-bench-lb.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 100); do curl -fs -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not answering: $1" >&2; return 1
}

BPORT=$(free_port); NPORT=$(free_port); HPORT=$(free_port); SPORT=$(free_port); APORT=$(free_port)
mkdir -p "$TMP/nginx-backend" "$TMP/nginx-proxy"

nginx_common() { # $1 prefix dir [$2 workers]
  cat <<CONF
daemon off;
worker_processes ${2:-1};
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
CONF
}
nginx_temp_paths() {
  cat <<CONF
  access_log off;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
CONF
}

# The backend: scaleout's fixed-response server, or nginx static when it is missing.
if "$BIN" backend --help >/dev/null 2>&1; then
  BACKEND_KIND="scaleout backend"
  taskset -c "$BACKEND_CPU" "$BIN" backend --listen "127.0.0.1:$BPORT" --body "ok" \
    > "$TMP/backend.log" 2>&1 &
  PIDS+=($!)
  BACKEND_PID=$!
else
  BACKEND_KIND="nginx static"
  { nginx_common "$TMP/nginx-backend"; echo "http {"; nginx_temp_paths "$TMP/nginx-backend"
    echo "  server { listen 127.0.0.1:$BPORT; location / { return 200 \"ok\"; } }"; echo "}"; } \
    > "$TMP/nginx-backend/nginx.conf"
  taskset -c "$BACKEND_CPU" "$NGINX" -e "$TMP/nginx-backend/error.log" \
    -c "$TMP/nginx-backend/nginx.conf" -p "$TMP/nginx-backend" &
  PIDS+=($!)
  BACKEND_PID=$!
fi
wait_http "http://127.0.0.1:$BPORT/" || { cat "$TMP"/backend.log "$TMP"/nginx-backend/error.log >&2 2>/dev/null; exit 1; }

# nginx: one worker, keep-alive upstream.
{ nginx_common "$TMP/nginx-proxy" "$WORKERS"; echo "http {"; nginx_temp_paths "$TMP/nginx-proxy"; cat <<CONF
  upstream backend {
    server 127.0.0.1:$BPORT;
    keepalive 128;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:$NPORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_buffering on;
    }
  }
}
CONF
} > "$TMP/nginx-proxy/nginx.conf"
taskset -c "$SRV_CPU" "$NGINX" -e "$TMP/nginx-proxy/error.log" -c "$TMP/nginx-proxy/nginx.conf" -p "$TMP/nginx-proxy" &
PIDS+=($!)
NGINX_PID=$!

# HAProxy: one thread, connection reuse to the backend.
cat > "$TMP/haproxy.cfg" <<CONF
global
  nbthread $WORKERS
  maxconn 4096
  pidfile $TMP/haproxy.pid
defaults
  mode http
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:$HPORT
  default_backend be
backend be
  server b1 127.0.0.1:$BPORT
CONF
taskset -c "$SRV_CPU" "$HAPROXY" -db -f "$TMP/haproxy.cfg" > "$TMP/haproxy.log" 2>&1 &
PIDS+=($!)
HAPROXY_PID=$!

# scaleout lb: one worker thread.
taskset -c "$SRV_CPU" "$BIN" lb --listen "127.0.0.1:$SPORT" --backend "http://127.0.0.1:$BPORT" \
  --workers "$WORKERS" --strategy round_robin --admin "127.0.0.1:$APORT" --admin-token "bench-$RANDOM$RANDOM" \
  > "$TMP/scaleout-lb.log" 2>&1 &
PIDS+=($!)
SCALEOUT_PID=$!

wait_http "http://127.0.0.1:$NPORT/" || { cat "$TMP/nginx-proxy/error.log" >&2; exit 1; }
wait_http "http://127.0.0.1:$HPORT/" || { cat "$TMP/haproxy.log" >&2; exit 1; }
wait_http "http://127.0.0.1:$SPORT/" || { cat "$TMP/scaleout-lb.log" >&2; exit 1; }

TARGETS=(direct nginx haproxy scaleout)
declare -A PID_OF=(
  [direct]=$BACKEND_PID
  [nginx]=$NGINX_PID
  [haproxy]=$HAPROXY_PID
  [scaleout]=$SCALEOUT_PID
)
# CPU time (ms) of a process and its children (nginx's workers), from /proc.
cpu_ms() {
  python3 - "$1" <<'PY'
import os, sys
root = sys.argv[1]
hz = os.sysconf("SC_CLK_TCK")
def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])  # ppid, utime + stime
total = 0
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        ppid, ticks = stat(p)
    except (OSError, IndexError, ValueError):
        continue
    if p == root or str(ppid) == root:
        total += ticks
print(total * 1000 // hz)
PY
}
declare -A URL=(
  [direct]="http://127.0.0.1:$BPORT/"
  [nginx]="http://127.0.0.1:$NPORT/"
  [haproxy]="http://127.0.0.1:$HPORT/"
  [scaleout]="http://127.0.0.1:$SPORT/"
)

echo "backend: $BACKEND_KIND on cpu $BACKEND_CPU; proxies ($WORKERS worker(s)) on cpu $SRV_CPU; load generator on cpu $GEN_CPU"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "versions: $("$NGINX" -v 2>&1 | cut -d' ' -f3), $("$HAPROXY" -v 2>&1 | head -1 | cut -d' ' -f1-3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo

RESULTS="$TMP/results.tsv"
: > "$RESULTS"

# wrk's latency lines look like "     50%  523.00us"; print milliseconds.
wrk_pct() { awk -v p="$1" '$1==p {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' "$2"; }

echo "phase 1: wrk -t1 -c$CONNS -d${DURATION}s --latency, $ROUNDS rounds, targets alternating"
printf '%-6s %-9s %12s %10s %10s %12s\n' round target "req/s" "p50 ms" "p99 ms" "cpu us/req"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    c0=$(cpu_ms "${PID_OF[$t]}")
    taskset -c "$GEN_CPU" wrk -t"$WORKERS" -c"$CONNS" -d"${DURATION}s" --latency "${URL[$t]}" > "$TMP/wrk.out"
    c1=$(cpu_ms "${PID_OF[$t]}")
    rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.out")
    reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk.out")
    cpu=$(python3 -c "print(($c1 - $c0) * 1000 / max(1, $reqs))")
    p50=$(wrk_pct 50% "$TMP/wrk.out"); p99=$(wrk_pct 99% "$TMP/wrk.out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' "$TMP/wrk.out" | tr '\n' ' ')
    printf '%-6s %-9s %12.0f %10.3f %10.3f %12.2f %s\n' "$r" "$t" "$rps" "$p50" "$p99" "$cpu" "$errs"
    printf 'wrk\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$rps" "$p50" "$p99" "$cpu" >> "$RESULTS"
  done
done

if [ "$RATE" = auto ]; then
  RATE=$(python3 - "$RESULTS" <<'PY'
import sys, statistics as st
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
slowest = min(st.median(float(r[3]) for r in rows if r[2] == t) for t in {r[2] for r in rows})
print(max(100, int(slowest / 2 / 100) * 100))
PY
)
fi
echo
echo "phase 2: scaleout load --rate $RATE (open loop, 1 thread) for ${DURATION}s, $ROUNDS rounds"
printf '%-6s %-9s %12s %10s %10s\n' round target "achieved/s" "p50 ms" "p99 ms"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    taskset -c "$GEN_CPU" "$BIN" load "${URL[$t]}" --rate "$RATE" --threads 1 --duration "${DURATION}s" \
      --max-connections 512 --progress off --min-rate off --json "$TMP/rate.json" > /dev/null 2>&1 || true
    read -r rps p50 p99 < <(python3 -c "import json;r=json.load(open('$TMP/rate.json'));print(r['achieved_rps'],r['p50_ms'],r['p99_ms'])")
    printf '%-6s %-9s %12.0f %10.3f %10.3f\n' "$r" "$t" "$rps" "$p50" "$p99"
    printf 'rate\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$rps" "$p50" "$p99" >> "$RESULTS"
  done
done

echo
python3 - "$RESULTS" "$RATE" <<'PY'
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
rate = sys.argv[2]
def med(phase, target, col):
    return st.median(float(r[col]) for r in rows if r[0] == phase and r[2] == target)
targets = ["direct", "nginx", "haproxy", "scaleout"]
print("summary (medians over rounds)")
print(f"{'target':<9} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'x direct':>9} {'cpu us/req':>10} | {'@'+rate+'/s p50':>12} {'p99':>8} {'added p50':>10}")
d_rps, d_p50 = med("wrk", "direct", 3), med("rate", "direct", 4)
for t in targets:
    rps, p50, p99 = med("wrk", t, 3), med("wrk", t, 4), med("wrk", t, 5)
    fp50, fp99 = med("rate", t, 4), med("rate", t, 5)
    added = "" if t == "direct" else f"{fp50 - d_p50:+.3f}"
    cpu = med("wrk", t, 6)
    print(f"{t:<9} {rps:>10.0f} {p50:>8.3f} {p99:>8.3f} {rps / d_rps:>9.2f} {cpu:>10.2f} | {fp50:>12.3f} {fp99:>8.3f} {added:>10}")
s = med("wrk", "scaleout", 3)
print(f"scaleout / nginx req/s:   {s / med('wrk', 'nginx', 3):.2f}")
print(f"scaleout / haproxy req/s: {s / med('wrk', 'haproxy', 3):.2f}")
sc = med("wrk", "scaleout", 6)
print(f"scaleout / nginx cpu per request:   {sc / med('wrk', 'nginx', 6):.2f}")
print(f"scaleout / haproxy cpu per request: {sc / med('wrk', 'haproxy', 6):.2f}")
sa, ha, na = (med("rate", t, 4) - d_p50 for t in ("scaleout", "haproxy", "nginx"))
print(f"added p50 at {rate}/s: scaleout {sa:+.3f} ms, haproxy {ha:+.3f} ms, nginx {na:+.3f} ms")
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
