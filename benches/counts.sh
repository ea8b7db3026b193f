#!/usr/bin/env bash
# Counts per request for the `bare` path (a 5-byte answer proxied over keep-alive), parapet against
# nginx: figures that do not move with the machine's load, to judge a change by.
#
#   benches/counts.sh                       # N=20000 requests for perf, N/10 under valgrind
#   N=50000 PARAPET_BIN=/tmp/parapet-old benches/counts.sh
#   PATH_=/chain/5b benches/counts.sh      # another route of the same config (see below)
#
# Per request, for each proxy process:
#   instructions   valgrind --tool=callgrind, counters zeroed after a warm-up, dumped after the load
#                  (the proxy alone: the origin and the load generator are other processes)
#   allocations    calls to the allocator (malloc and friends; mimalloc's entry points for parapet)
#                  in the same callgrind dump
#   syscalls, context switches, cpu migrations, page faults
#                  perf stat -e raw_syscalls:sys_enter,context-switches,cpu-migrations,page-faults on
#                  the process
#                  (software events: they work where hardware counters are "not supported")
#   wake-ups       = context switches here: a worker that sleeps in epoll_wait and is woken
#   l1i misses, data lines missed
#                  callgrind's cache simulation in the same run (32 KiB L1 caches, a 256 KiB last
#                  level): instruction-cache misses, and data reads and writes that miss the 256 KiB
#                  level, per request. The load is closed-loop on 64 connections, so every
#                  connection's state is cold by its next request: the second figure is about the
#                  memory a request touches that is not already hot (its connection's state, the
#                  upstream connection's, the copies into them), which costs time that
#                  instructions do not show
#   code lines     the distinct 64-byte lines of machine code run at least once per request, in the
#                  callgrind dump (benches/footprint.py): what the request's path needs in the
#                  instruction cache (32 KiB of L1i is 512 lines), which the kernel's work between
#                  two requests evicts
# FILES=DIR: the origin also serves DIR's files, and both proxies gzip them at level 6 under /gzip/ as
# benches/gzip-corpus/run.sh configures them: PATH_=/gzip/css/x.css OHA_ARGS="-H accept-encoding:gzip"
# counts one file's gzipped proxying.
# OHA_ARGS: more options for the load, e.g. OHA_ARGS=--disable-keepalive for a connection per request.
# RATE=10000: the perf counts at that fixed offered rate rather than closed loop. VRATE=200: the
# callgrind load at that fixed rate (requests/s of a proxy that valgrind slows some 50 times): few
# requests in flight at once, as at a fixed rate natively, where closed loop has all 64 in flight and
# every connection's memory cold. The simulation sees only the proxy's own memory accesses, not the
# kernel's: a buffer a read has just filled counts as cold there (the request's bytes the parser reads,
# an upstream response's), which it is not on the machine: much of VRATE's data-line figure is such
# reads (session 18); and oha reconnects against a proxy this slow, so it includes connection set-up.
# TRACE=1: also the system calls by kind, with their time
# (perf trace -s). RECORD=1: a cpu-clock profile of each proxy, user and kernel (perf record), with
# its top symbols.
# The load is oha with 64 connections, closed loop. Top functions by instructions: the callgrind files
# are kept in $OUT (default /tmp/parapet-counts), read them with callgrind_annotate.
set -euo pipefail

N=${N:-20000}
VN=${VN:-$((N / 10))}          # requests under valgrind (about 50x slower)
WARM=${WARM:-500}
PATH_=${PATH_:-/bare/5b}
FILES=${FILES:-/nonexistent}
OUT=${OUT:-/tmp/parapet-counts}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
stat="python3 $here/nginx/stat.py"
source "$here/lib.sh"
need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need valgrind || ! need perf; then
  apt-get update -qq && apt-get install -y -qq nginx valgrind linux-perf >/dev/null
fi
need oha || cargo install oha --locked
ulimit -n "$(ulimit -Hn)"

if [ -n "${PARAPET_BIN:-}" ]; then
  parapet=$PARAPET_BIN
else
  cargo build --release --manifest-path "$repo/Cargo.toml" -q --bin parapet
  parapet="${CARGO_TARGET_DIR:-$repo/target}/release/parapet"
fi
mkdir -p "$OUT"
work=$(mktemp -d /tmp/parapet-counts.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

read -r ORIGIN PROXY < <($stat free-ports 2)
mkdir -p "$work/tmp"
cat > "$work/origin.conf" <<CONF
user root; worker_processes 1; error_log $work/origin-error.log warn; pid $work/origin.pid;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $work/tmp/o-body; proxy_temp_path $work/tmp/o-proxy;
  types { text/html html; text/css css; application/javascript js; image/svg+xml svg; text/plain txt; application/json json; }
  server {
    listen 127.0.0.1:$ORIGIN backlog=4096;
    location = /5b { default_type text/plain; return 200 "hello"; }
    location / { root $FILES; }
  }
}
CONF
cat > "$work/nginx.conf" <<CONF
user root; worker_processes 1; master_process off; daemon off; error_log $work/nginx-error.log warn; pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $work/tmp/p-body; proxy_temp_path $work/tmp/p-proxy;
  log_format json escape=json '{"time":"\$time_iso8601","remote":"\$remote_addr","method":"\$request_method","target":"\$request_uri","status":\$status,"bytes":\$body_bytes_sent}';
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme;
  proxy_set_header X-Forwarded-Host \$host;
  server {
    listen 127.0.0.1:$PROXY backlog=4096;
    location /bare/ { proxy_pass http://origin/; }
    location /gzip/ {
      gzip on; gzip_comp_level 6; gzip_proxied any; gzip_vary on; gzip_min_length 256;
      gzip_types text/css application/javascript image/svg+xml text/plain application/json;
      proxy_pass http://origin/;
    }
    location /chain/ {
      access_log $work/nginx-access.log json buffer=64k flush=100ms;
      add_header X-Frame-Options DENY always;
      proxy_set_header X-Edge parapet;
      gzip on;
      proxy_pass http://origin/;
    }
  }
}
CONF
cat > "$work/parapet.toml" <<CONF
[server]
workers = 1
[listeners.main]
bind = "127.0.0.1:$PROXY"
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
[apps.bare]
upstream = "origin"
[apps.chain]
middlewares = ["log", "secure", "compress", "errors"]
upstream = "origin"
[apps.gzip]
middlewares = ["gzip6"]
upstream = "origin"
[middlewares.gzip6]
kind = "compress"
level = 6
min_size = 256
[upstreams.origin]
servers = ["http://127.0.0.1:$ORIGIN"]
[middlewares.log]
kind = "access_log"
format = "json"
path = "$work/parapet-access.log"
[middlewares.secure]
kind = "headers"
response.set = { "x-frame-options" = "DENY" }
request.set = { "x-edge" = "parapet" }
CONF

wait_gone() { for _ in $(seq 1 600); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; }

nginx -p "$work" -c "$work/origin.conf" -g 'daemon off;' & pids+=($!)
wait_port "$ORIGIN" 60
url="http://127.0.0.1:$PROXY$PATH_"
load() { timeout 600 oha -n "$1" -c 64 --no-tui "${rate_args[@]}" ${OHA_ARGS:-} "$url" > /dev/null; }
# The load as a command of its own, for `perf ... -p PID -- CMD`: perf watches PID for exactly as
# long as CMD runs, with no signal to stop it (a background job starts with SIGINT ignored, so a
# SIGINT sent before perf set its handler was lost and the script waited forever).
load_cmd() { echo timeout 600 oha -n "$1" -c 64 --no-tui "${rate_args[@]}" ${OHA_ARGS:-} "$url"; }
rate_args=()

# Starts the proxy named $1, possibly under a wrapper ($2...); sets $proxy_pid.
start() {
  local name=$1; shift
  if [ "$name" = nginx ]; then
    "$@" nginx -p "$work" -c "$work/nginx.conf" > /dev/null 2>&1 &
  else
    PARAPET_LOG=warn "$@" "$parapet" run -c "$work/parapet.toml" > /dev/null 2>&1 &
  fi
  proxy_pid=$!
  pids+=("$proxy_pid")
  wait_port "$PROXY" 60
}
stop() { kill -INT "$proxy_pid" 2>/dev/null || true; wait_gone "$proxy_pid"; }

results="$work/results.txt"
# Calls to an allocation function in a callgrind file (callgrind names a function once, then by id).
alloc_calls() {
  python3 - "$1" <<'PY'
import re, sys
names, cur, total = {}, None, 0
wanted = re.compile(r"^(malloc|calloc|realloc|mi_malloc|mi_zalloc|mi_calloc|mi_realloc"
                    r"|mi_malloc_aligned|mi_zalloc_aligned|mi_realloc_aligned)$")
for line in open(sys.argv[1]):
    m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        kind, i, name = m.groups()
        if name:
            names[i] = name
        cur = names.get(i) if kind == "cfn" else None
    elif line.startswith("calls=") and cur:
        if wanted.match(cur):
            total += int(line.split("=")[1].split()[0])
        cur = None
print(total)
PY
}
for name in nginx parapet; do
  # perf: syscalls, context switches, migrations.
  start "$name" env
  load "$WARM"
  # RATE: the perf counts at that fixed offered rate (oha -q) rather than closed loop, as
  # benches/nginx.sh measures CPU time: at a fixed rate a worker waits, and wakes, more often.
  [ -n "${RATE:-}" ] && rate_args=(-q "$RATE")
  perf stat -x, -e raw_syscalls:sys_enter,context-switches,cpu-migrations,page-faults -p "$proxy_pid" -o "$work/perf.txt" \
    -- $(load_cmd "$N") > /dev/null
  # TRACE=1: which system calls, and the time in each (perf trace -s), under the same load.
  if [ -n "${TRACE:-}" ]; then
    perf trace -s -p "$proxy_pid" -o "$work/trace.$name.txt" -- $(load_cmd "$N") > /dev/null
    echo "== perf trace -s, $name, $N requests"
    grep -E "^ +[a-z_0-9]+ +[0-9]" "$work/trace.$name.txt" | sort -k2 -n -r | head -12
  fi
  # RECORD=1: where the CPU time goes, user and kernel (perf record on the cpu-clock software event,
  # which works without hardware counters), under the same load; kept as $OUT/perf.NAME.data.
  if [ -n "${RECORD:-}" ]; then
    perf record -q -e cpu-clock -F 20000 -g -p "$proxy_pid" -o "$OUT/perf.$name.data" -- $(load_cmd "$N") > /dev/null
    echo "== perf record, $name, $N requests: samples by object, then the top symbols"
    perf report -i "$OUT/perf.$name.data" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -6 || true
    perf report -i "$OUT/perf.$name.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null \
      | grep -E "^ +[0-9]" | head -40 || true
  fi
  rate_args=()
  while IFS=, read -r value _ event _; do
    case "$event" in
      raw_syscalls:sys_enter) echo "syscalls $name $($stat div "$value" "$N")" >> "$results" ;;
      context-switches) echo "context_switches $name $($stat div "$value" "$N")" >> "$results" ;;
      cpu-migrations) echo "cpu_migrations $name $($stat div "$value" "$N")" >> "$results" ;;
      page-faults) echo "page_faults $name $($stat div "$value" "$N")" >> "$results" ;;
    esac
  done < <(grep -v '^#' "$work/perf.txt" | grep ,)
  stop

  # callgrind: instructions.
  start "$name" valgrind --tool=callgrind --dump-instr=yes --cache-sim=yes --D1=32768,8,64 \
    --LL=262144,8,64 --callgrind-out-file="$OUT/callgrind.$name" --trace-children=no
  load "$WARM"
  callgrind_control -z "$proxy_pid" > /dev/null
  # VRATE: the callgrind load at that fixed rate (requests/s of the slowed proxy), not closed loop.
  [ -n "${VRATE:-}" ] && rate_args=(-q "$VRATE")
  load "$VN"
  rate_args=()
  callgrind_control -d "$proxy_pid" > /dev/null
  sleep 1
  # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
  read -r ir i1 dl < <(grep -h '^summary:\|^totals:' "$OUT"/callgrind."$name".* 2>/dev/null | tail -1 |
    awk '{print $2, $5, $9 + $10}')
  echo "instructions $name $($stat div "$ir" "$VN")" >> "$results"
  echo "l1i_misses $name $($stat div "$i1" "$VN")" >> "$results"
  echo "data_lines_missed_256k $name $($stat div "$dl" "$VN")" >> "$results"
  stop

  # Allocations: calls to the allocator in the same callgrind dump (malloc and friends for nginx,
  # mimalloc's entry points for parapet, whose global allocator calls them directly, past the
  # malloc valgrind's dhat would count).
  echo "allocations $name $($stat div "$(alloc_calls "$OUT"/callgrind."$name".*)" "$VN")" >> "$results"
  # Code footprint: the 64-byte lines of code run at least once per request, in the same dump.
  echo "code_lines $name $(python3 "$here/footprint.py" "$OUT"/callgrind."$name".* "$VN" | awk 'NR==1 {print $(NF-2)}')" >> "$results"
  rm -f "$OUT"/callgrind."$name".*.old
done

echo "per request on $PATH_ ($N requests for perf, $VN under valgrind, oha -c 64); $("$parapet" --version); $(nginx -v 2>&1)"
echo "| count | nginx | parapet | parapet/nginx |"
echo "| --- | --- | --- | --- |"
python3 - "$results" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    metric, proxy, value = line.split()
    rows.setdefault(metric, {})[proxy] = float(value)
for metric, by in rows.items():
    n, p = by.get("nginx"), by.get("parapet")
    ratio = f"{p / n:.2f}" if n and p is not None else "-"
    print(f"| {metric} | {n:,.2f} | {p:,.2f} | {ratio} |")
PY
echo "callgrind files: $OUT (callgrind_annotate $OUT/callgrind.parapet.*)"
