#!/usr/bin/env bash
# Instructions (Ir) per request of a parapet build under callgrind: `bare` and `chain` (as in
# benches/nginx.sh: a 5-byte answer from an nginx origin, proxied plain or through access_log (json, to
# a file), headers, compress and errors), N keep-alive requests each (oha -c 4) after 2,000 to warm up,
# the counters zeroed before and dumped after each batch: every thread of the process counted, the
# start and the warm-up not. A count, not a time: it does not move with the machine's load, so two
# builds can be compared on a busy machine (run each a few times: the counts vary by about 0.2%).
#   benches/callgrind.sh BINARY LABEL [N]      # needs valgrind, nginx, oha, python3
# Prints `LABEL bare requests=N Ir=... Ir_per_request=...` and the same for chain; the dumps are left
# in $OUT (default /tmp) as cg-LABEL-SCENARIO.out.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
bin=$1; label=$2; N=${3:-10000}; out=${OUT:-/tmp}
work=$(mktemp -d /tmp/cg.XXXXXX)
read -r ORIGIN PARAPET < <(python3 - <<'PY'
import socket
s=[socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1",0))
print(*[x.getsockname()[1] for x in s])
PY
)
cat > "$work/origin.conf" <<CONF
worker_processes 1; error_log $work/origin-error.log warn; pid $work/origin.pid; daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $work/b; proxy_temp_path $work/p;
  server { listen 127.0.0.1:$ORIGIN; location = /5b { default_type text/plain; return 200 "hello"; } } }
CONF
cat > "$work/parapet.toml" <<CONF
[server]
workers = 1
[listeners.main]
bind = "127.0.0.1:$PARAPET"
[[routes]]
path = "/bare"
strip_prefix = true
app = "bare"
[[routes]]
path = "/chain"
strip_prefix = true
app = "chain"
[apps.bare]
upstream = "origin"
[apps.chain]
middlewares = ["log", "secure", "compress", "errors"]
upstream = "origin"
[upstreams.origin]
servers = ["http://127.0.0.1:$ORIGIN"]
[middlewares.log]
kind = "access_log"
format = "json"
path = "$work/access.log"
[middlewares.secure]
kind = "headers"
response.set = { "x-frame-options" = "DENY" }
request.set = { "x-edge" = "parapet" }
CONF
nginx -p "$work" -c "$work/origin.conf" & npid=$!
PARAPET_LOG=warn valgrind --tool=callgrind ${VG_OPTS:-} --callgrind-out-file="$work/cg.out" "$bin" run -c "$work/parapet.toml" 2>"$work/vg.err" & ppid=$!
trap 'kill $ppid $npid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
wait_port "$PARAPET" 60
for scenario in bare chain; do
  url="http://127.0.0.1:$PARAPET/$scenario/5b"
  oha -n 2000 -c 4 --no-tui "$url" > /dev/null
  callgrind_control -z "$ppid" > /dev/null
  oha -n "$N" -c 4 --no-tui --output-format json "$url" > "$work/oha.json"
  callgrind_control -d "$scenario" "$ppid" > /dev/null
  ok=$(python3 -c "import json,sys; d=json.load(open('$work/oha.json')); print(d['statusCodeDistribution'].get('200',0))")
  f=$(ls -t "$work"/cg.out.* | head -1)
  ir=$(grep -m1 '^summary:' "$f" | awk '{print $2}')
  [ -z "$ir" ] && ir=$(grep -m1 '^totals:' "$f" | awk '{print $2}')
  echo "$label $scenario requests=$ok Ir=$ir Ir_per_request=$(python3 -c "print(round($ir/$ok))")"
  cp "$f" "$out/cg-$label-$scenario.out"
done
