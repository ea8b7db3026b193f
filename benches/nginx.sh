#!/usr/bin/env bash
# parapet against nginx, side by side, on loopback.
#
#   benches/nginx.sh                 # 3 rounds of every scenario, ~4 minutes
#   ROUNDS=5 DURATION=10 benches/nginx.sh
#   PARAPET_BIN=/tmp/parapet-old ONLY=bare benches/nginx.sh     # a given build, not this checkout's
#   PARAPET_SERVER='idle_release = "0s"' ONLY=idle benches/nginx.sh   # more [server] keys for parapet
#   WSBENCH_BIN=/tmp/wsbench ONLY=websocket benches/nginx.sh   # an already built examples/wsbench
#   PARAPET_BASE=/tmp/parapet-before ROUNDS=7 ONLY="bare chain" benches/nginx.sh
#                                    # a third proxy: another parapet build, in the same rotation
#                                    # (nginx, base, parapet), for a change measured side by side
#
# Needs nginx and wrk (Debian: apt-get install -y nginx wrk), oha (cargo install oha) and python3; it
# installs what is missing. It starts one origin (nginx, one worker), an nginx reverse proxy (one worker,
# upstream keepalive) and parapet (server.workers = 1) in front of the same origin, all on 127.0.0.1
# with free ports, and alternates the two proxies A B A B for ROUNDS rounds. For each proxy it reads the
# process's CPU time from /proc/PID/stat around each run. Every run is bounded by DURATION seconds.
#
# Scenarios (nginx configured to do the same work):
#   bare    a 5-byte response, keep-alive
#   chain   the same through access_log (json, to a file), headers, compress and errors
#           (nginx: access_log to a file, add_header always, gzip on)
#   gzip    a 100 kB JSON body compressed by the proxy at level 6
#   stream  a 10 MB response body
#   idle    bytes of RSS per idle keep-alive connection, with IDLE connections open
#   tls_idle   the same over TLS 1.3 (HTTP/1.1 by ALPN), on the TLS listeners
#   tls     `bare` over TLS (HTTP/1.1 keep-alive, TLS 1.3, ECDSA P-256), CPU µs per request at RATE
#           (nginx: `listen ... ssl http2` on the same certificate)
#   handshake  CPU µs per new TLS 1.3 connection with one request each (oha --disable-keepalive), at
#           HANDSHAKE_RATE; no session resumption (oha does not resume)
#   websocket  CPU µs per WebSocket echo round trip (a 128-byte binary message each way) over WS_TUNNELS
#           tunnels at WS_RATE messages/s in all, to a WebSocket echo origin (examples/wsbench.rs; nginx:
#           proxy_http_version 1.1 with the Upgrade and Connection headers); and bytes of RSS per idle
#           tunnel with WS_IDLE tunnels open
#
# Metrics: CPU microseconds per request at a fixed offered rate (oha -q RATE -c 64 --latency-correction;
# the headline; for `bare`, `chain` and `gzip` also split into user and system time), closed-loop
# requests/s (wrk -c 64), throughput for `stream`, and RSS per idle
# connection. The table prints medians with min and max, the parapet/nginx ratio of the medians (the
# headline: a target is met if it is), and the median and range of the ratios taken round by round
# (each round's two figures a few seconds apart, so a machine that slows down or speeds up during
# the run moves them less). RESULTS=FILE keeps the raw figures.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
RATE=${RATE:-10000}          # offered rate for bare and chain
GZIP_RATE=${GZIP_RATE:-400}  # offered rate for gzip (100 kB at level 6 costs about 1 ms of CPU)
IDLE=${IDLE:-5000}
IDLE_SETTLE=${IDLE_SETTLE:-2}  # seconds the idle connections sit before RSS is read
HANDSHAKE_RATE=${HANDSHAKE_RATE:-1000}  # offered rate of new TLS connections for `handshake`
WS_TUNNELS=${WS_TUNNELS:-64}  # tunnels the websocket load spreads its messages over
WS_RATE=${WS_RATE:-5000}      # echo round trips per second in all, for `websocket`
WS_IDLE=${WS_IDLE:-1000}      # idle tunnels held for the RSS figure
ONLY=${ONLY:-"bare chain gzip stream idle tls_idle tls handshake websocket"}   # the scenarios to run
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
stat="python3 $here/nginx/stat.py"
source "$here/lib.sh"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  apt-get update -qq && apt-get install -y -qq nginx wrk >/dev/null
fi
if ! need oha; then
  cargo install oha --locked
fi
ulimit -n "$(ulimit -Hn)"

if [ -n "${PARAPET_BIN:-}" ]; then
  parapet=$PARAPET_BIN   # a build to compare, as it is
else
  echo "building parapet (release)..." >&2
  cargo build --release --manifest-path "$repo/Cargo.toml" -q
  parapet="${CARGO_TARGET_DIR:-$repo/target}/release/parapet"
fi
if [ -n "${WSBENCH_BIN:-}" ]; then
  wsbench=$WSBENCH_BIN   # an already built load tool
elif [[ " $ONLY " != *" websocket "* ]]; then
  wsbench=""             # not needed: no build
else
  echo "building the WebSocket load tool (release)..." >&2
  cargo build --release --manifest-path "$repo/Cargo.toml" -q --example wsbench
  wsbench="${CARGO_TARGET_DIR:-$repo/target}/release/examples/wsbench"
fi

work=$(mktemp -d /tmp/parapet-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

read -r ORIGIN NGINX PARAPET BASE NGINX_TLS PARAPET_TLS BASE_TLS WS_ORIGIN < <($stat free-ports 8)
mkdir -p "$work/www" "$work/tmp"
python3 - "$work/www" <<'PY'
import json, os, sys, random
www = sys.argv[1]
random.seed(7)
items = [{"id": i, "name": f"item-{i}", "tags": ["alpha", "beta", "gamma"][: i % 3 + 1],
          "price": round(random.random() * 100, 2), "active": i % 2 == 0,
          "description": "a reasonably typical JSON document, repetitive as API answers are"} for i in range(700)]
data = json.dumps({"items": items}).encode()
open(os.path.join(www, "data.json"), "wb").write(data[:100_000] if len(data) >= 100_000 else data)
open(os.path.join(www, "big.bin"), "wb").write(os.urandom(10 * 1024 * 1024))
PY

# One certificate for both proxies' TLS listeners: ECDSA P-256, self-signed.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost" -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null

common_nginx="user root; worker_processes 1; worker_rlimit_nofile 20000; error_log $work/%s-error.log warn; pid $work/%s.pid;
events { worker_connections 16384; }"

cat > "$work/origin.conf" <<CONF
$(printf "$common_nginx" origin origin)
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path $work/tmp/origin-body;
  proxy_temp_path $work/tmp/origin-proxy;
  types { application/json json; application/octet-stream bin; }
  server {
    listen 127.0.0.1:$ORIGIN backlog=4096;
    location = /5b { default_type text/plain; return 200 "hello"; }
    location / { root $work/www; }
  }
}
CONF

cat > "$work/proxy.conf" <<CONF
$(printf "$common_nginx" proxy proxy)
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path $work/tmp/proxy-body;
  proxy_temp_path $work/tmp/proxy-proxy;
  log_format json escape=json '{"time":"\$time_iso8601","remote":"\$remote_addr","method":"\$request_method","target":"\$request_uri","protocol":"\$server_protocol","status":\$status,"bytes":\$body_bytes_sent,"duration":\$request_time,"user_agent":"\$http_user_agent","referer":"\$http_referer","upstream":"\$upstream_addr","upstream_status":"\$upstream_status"}';
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme;
  proxy_set_header X-Forwarded-Host \$host;
  gzip_types text/plain text/css application/json application/javascript text/xml application/xml image/svg+xml;
  gzip_vary on;
  gzip_proxied any;
  gzip_min_length 256;
  server {
    listen 127.0.0.1:$NGINX backlog=4096;
    location /bare/ { proxy_pass http://origin/; }
    location /chain/ {
      access_log $work/nginx-access.log json buffer=64k flush=100ms;
      add_header X-Frame-Options DENY always;
      proxy_set_header X-Edge parapet;
      gzip on;
      proxy_pass http://origin/;
    }
    location /gzip/ { gzip on; gzip_comp_level 6; proxy_pass http://origin/; }
    location /stream/ { proxy_buffering off; proxy_pass http://origin/; }
    location /ws/ {
      proxy_pass http://127.0.0.1:$WS_ORIGIN/;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 3600s;
    }
  }
  server {
    # "listen ... http2" rather than "http2 on;" (nginx 1.25.1+): the form every nginx since 1.9.5 takes.
    listen 127.0.0.1:$NGINX_TLS ssl http2 backlog=4096;
    ssl_certificate $work/tls.crt;
    ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m;
    location /bare/ { proxy_pass http://origin/; }
  }
}
CONF

parapet_config() { # port access-log tls-port
cat <<CONF
[server]
workers = 1
${PARAPET_SERVER:-}
[listeners.main]
bind = "127.0.0.1:$1"
[listeners.tls]
bind = "127.0.0.1:$3"
[listeners.tls.tls]
certificates = [{ cert = "$work/tls.crt", key = "$work/tls.key" }]
[[routes]]
path = "/bare"
strip_prefix = true
app = "bare"
[[routes]]
path = "/chain"
strip_prefix = true
app = "chain"
[[routes]]
path = "/gzip"
strip_prefix = true
app = "gzip"
[[routes]]
path = "/stream"
strip_prefix = true
app = "bare"
[[routes]]
path = "/ws"
strip_prefix = true
app = "ws"
[apps.ws]
upstream = "ws_origin"
[upstreams.ws_origin]
servers = ["http://127.0.0.1:$WS_ORIGIN"]
[apps.bare]
upstream = "origin"
[apps.chain]
middlewares = ["log", "secure", "compress", "errors"]
upstream = "origin"
[apps.gzip]
middlewares = ["gzip6"]
upstream = "origin"
[upstreams.origin]
servers = ["http://127.0.0.1:$ORIGIN"]
[middlewares.log]
kind = "access_log"
format = "json"
path = "$2"
[middlewares.secure]
kind = "headers"
response.set = { "x-frame-options" = "DENY" }
request.set = { "x-edge" = "parapet" }
[middlewares.gzip6]
kind = "compress"
level = 6
min_size = 256
CONF
}
parapet_config "$PARAPET" "$work/parapet-access.log" "$PARAPET_TLS" > "$work/parapet.toml"
parapet_config "$BASE" "$work/base-access.log" "$BASE_TLS" > "$work/base.toml"


nginx -p "$work" -c "$work/origin.conf" -g 'daemon off;' & pids+=($!)
if [ -n "$wsbench" ]; then "$wsbench" echo "$WS_ORIGIN" & pids+=($!); fi
nginx -p "$work" -c "$work/proxy.conf" -g 'daemon off;' & pids+=($!); nginx_master=$!
PARAPET_LOG=warn "$parapet" run -c "$work/parapet.toml" & pids+=($!); parapet_pid=$!
wait_port "$ORIGIN"; [ -z "$wsbench" ] || wait_port "$WS_ORIGIN"; wait_port "$NGINX"; wait_port "$PARAPET"; wait_port "$NGINX_TLS"; wait_port "$PARAPET_TLS"
nginx_pids="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"

declare -A PORT=([nginx]=$NGINX [parapet]=$PARAPET)
declare -A TLS_PORT=([nginx]=$NGINX_TLS [parapet]=$PARAPET_TLS [base]=$BASE_TLS)
declare -A PIDS=([nginx]="$nginx_pids" [parapet]="$parapet_pid")
proxies="nginx parapet"
if [ -n "${PARAPET_BASE:-}" ]; then
  PARAPET_LOG=warn "$PARAPET_BASE" run -c "$work/base.toml" & pids+=($!)
  PIDS[base]=$!; PORT[base]=$BASE
  wait_port "$BASE"; wait_port "$BASE_TLS"
  proxies="nginx base parapet"
fi
results="$work/results.txt"

# CPU µs per request at a fixed offered rate.
cpu_run() { # proxy scenario path rate [header]
  local proxy=$1 scenario=$2 path=$3 rate=$4 header=${5:-}
  local url="http://127.0.0.1:${PORT[$proxy]}$path" before after n args=()
  [ -n "$header" ] && args=(-H "$header")
  local split0 split1
  before=$($stat cpu ${PIDS[$proxy]})
  split0=($($stat cpu-split ${PIDS[$proxy]}))
  timeout $((DURATION + 30)) oha -z "${DURATION}s" -q "$rate" -c 64 -w --latency-correction --no-tui \
    --output-format json "${args[@]}" "$url" > "$work/oha.json"
  after=$($stat cpu ${PIDS[$proxy]})
  split1=($($stat cpu-split ${PIDS[$proxy]}))
  n=$($stat oha-count "$work/oha.json")
  echo "$scenario cpu_us_per_req $proxy $($stat div $((after - before)) "$n")" >> "$results"
  # The same CPU split into user space and the kernel (clock ticks: 10 ms each, so about 0.2 µs
  # per request at 10,000 requests/s for 5 s).
  echo "$scenario user_us_per_req $proxy $($stat div $((split1[0] - split0[0])) "$n")" >> "$results"
  echo "$scenario sys_us_per_req $proxy $($stat div $((split1[1] - split0[1])) "$n")" >> "$results"
}

# CPU µs per request over TLS at a fixed offered rate; extra oha arguments (--disable-keepalive: one
# request per new connection, so per handshake).
tls_cpu_run() { # proxy scenario rate [oha args...]
  local proxy=$1 scenario=$2 rate=$3 before after n
  shift 3
  before=$($stat cpu ${PIDS[$proxy]})
  timeout $((DURATION + 30)) oha -z "${DURATION}s" -q "$rate" -c 64 -w --latency-correction --no-tui \
    --insecure --output-format json "$@" "https://localhost:${TLS_PORT[$proxy]}/bare/5b" > "$work/oha.json"
  after=$($stat cpu ${PIDS[$proxy]})
  n=$($stat oha-count "$work/oha.json")
  echo "$scenario cpu_us_per_req $proxy $($stat div $((after - before)) "$n")" >> "$results"
}

# Closed-loop requests/s (and bytes/s).
wrk_run() { # proxy scenario path conns metric [header]
  local proxy=$1 scenario=$2 path=$3 conns=$4 metric=$5 header=${6:-}
  local args=()
  [ -n "$header" ] && args=(-H "$header")
  timeout $((DURATION + 30)) wrk -t1 -c"$conns" -d"${DURATION}s" "${args[@]}" "http://127.0.0.1:${PORT[$proxy]}$path" > "$work/wrk.txt"
  read -r rps bps < <($stat wrk "$work/wrk.txt")
  if [ "$metric" = rps ]; then
    echo "$scenario req_per_s $proxy $rps" >> "$results"
  else
    echo "$scenario MB_per_s $proxy $($stat div "$bps" 1048576)" >> "$results"
  fi
}

idle_run() { # proxy [tls]
  local proxy=$1 tls=${2:-} before after port scenario=idle
  port=${PORT[$proxy]}
  if [ -n "$tls" ]; then port=${TLS_PORT[$proxy]}; scenario=tls_idle; fi
  before=$($stat rss ${PIDS[$proxy]})
  coproc IDLER { python3 "$here/nginx/idle.py" 127.0.0.1 "$port" /bare/5b "$IDLE" $tls; }
  read -r -t 120 ready <&"${IDLER[0]}"
  # Both proxies get the same settling time; parapet releases an idle connection's buffers within
  # server.idle_release (1 s).
  sleep "$IDLE_SETTLE"
  after=$($stat rss ${PIDS[$proxy]})
  echo "$scenario bytes_per_conn $proxy $($stat div $((after - before)) "$IDLE")" >> "$results"
  eval "exec ${IDLER[1]}>&-"
  wait "$IDLER_PID" 2>/dev/null || true
}

# CPU µs per WebSocket echo round trip at a fixed message rate.
ws_run() { # proxy
  local proxy=$1 before after n
  before=$($stat cpu ${PIDS[$proxy]})
  n=$(timeout $((DURATION + 60)) "$wsbench" load "ws://127.0.0.1:${PORT[$proxy]}/ws/" "$WS_TUNNELS" "$WS_RATE" "$DURATION" | awk '{print $2}')
  after=$($stat cpu ${PIDS[$proxy]})
  echo "websocket cpu_us_per_round_trip $proxy $($stat div $((after - before)) "$n")" >> "$results"
  echo "websocket round_trips_per_s $proxy $($stat div "$n" "$DURATION")" >> "$results"
}

# Bytes of RSS per idle tunnel.
ws_idle_run() { # proxy
  local proxy=$1 before after
  before=$($stat rss ${PIDS[$proxy]})
  coproc WSIDLE { "$wsbench" idle "ws://127.0.0.1:${PORT[$proxy]}/ws/" "$WS_IDLE"; }
  read -r -t 120 ready <&"${WSIDLE[0]}"
  sleep "$IDLE_SETTLE"
  after=$($stat rss ${PIDS[$proxy]})
  echo "websocket bytes_per_idle_tunnel $proxy $($stat div $((after - before)) "$WS_IDLE")" >> "$results"
  eval "exec ${WSIDLE[1]}>&-"
  wait "$WSIDLE_PID" 2>/dev/null || true
}

# Warm up both: pools, caches, page cache.
for proxy in $proxies; do
  timeout 30 oha -z 2s -c 16 --no-tui "http://127.0.0.1:${PORT[$proxy]}/bare/5b" > /dev/null
  timeout 30 oha -n 200 -c 4 --no-tui -H 'accept-encoding: gzip' "http://127.0.0.1:${PORT[$proxy]}/gzip/data.json" > /dev/null
  timeout 30 oha -n 200 -c 4 --no-tui --insecure "https://localhost:${TLS_PORT[$proxy]}/bare/5b" > /dev/null
done

wants() { [[ " $ONLY " == *" $1 "* ]]; }
# Idle first, on processes that have served only the warm-up: memory the other scenarios leave to the
# allocator would otherwise blur the RSS difference (either way).
if wants idle; then
  for proxy in $proxies; do idle_run "$proxy"; done
fi
if wants tls_idle; then
  for proxy in $proxies; do idle_run "$proxy" tls; done
fi
if wants websocket; then
  for proxy in $proxies; do ws_idle_run "$proxy"; done
fi

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  for proxy in $proxies; do
    if wants bare; then cpu_run "$proxy" bare /bare/5b "$RATE"; fi
    if wants chain; then cpu_run "$proxy" chain /chain/5b "$RATE"; fi
    if wants gzip; then cpu_run "$proxy" gzip /gzip/data.json "$GZIP_RATE" 'accept-encoding: gzip'; fi
    if wants bare; then wrk_run "$proxy" bare /bare/5b 64 rps; fi
    if wants chain; then wrk_run "$proxy" chain /chain/5b 64 rps; fi
    if wants gzip; then wrk_run "$proxy" gzip /gzip/data.json 64 rps 'Accept-Encoding: gzip'; fi
    if wants stream; then wrk_run "$proxy" stream /stream/big.bin 4 bytes; fi
    if wants tls; then tls_cpu_run "$proxy" tls "$RATE"; fi
    if wants handshake; then tls_cpu_run "$proxy" handshake "$HANDSHAKE_RATE" --disable-keepalive; fi
    if wants websocket; then ws_run "$proxy"; fi
  done
done
size() { curl -s -H 'accept-encoding: gzip' "http://127.0.0.1:${PORT[$1]}/gzip/data.json" | wc -c; }
original=$(wc -c < "$work/www/data.json")
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(oha --version); $("$parapet" --version)"
echo "rounds: $ROUNDS x ${DURATION}s, alternating $proxies; fixed rates: bare/chain/tls $RATE req/s, gzip $GZIP_RATE req/s, handshake $HANDSHAKE_RATE conn/s; websocket $WS_RATE msg/s over $WS_TUNNELS tunnels"
echo "gzip output for $original bytes of JSON: nginx $(size nginx) bytes, parapet $(size parapet) bytes"
echo
$stat summary "$results"
# RESULTS=FILE keeps the raw figures (one line per measurement: scenario metric proxy value, rounds
# in order), to summarise again or compare runs.
if [ -n "${RESULTS:-}" ]; then cp "$results" "$RESULTS"; fi
