#!/usr/bin/env bash
# Makes pgo/parapet.profdata, the profile that optimised builds use (pgo/rustc-wrapper, docs/pgo.md).
#
#   benches/pgo.sh              # about 8 minutes: an instrumented build, the training load, the merge
#
# 1. Builds parapet with LLVM's instrumentation (-Cprofile-generate) in target/pgo-gen.
# 2. Runs the training load: one short round of every benches/nginx.sh scenario (plain and chained
#    HTTP/1.1 proxying, gzip, a 10 MB stream, idle connections, TLS requests and handshakes,
#    WebSocket echoes), then HTTP/2 (h2c) requests and requests with a body, through that build;
#    each parapet process writes its counts when it exits.
# 3. Merges the counts with llvm-profdata into pgo/parapet.profdata (Debian's llvm-19 or newer reads
#    the raw profiles of rustc's LLVM; the script installs it if no llvm-profdata is there).
# 4. Removes the release and profiling builds' outputs: cargo does not track the profile, so crates
#    already built would keep the old one.
# Commit the new profile with the change that made it worth regenerating. Functions changed since a
# profile was made are compiled without its counts (not wrongly), so a stale profile costs speed only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
source "$here/lib.sh"

profdata=$(ls -d /usr/lib/llvm-*/bin/llvm-profdata 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$profdata" ] || [ "$(basename "$(dirname "$(dirname "$profdata")")" | tr -dc 0-9)" -lt 19 ]; then
  apt-get update -qq && apt-get install -y -qq llvm-19 >/dev/null
  profdata=/usr/lib/llvm-19/bin/llvm-profdata
fi

# A fixed place for the raw profiles: it is part of RUSTFLAGS, and a path that did not change lets
# cargo keep the instrumented build of the crates that did not.
data="$repo/target/pgo-gen/profiles"
rm -rf "$data"
mkdir -p "$data"
# RUSTFLAGS replaces the config's (none) and carries -Cprofile-generate, which the wrapper sees and
# so adds no profile-use.
CARGO_TARGET_DIR="$repo/target/pgo-gen" RUSTFLAGS="-Cprofile-generate=$data" \
  cargo build --release --manifest-path "$repo/Cargo.toml" --bin parapet
# RUSTFLAGS instrumented the build scripts and proc macros too, which wrote counts as they ran.
rm -f "$data"/*.profraw
PARAPET_BIN="$repo/target/pgo-gen/release/parapet" ROUNDS=1 DURATION=${DURATION:-3} \
  bash "$here/nginx.sh" > "$data/training.txt"
# What those scenarios do not send: HTTP/2 (h2c) clients, and requests with a body (hyper's server
# path and the upstream client's body streaming), through the same build.
stat="python3 $here/nginx/stat.py"
read -r ORIGIN PROXY < <($stat free-ports 2)
mkdir -p "$data/tmp"
cat > "$data/origin.conf" <<CONF
user root; worker_processes 1; error_log $data/origin-error.log warn; pid $data/origin.pid;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $data/tmp/body;
  server { listen 127.0.0.1:$ORIGIN; location / { default_type text/plain; return 200 "hello"; } } }
CONF
cat > "$data/parapet.toml" <<CONF
[server]
workers = 1
[listeners.main]
bind = "127.0.0.1:$PROXY"
[[routes]]
path = "/"
app = "origin"
[apps.origin]
upstream = "origin"
[upstreams.origin]
servers = ["http://127.0.0.1:$ORIGIN"]
CONF
nginx -p "$data" -c "$data/origin.conf" -g 'daemon off;' & origin_pid=$!
PARAPET_LOG=warn "$repo/target/pgo-gen/release/parapet" run -c "$data/parapet.toml" & proxy_pid=$!
wait_port "$PROXY"
oha -n 20000 -c 16 -p 8 --http2 --no-tui "http://127.0.0.1:$PROXY/h2" > /dev/null
oha -n 20000 -c 16 -m POST -d "$(head -c 2000 /dev/zero | tr '\0' x)" --no-tui "http://127.0.0.1:$PROXY/post" > /dev/null
kill -TERM "$proxy_pid"; wait "$proxy_pid" || true
kill "$origin_pid"; wait "$origin_pid" 2>/dev/null || true
ls "$data"/*.profraw > /dev/null
"$profdata" merge -o "$repo/pgo/parapet.profdata" "$data"/*.profraw
echo "pgo/parapet.profdata: $(wc -c < "$repo/pgo/parapet.profdata") bytes from $(ls "$data"/*.profraw | wc -l) raw profiles"
rm -rf "$repo/target/release" "$repo/target/profiling"
echo "target/release and target/profiling removed: the next optimised build uses the new profile"
