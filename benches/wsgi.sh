#!/usr/bin/env bash
# A Flask app served in-process by parapet, against the same app under gunicorn behind nginx.
#
#   benches/wsgi.sh                          # 7 rounds of 5 s each, alternating
#   ROUNDS=5 DURATION=10 benches/wsgi.sh
#   PARAPET_BIN=/tmp/parapet-wsgi benches/wsgi.sh   # a given build (with --features wsgi), as it is
#   PARAPET_PROCS=1 benches/wsgi.sh          # without the two-process side
#
# The stack a Python shop runs today: nginx (one worker, upstream keepalive) proxying to gunicorn
# (`-w 2 -k gthread --threads 4`, Debian's), against parapet alone (`workers = 1`, the app on 8
# threads of its own), both on this machine's two cores and both serving the same hello-world Flask
# view. A third side, `parapet x2`, is two parapet processes (`workers = 1` each) on one port with
# `server.reuse_port = true`: as many processes as gunicorn's workers, a scale-out figure
# (PARAPET_PROCS=1 leaves it out). Each round measures, for each side: closed-loop requests/s
# (wrk -c 32) and the CPU time of every process of that side (nginx and gunicorn's master and
# workers; parapet) per request.
# Needs nginx, wrk, gunicorn and Flask (Debian: nginx wrk gunicorn python3-flask python3-dev); installs
# what is missing.
set -euo pipefail

ROUNDS=${ROUNDS:-7}
PARAPET_PROCS=${PARAPET_PROCS:-2}
DURATION=${DURATION:-5}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
source "$here/lib.sh"
stat="python3 $here/nginx/stat.py"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk || ! need gunicorn || ! dpkg -s python3-flask python3-dev >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nginx wrk gunicorn python3-flask python3-dev >/dev/null
fi
ulimit -n "$(ulimit -Hn)"

if [ -n "${PARAPET_BIN:-}" ]; then
  parapet=$PARAPET_BIN
else
  echo "building parapet (release, --features wsgi)..." >&2
  PYO3_PYTHON=/usr/bin/python3 cargo build --release --features wsgi --manifest-path "$repo/Cargo.toml" -q
  parapet="$repo/target/release/parapet"
fi

work=$(mktemp -d /tmp/parapet-wsgi-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

read -r GUNICORN NGINX PARAPET PARAPET2 < <($stat free-ports 4)
mkdir -p "$work/app" "$work/tmp"
cat > "$work/app/hello.py" <<'PY'
from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return "hello from flask\n"
PY

cat > "$work/nginx.conf" <<CONF
user root; worker_processes 1; worker_rlimit_nofile 20000; error_log $work/nginx-error.log warn; pid $work/nginx.pid;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $work/tmp/body;
  proxy_temp_path $work/tmp/proxy;
  upstream app { server 127.0.0.1:$GUNICORN; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX backlog=4096;
    location / {
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_pass http://app;
    }
  }
}
CONF

cat > "$work/parapet.toml" <<CONF
[server]
workers = 1
[listeners.main]
bind = "127.0.0.1:$PARAPET"
[[routes]]
app = "hello"
[apps.hello]
handler = { kind = "wsgi", app = "hello:app", pythonpath = ["$work/app"], threads = 8 }
CONF
sed -e "s/^workers = 1/workers = 1\nreuse_port = true/" -e "s/:$PARAPET\"/:$PARAPET2\"/" \
  "$work/parapet.toml" > "$work/parapet2.toml"


(cd "$work/app" && exec gunicorn -w 2 -k gthread --threads 4 --keep-alive 300 -b "127.0.0.1:$GUNICORN" \
  --log-level warning hello:app) & pids+=($!); gunicorn_master=$!
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!); nginx_master=$!
PARAPET_LOG=warn "$parapet" run -c "$work/parapet.toml" & pids+=($!); parapet_pid=$!
sides=(stack parapet)
parapet2_pids=""
if [ "$PARAPET_PROCS" -ge 2 ]; then
  for _ in $(seq 1 "$PARAPET_PROCS"); do
    PARAPET_LOG=warn "$parapet" run -c "$work/parapet2.toml" & pids+=($!); parapet2_pids+="$! "
  done
  sides+=(parapet2)
fi
wait_port "$GUNICORN"; wait_port "$NGINX"; wait_port "$PARAPET"
curl -fsS "http://127.0.0.1:$PARAPET/" > /dev/null
curl -fsS "http://127.0.0.1:$NGINX/" > /dev/null
if [ "$PARAPET_PROCS" -ge 2 ]; then wait_port "$PARAPET2"; sleep 1; curl -fsS "http://127.0.0.1:$PARAPET2/" > /dev/null; fi
side_pids() { # the processes of a side, found anew (gunicorn's workers are its master's children)
  case $1 in
    parapet) echo "$parapet_pid" ;;
    parapet2) echo "$parapet2_pids" ;;
    stack) echo "$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ') $gunicorn_master $(pgrep -P "$gunicorn_master" | tr '\n' ' ')" ;;
  esac
}
declare -A PORT=([stack]=$NGINX [parapet]=$PARAPET [parapet2]=$PARAPET2)
results="$work/results.txt"

run() { # side
  local side=$1 pids before after rps n
  pids=$(side_pids "$side")
  before=$($stat cpu $pids)
  timeout $((DURATION + 30)) wrk -t2 -c32 -d"${DURATION}s" "http://127.0.0.1:${PORT[$side]}/" > "$work/wrk.txt"
  after=$($stat cpu $pids)
  read -r rps _ < <($stat wrk "$work/wrk.txt")
  n=$(python3 -c "print(int($rps * $DURATION))")
  echo "flask req_per_s $side $rps" >> "$results"
  echo "flask cpu_us_per_req $side $($stat div $((after - before)) "$n")" >> "$results"
}

for side in "${sides[@]}"; do
  timeout 30 wrk -t2 -c16 -d2s "http://127.0.0.1:${PORT[$side]}/" > /dev/null
done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  for side in "${sides[@]}"; do run "$side"; done
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nginx -v 2>&1); $(gunicorn --version 2>&1 | tr -d '()'); Flask $(/usr/bin/python3 -c 'import flask, importlib.metadata as m; print(m.version("flask"))'); $(/usr/bin/python3 --version); $("$parapet" --version)"
echo "rounds: $ROUNDS x ${DURATION}s, alternating; wrk -t2 -c32; 'stack' is nginx + gunicorn -w 2 -k gthread --threads 4; 'parapet x2' is $PARAPET_PROCS parapet processes with reuse_port"
echo "load average before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
python3 - "$results" <<'PY'
import statistics, sys
data = {}
for line in open(sys.argv[1]):
    scenario, metric, side, value = line.split()
    data.setdefault(metric, {}).setdefault(side, []).append(float(value))
two = "parapet2" in next(iter(data.values()))
fmt = lambda v: f"{statistics.median(v):,.1f} ({min(v):,.1f}–{max(v):,.1f})"
head = "| metric | nginx + gunicorn median (min–max) | parapet median (min–max) | parapet/stack |"
if two:
    head += " parapet x2 median (min–max) | parapet x2/stack |"
print(head)
print("| --- " * (6 if two else 4) + "|")
for metric, by in data.items():
    s, p = by["stack"], by["parapet"]
    ms = statistics.median(s)
    row = f"| {metric} | {fmt(s)} | {fmt(p)} | {statistics.median(p) / ms:.2f} |"
    if two:
        p2 = by["parapet2"]
        row += f" {fmt(p2)} | {statistics.median(p2) / ms:.2f} |"
    print(row)
PY
