#!/usr/bin/env bash
# The load generator side by side with wrk, same machine, same targets, alternating rounds:
#
#   1. efficiency: closed loop, one thread each, pinned to GEN_CPU with taskset, CONNS
#      connections, DURATION seconds, against
#        - nginx with its defaults (1 worker, static index.html, keepalive_requests 1000:
#          both generators must reconnect), and
#        - `scaleout backend` (keeps connections open),
#      each pinned to SRV_CPU. Reports requests/s and CPU µs per request (user+sys of the
#      generator process from /usr/bin/time).
#   2. timing precision against nginx: closed loop on one connection (the service time),
#      then open loop at OPEN_RATE req/s; reports both p50s and the open loop's schedule
#      lag (how late each request left, from the report).
#
#   bench/load.sh            # ROUNDS=3 DURATION=10 CONNS=50 OPEN_RATE=1000
#   TARGETS=nginx bench/load.sh
#   PHASES=timing AWAKE=1 bench/load.sh
#
# PHASES (default "efficiency timing") picks the phases. AWAKE=1 runs a SCHED_IDLE busy
# loop on both CPUs during the timing phase: it takes no time from anything else
# (SCHED_IDLE yields at once to any runnable task) but keeps the vCPUs from halting, so the
# open-loop p50 no longer includes the wake-up of an idle CPU (on a VM, the host
# rescheduling a halted vCPU). The difference between the two runs is that wake-up cost,
# which a real client of an idle server also pays.
#
# Figures go to BENCHMARKS.md by hand with the load average printed here: the machine is
# shared, and a figure taken at load average > 1 is provisional.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
OPEN_RATE=${OPEN_RATE:-1000}
GEN_CPU=${GEN_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
TARGETS=${TARGETS:-"nginx backend"}
PHASES=${PHASES:-"efficiency timing"}
AWAKE=${AWAKE:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/scaleout}

# Tools, installed idempotently from Debian when missing.
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need[@]}" >/dev/null; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p scaleout)

TMP=$(mktemp -d /tmp/scaleout-bench-load.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ok() { for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

# nginx: only what a temp prefix needs; every keep-alive setting is nginx's default.
NPORT=$(free_port)
mkdir -p "$TMP/html" "$TMP/logs"
echo '<html><body>Welcome to nginx!</body></html>' > "$TMP/html/index.html"
cat > "$TMP/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/body;
  proxy_temp_path $TMP/proxy;
  fastcgi_temp_path $TMP/fastcgi;
  uwsgi_temp_path $TMP/uwsgi;
  scgi_temp_path $TMP/scgi;
  server { listen 127.0.0.1:$NPORT; root $TMP/html; }
}
CONF
chmod -R a+rX "$TMP"
taskset -c "$SRV_CPU" "$NGINX" -p "$TMP" -e "$TMP/logs/error.log" -c "$TMP/nginx.conf" &
PIDS+=($!)
wait_ok "http://127.0.0.1:$NPORT/"

BPORT=$(free_port)
taskset -c "$SRV_CPU" "$BIN" backend --listen "127.0.0.1:$BPORT" --body "ok" 2>/dev/null &
PIDS+=($!)
wait_ok "http://127.0.0.1:$BPORT/"

url_of() { case "$1" in nginx) echo "http://127.0.0.1:$NPORT/" ;; backend) echo "http://127.0.0.1:$BPORT/" ;; esac; }

echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')  binary: $BIN"
echo "targets: nginx $("$NGINX" -v 2>&1 | cut -d/ -f2) defaults (cpu $SRV_CPU), scaleout backend (cpu $SRV_CPU); generators on cpu $GEN_CPU"
echo "${DURATION}s runs, $CONNS connections, one thread, $ROUNDS rounds alternating"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %-6s %-22s %10s %10s %8s %12s %10s\n' target round tool requests "req/s" "cpu s" "cpu us/req" reconnects

cpu_of() { awk '{print $1+$2}' "$1"; }
row() { # target round tool requests rps cpu reconnects
  printf '%-8s %-6s %-22s %10s %10.0f %8.2f %12.2f %10s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$(echo "$6 $4" | awk '{print $1/$2*1e6}')" "$7"
}
run_wrk() { # target round
  /usr/bin/time -f '%U %S' -o "$TMP/wrk.time" taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$(url_of "$1")" > "$TMP/wrk.out"
  row "$1" "$2" "wrk -t1" "$(awk '/requests in/ {print $1}' "$TMP/wrk.out")" \
    "$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.out")" "$(cpu_of "$TMP/wrk.time")" "-"
}
run_so() { # target round
  /usr/bin/time -f '%U %S' -o "$TMP/so.time" taskset -c "$GEN_CPU" "$BIN" load "$(url_of "$1")" --closed-loop --threads 1 \
    --connections "$CONNS" --duration "${DURATION}s" --progress off --json "$TMP/so.json" > /dev/null
  read -r n rps rc < <(python3 -c "import json;r=json.load(open('$TMP/so.json'));print(r['completed'],r['achieved_rps'],r.get('reconnects','-'))")
  row "$1" "$2" "scaleout load" "$n" "$rps" "$(cpu_of "$TMP/so.time")" "$rc"
}

case " $PHASES " in *" efficiency "*) ;; *) TARGETS= ;; esac
for t in $TARGETS; do
  for r in $(seq 1 "$ROUNDS"); do
    # Alternate which generator goes first, so neither always gets the quieter slot.
    if [ $((r % 2)) -eq 1 ]; then run_wrk "$t" "$r"; run_so "$t" "$r"; else run_so "$t" "$r"; run_wrk "$t" "$r"; fi
  done
done
echo "load average after efficiency runs: $(cut -d' ' -f1-3 /proc/loadavg)"

case " $PHASES " in *" timing "*) ;; *) exit 0 ;; esac
if [ "$AWAKE" = 1 ]; then
  for c in "$GEN_CPU" "$SRV_CPU"; do
    taskset -c "$c" chrt -i 0 sh -c 'while :; do :; done' &
    PIDS+=($!)
  done
fi
echo
echo "timing precision against nginx (${DURATION}s each, one thread, pinned to cpu $GEN_CPU, AWAKE=$AWAKE):"
for r in $(seq 1 "$ROUNDS"); do
  taskset -c "$GEN_CPU" "$BIN" load "$(url_of nginx)" --closed-loop --threads 1 --connections 1 \
    --duration "${DURATION}s" --progress off --json "$TMP/c1.json" > /dev/null
  taskset -c "$GEN_CPU" "$BIN" load "$(url_of nginx)" --rate "$OPEN_RATE" --threads 1 \
    --duration "${DURATION}s" --progress off --json "$TMP/open.json" > /dev/null || true
  python3 - "$TMP/c1.json" "$TMP/open.json" "$r" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); o = json.load(open(sys.argv[2])); l = o.get("schedule_lag", {})
print(f"round {sys.argv[3]}: closed 1 conn p50 {c['p50_ms']*1e3:.1f} us | open {o['target_rps']:.0f}/s p50 {o['p50_ms']*1e3:.1f} us "
      f"(diff {(o['p50_ms']-c['p50_ms'])*1e3:+.1f} us) p99 {o['p99_ms']*1e3:.1f} us | schedule lag p50 {l.get('p50_us',0):.1f} "
      f"p90 {l.get('p90_us',0):.1f} p99 {l.get('p99_us',0):.1f} max {l.get('max_us',0):.1f} us timerfd {l.get('precise_timer')} | "
      f"sent {o['sent']} late {o['late_sends']} errors {o['errors']['total']}")
PY
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
