#!/usr/bin/env bash
# Where each proxy's time goes, in numbers that do not depend on how busy the machine is:
#
#   1. user-space instructions per request: each proxy (nginx, HAProxy, `scaleout lb`)
#      runs alone under `valgrind --tool=callgrind` (deterministic instruction counts) and
#      serves N1 then N2 sequential keep-alive requests from a python client; the per
#      request figure is (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up cancels out;
#   2. system calls per request: `strace -c -f` attached to each proxy (natively) while the
#      same client sends N2 requests;
#   3. a `perf record` profile of `scaleout lb` under wrk (top symbols), when perf works.
#
#   bench/lb-profile.sh            # N1=2000 N2=12000; BIN=target/release/scaleout
#
# Every process is started here on free loopback ports and stopped by pid at the end.
# The backend is `scaleout backend` (fixed 2-byte body), never under valgrind.
set -euo pipefail

N1=${N1:-2000}
N2=${N2:-12000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/scaleout}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
for t in valgrind strace python3 "$NGINX" "$HAPROXY" "$BIN"; do
  command -v "$t" >/dev/null || [ -x "$t" ] || { echo "missing $t" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/scaleout-lb-profile.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not answering: $1" >&2; return 1
}
# N sequential GETs on one keep-alive connection.
client() { # port n
  python3 - "$1" "$2" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
for _ in range(int(sys.argv[2])):
    c.request("GET", "/", headers={"Host": "bench"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
}

BPORT=$(free_port)
"$BIN" backend --listen "127.0.0.1:$BPORT" --body ok > "$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$BPORT/"

nginx_conf() { # dir port
  cat <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  keepalive_requests 10000000;
  upstream backend { server 127.0.0.1:$BPORT; keepalive 128; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
}
haproxy_conf() { # port
  cat <<CONF
global
  nbthread 1
defaults
  mode http
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:$1
  default_backend be
backend be
  server b1 127.0.0.1:$BPORT
CONF
}

# Waits (bounded, 60 s) until process $1 has exited; it is not this shell's child.
wait_gone() {
  for _ in $(seq 1 600); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

# start <name> <port> <wrapper...>: starts the proxy (optionally under a wrapper), echoes pid.
start() {
  local name=$1 port=$2; shift 2
  case $name in
    nginx) mkdir -p "$TMP/nginx-$port"; nginx_conf "$TMP/nginx-$port" "$port" > "$TMP/nginx-$port/nginx.conf"
           "$@" "$NGINX" -e "$TMP/nginx-$port/error.log" -c "$TMP/nginx-$port/nginx.conf" -p "$TMP/nginx-$port" \
             > "$TMP/$name-$port.log" 2>&1 & ;;
    haproxy) haproxy_conf "$port" > "$TMP/haproxy-$port.cfg"
           "$@" "$HAPROXY" -db -f "$TMP/haproxy-$port.cfg" > "$TMP/$name-$port.log" 2>&1 & ;;
    scaleout) "$@" "$BIN" lb --listen "127.0.0.1:$port" --backend "http://127.0.0.1:$BPORT" \
             --workers 1 --strategy round_robin > "$TMP/$name-$port.log" 2>&1 & ;;
  esac
  echo $!
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "1. user-space instructions per request (callgrind, Ir; (N2 - N1) = $((N2 - N1)) requests)"
printf '%-9s %14s %14s %12s\n' proxy "Ir @$N1" "Ir @$N2" "Ir/request"
declare -A IR
for name in nginx haproxy scaleout; do
  declare -A got=()
  for n in "$N1" "$N2"; do
    port=$(free_port)
    out="$TMP/callgrind.$name.$n"
    pid=$(start "$name" "$port" valgrind --tool=callgrind --callgrind-out-file="$out.%p" --trace-children=no)
    wait_http "http://127.0.0.1:$port/" >/dev/null
    client "$port" "$n"
    PIDS+=("$pid")
    kill -TERM "$pid"; wait_gone "$pid"
    # wait_http made one request too; it is in both runs and cancels out.
    got[$n]=$(cat "$out".* | awk '/^summary:|^totals:/ {print $2; exit}')
  done
  IR[$name]=$(( (got[$N2] - got[$N1]) / (N2 - N1) ))
  printf '%-9s %14s %14s %12s\n' "$name" "${got[$N1]}" "${got[$N2]}" "${IR[$name]}"
  unset got
done
echo "scaleout / nginx Ir per request: $(python3 -c "print(round(${IR[scaleout]}/${IR[nginx]},2))")"
echo "scaleout / haproxy Ir per request: $(python3 -c "print(round(${IR[scaleout]}/${IR[haproxy]},2))")"

echo
echo "2. system calls per request (strace -c -f, $N2 requests, native)"
for name in nginx haproxy scaleout; do
  port=$(free_port)
  pid=$(start "$name" "$port")
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/" >/dev/null
  strace -c -f -p "$pid" -o "$TMP/strace.$name" &
  spid=$!
  sleep 0.5
  client "$port" "$N2"
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  kill -TERM "$pid"; wait_gone "$pid"
  echo "-- $name: calls per request by syscall"
  awk -v n="$N2" '$1 ~ /^[0-9.]+$/ && NF >= 5 { calls = $4; name = $NF; if (calls / n >= 0.05) printf "   %-16s %6.2f\n", name, calls / n }' "$TMP/strace.$name"
done
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
