#!/usr/bin/env bash
# gzip on real files, end to end: nginx and parapet, each proxying the same nginx origin and gzipping at
# level 6, per class of a corpus of real files (benches/gzip-corpus/corpus.py).
#
#   benches/gzip-corpus/run.sh                          # 5 rounds of every class, about 15 minutes
#   PARAPET_BIN=/tmp/parapet ROUNDS=7 benches/gzip-corpus/run.sh   # a built parapet, as it is
#   CORPUS=/tmp/gzip-corpus CLASSES="json-api css" benches/gzip-corpus/run.sh
#
# Needs nginx and python3 (and the corpus's Debian packages, which corpus.py installs). Without
# PARAPET_BIN it builds parapet (release: fat LTO, several minutes). It starts an origin (nginx, one
# worker) serving the corpus with Content-Length, an nginx reverse proxy (one worker, upstream
# keepalive, `gzip on; gzip_comp_level 6; gzip_proxied any`, gzip_types covering every class) and
# parapet (server.workers = 1, a `compress` layer at `level = 6`) in front of the same origin, on
# 127.0.0.1 with free ports.
#
# Each class is a scenario (html css js svg text json-api json-data, and `small`: every file under
# 16 KiB of every class); its load (load.py) requests every file of the class equally often at a fixed
# rate (RATE_MB MB of uncompressed files per second, default 6, at most MAX_RATE requests/s), over 16
# keep-alive connections with `Accept-Encoding: gzip`, for about DURATION seconds (default 8). The two
# proxies alternate, nginx first in odd rounds and parapet first in even ones, for ROUNDS rounds
# (default 5). Around each run the proxy's CPU time (user + system, /proc/PID/stat) is read.
#
# Metrics, per class: CPU µs per request and CPU ms per MB of uncompressed input (the same requests for
# both proxies, so the two give the same ratio up to the clock's 10 ms ticks), and the gzipped bytes
# per pass over the class's files (output size). The table gives medians with min and max over rounds,
# and parapet/nginx, and the ratio of user CPU time alone (the proxy's own code; the rest is the
# kernel's, for the sockets). The machine's other work moves the figures: read the ranges.
#
# COUNTS=1 also counts, per request, each proxy's system calls and context switches (wake-ups) with
# `perf stat` on its processes during each run (software events: they work in a VM), in a second
# table: figures that do not move with the machine's load, to see where a class's time goes beside
# the compression (the CPU figures are then measured under perf, a little higher for both).
#
# PARAPET_BASE=/path/to/an/older/parapet runs it too, as a third proxy (`base`) with the same config,
# in the same alternation (nginx base parapet, then parapet base nginx): a change judged against the
# build before it in the same run, the report's third table giving parapet/base per class.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
RATE_MB=${RATE_MB:-6}
MAX_RATE=${MAX_RATE:-400}
CLASSES=${CLASSES:-"html css js svg text json-api json-data small"}
COUNTS=${COUNTS:-}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/../lib.sh"
stat="python3 $repo/benches/nginx/stat.py"

if ! command -v nginx >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nginx >/dev/null
fi
if [ -n "$COUNTS" ] && ! command -v perf >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
if [ -n "${PARAPET_BIN:-}" ]; then
  parapet=$PARAPET_BIN
else
  echo "building parapet (release)..." >&2
  cargo build --release --manifest-path "$repo/Cargo.toml" -q --bin parapet
  parapet="${CARGO_TARGET_DIR:-$repo/target}/release/parapet"
fi

work=$(mktemp -d /tmp/parapet-gzip-corpus.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

corpus=${CORPUS:-$work/corpus}
if [ ! -f "$corpus/manifest.tsv" ]; then
  echo "gathering the corpus..." >&2
  python3 "$here/corpus.py" "$corpus"
fi
# One list per class: "path size" lines, in the manifest's order.
for class in $CLASSES; do
  if [ "$class" = small ]; then
    awk -F'\t' 'NR > 1 && ($2 == "1k-4k" || $2 == "4k-16k") {print "/" $3, $4}' "$corpus/manifest.tsv"
  else
    awk -F'\t' -v c="$class" 'NR > 1 && $1 == c {print "/" $3, $4}' "$corpus/manifest.tsv"
  fi > "$work/$class.list"
done

read -r ORIGIN NGINX PARAPET BASE < <($stat free-ports 4)
proxies="nginx parapet"
[ -n "${PARAPET_BASE:-}" ] && proxies="nginx base parapet"
mkdir -p "$work/tmp"
common_nginx="user root; worker_processes 1; worker_rlimit_nofile 20000; error_log $work/%s-error.log warn; pid $work/%s.pid;
events { worker_connections 4096; }"
types='types { text/html html; text/css css; application/javascript js; image/svg+xml svg; text/plain txt; application/json json; }'

cat > "$work/origin.conf" <<CONF
$(printf "$common_nginx" origin origin)
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path $work/tmp/origin-body;
  proxy_temp_path $work/tmp/origin-proxy;
  $types
  server {
    listen 127.0.0.1:$ORIGIN backlog=4096;
    location / { root $corpus; }
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
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  gzip on;
  gzip_comp_level 6;
  gzip_proxied any;
  gzip_vary on;
  gzip_min_length 256;
  gzip_types text/css application/javascript image/svg+xml text/plain application/json;
  server {
    listen 127.0.0.1:$NGINX backlog=4096;
    location / { proxy_pass http://origin; }
  }
}
CONF

cat > "$work/parapet.toml" <<CONF
[server]
workers = 1
[listeners.main]
bind = "127.0.0.1:$PARAPET"
[[routes]]
path = "/"
app = "gzip"
[apps.gzip]
middlewares = ["gzip6"]
upstream = "origin"
[upstreams.origin]
servers = ["http://127.0.0.1:$ORIGIN"]
[middlewares.gzip6]
kind = "compress"
level = 6
min_size = 256
CONF


nginx -p "$work" -c "$work/origin.conf" -g 'daemon off;' & pids+=($!)
nginx -p "$work" -c "$work/proxy.conf" -g 'daemon off;' & pids+=($!); nginx_master=$!
PARAPET_LOG=warn "$parapet" run -c "$work/parapet.toml" & pids+=($!); parapet_pid=$!
wait_port "$ORIGIN"; wait_port "$NGINX"; wait_port "$PARAPET"
nginx_pids="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"
declare -A PORT=([nginx]=$NGINX [parapet]=$PARAPET)
declare -A PIDS=([nginx]="$nginx_pids" [parapet]="$parapet_pid")
if [ -n "${PARAPET_BASE:-}" ]; then
  sed "s/127.0.0.1:$PARAPET/127.0.0.1:$BASE/" "$work/parapet.toml" > "$work/base.toml"
  PARAPET_LOG=warn "$PARAPET_BASE" run -c "$work/base.toml" & pids+=($!)
  PIDS[base]=$!; PORT[base]=$BASE
  wait_port "$BASE"
fi
results="$work/results.tsv"
: > "$results"

rate_of() { # class: requests/s offering RATE_MB of input per second, at most MAX_RATE
  awk -v mb="$RATE_MB" -v max="$MAX_RATE" '{n++; s += $2} END {r = mb * 1048576 / (s / n); if (r > max) r = max; if (r < 1) r = 1; printf "%.1f", r}' "$work/$1.list"
}

counts="$work/counts.tsv"
: > "$counts"

run() { # proxy class round
  local proxy=$1 class=$2 round=$3 before after out
  local load=(timeout $((DURATION * 4 + 60)) python3 "$here/load.py" "http://127.0.0.1:${PORT[$proxy]}/"
    "$work/$class.list" "$(rate_of "$class")" "$DURATION")
  before=$($stat cpu-split ${PIDS[$proxy]})
  if [ -n "$COUNTS" ]; then
    # perf runs the load as its workload and counts the proxy's processes meanwhile.
    out=$(perf stat -x, -o "$work/perf.txt" -e raw_syscalls:sys_enter,context-switches \
      -p "$(echo ${PIDS[$proxy]} | tr ' ' ',')" -- "${load[@]}")
    awk -F, -v r="$round" -v c="$class" -v p="$proxy" \
      '$3 == "raw_syscalls:sys_enter" {s = $1} $3 == "context-switches" {w = $1}
       END {printf "%s\t%s\t%s\t%s\t%s\n", r, c, p, s, w}' "$work/perf.txt" >> "$counts"
  else
    out=$("${load[@]}")
  fi
  after=$($stat cpu-split ${PIDS[$proxy]})
  local user=$((${after% *} - ${before% *})) system=$((${after#* } - ${before#* }))
  echo -e "$round\t$class\t$proxy\t$((user + system))\t$user\t$out" >> "$results"
}

# Warm up both (page cache, pools, parapet's per-level compressors): one pass of every class.
for class in $CLASSES; do
  for proxy in $proxies; do
    python3 "$here/load.py" "http://127.0.0.1:${PORT[$proxy]}/" "$work/$class.list" 200 0 4 > /dev/null
  done
done

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  order=$proxies
  [ $((round % 2)) -eq 0 ] && order=$(echo $proxies | tr ' ' '\n' | tac | tr '\n' ' ')
  for class in $CLASSES; do
    for proxy in $order; do run "$proxy" "$class" "$round"; done
  done
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg); $(nginx -v 2>&1); $("$parapet" --version)${PARAPET_BASE:+; base: $("$PARAPET_BASE" --version)}"
echo "rounds: $ROUNDS x ~${DURATION}s per class and proxy, alternating; offered $RATE_MB MB/s of input (at most $MAX_RATE req/s)"
echo
python3 "$here/report.py" e2e "$results" "$corpus/manifest.tsv" ${COUNTS:+"$counts"}
