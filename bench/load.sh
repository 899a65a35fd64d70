#!/usr/bin/env bash
# Side-by-side benchmark of the load generator against wrk, same machine, same target:
# nginx serving a 3-byte static response, on its own config, port and temp dir (never a
# system nginx). One generator thread each, pinned to one core with taskset; nginx
# pinned to the other core. Runs alternate (wrk, scaleout, wrk, scaleout, ...).
#
#   bench/load.sh            # ROUNDS=3 DURATION=10 CONNS=64 OPEN_RATE=50000
#
# Prints a table of requests/s and CPU seconds per million requests (user+sys of the
# generator process, from /usr/bin/time), then the open-loop run at OPEN_RATE from one
# thread with its late sends. Figures go to BENCHMARKS.md by hand, with the date and a
# note of what else ran on the machine.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
OPEN_RATE=${OPEN_RATE:-50000}
GEN_CPU=${GEN_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
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
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$TMP/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/body;
  proxy_temp_path $TMP/proxy;
  fastcgi_temp_path $TMP/fastcgi;
  uwsgi_temp_path $TMP/uwsgi;
  scgi_temp_path $TMP/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:$PORT;
    location / { return 200 "ok\n"; }
  }
}
CONF
taskset -c "$SRV_CPU" "$NGINX" -c "$TMP/nginx.conf" -p "$TMP" &
NGINX_PID=$!
trap 'kill $NGINX_PID 2>/dev/null || true; wait $NGINX_PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/"
echo "target: nginx (1 worker, cpu $SRV_CPU) at $URL; generators on cpu $GEN_CPU; ${DURATION}s runs, $CONNS connections, $ROUNDS rounds"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
printf '%-8s %-26s %12s %12s %10s %14s\n' round tool "requests" "req/s" "cpu s" "cpu s / 1M req"

cpu_of() { awk '{print $1+$2}' "$1"; }

for r in $(seq 1 "$ROUNDS"); do
  # wrk
  /usr/bin/time -f '%U %S' -o "$TMP/wrk.time" taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$URL" > "$TMP/wrk.out"
  n=$(awk '/requests in/ {print $1}' "$TMP/wrk.out")
  rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.out")
  cpu=$(cpu_of "$TMP/wrk.time")
  printf '%-8s %-26s %12s %12.0f %10.2f %14.2f\n' "$r" "wrk -t1" "$n" "$rps" "$cpu" "$(echo "$cpu $n" | awk '{print $1/$2*1e6}')"
  # scaleout load, closed loop
  /usr/bin/time -f '%U %S' -o "$TMP/so.time" taskset -c "$GEN_CPU" "$BIN" load "$URL" --closed-loop --threads 1 \
    --connections "$CONNS" --duration "${DURATION}s" --progress off --json "$TMP/so.json" > /dev/null
  n=$(python3 -c "import json;print(json.load(open('$TMP/so.json'))['completed'])")
  rps=$(python3 -c "import json;print(json.load(open('$TMP/so.json'))['achieved_rps'])")
  cpu=$(cpu_of "$TMP/so.time")
  printf '%-8s %-26s %12s %12.0f %10.2f %14.2f\n' "$r" "scaleout load --closed-loop" "$n" "$rps" "$cpu" "$(echo "$cpu $n" | awk '{print $1/$2*1e6}')"
done

echo
echo "open loop: $OPEN_RATE req/s from one pinned thread for ${DURATION}s"
/usr/bin/time -f '%U %S' -o "$TMP/open.time" taskset -c "$GEN_CPU" "$BIN" load "$URL" --rate "$OPEN_RATE" --threads 1 \
  --duration "${DURATION}s" --max-connections 512 --progress off --min-rate off --json "$TMP/open.json" > /dev/null || true
python3 - "$TMP/open.json" "$(cpu_of "$TMP/open.time")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); cpu = float(sys.argv[2])
print(f"target {r['target_rps']:.0f}/s achieved {r['achieved_rps']:.0f}/s ({100*r['achieved_rps']/r['target_rps']:.2f}%)  "
      f"scheduled {r['scheduled']} sent {r['sent']} completed {r['completed']} dropped {r['dropped']}  "
      f"late sends {r['late_sends']} (>{r['late_threshold_ms']} ms, {100*r['late_sends']/max(r['sent'],1):.2f}%)  "
      f"connections {r['connections_opened']}  p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms max {r['max_ms']:.1f} ms  "
      f"errors {r['errors']['total']}  cpu {cpu:.2f}s")
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
