#!/usr/bin/env bash
# Instructions per request each catalogue layer adds on its pass-through path, around an in-process
# `respond` endpoint, counted by callgrind (deterministic, unlike the µs of `cargo bench --bench chain`).
#
#   benches/layer-counts.sh [LAYER...]     # default: every layer; needs valgrind
#
# PROXIED=1: the layer in front of the bench's upstream over loopback instead (the upstream's own
# instructions included).
#
# Each app (bare, then each layer alone) runs twice under callgrind, with N1 and N2 requests
# (CHAIN_COUNT, see benches/chain.rs); (total₂ − total₁) / (N2 − N1) is its cost per request, setup
# and warm-up cancelled out. Built with `cargo build --profile profiling --bench chain` (line tables,
# so that the callgrind files, kept in $OUT, can be read with callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-2000}
N2=${N2:-6000}
OUT=${OUT:-/tmp/parapet-layer-counts}
mkdir -p "$OUT"
cargo build -q --profile profiling --bench chain
bin=$(ls -t target/profiling/deps/chain-* | grep -v '\.d$' | head -1)
layers=("$@")
[ ${#layers[@]} -eq 0 ] && layers=(request_id cors ip_filter rate_limit basic_auth rewrite redirect headers.replace)
total() { # name n
  env CHAIN_COUNT="$1" CHAIN_LOCAL_REQUESTS="$2" ${PROXIED:+CHAIN_COUNT_PROXIED=1} valgrind --tool=callgrind --callgrind-out-file="$OUT/$1.$2.cg" \
    "$bin" --bench >/dev/null 2>"$OUT/$1.$2.err"
  grep -h '^summary:\|^totals:' "$OUT/$1.$2.cg" | tail -1 | awk '{print $2}'
}
per_request() { # name
  local a b
  a=$(total "$1" "$N1"); b=$(total "$1" "$N2")
  echo $(( (b - a) / (N2 - N1) ))
}
bare=$(per_request bare)
printf '%-16s %8s instructions/request\n' bare "$bare"
for layer in "${layers[@]}"; do
  n=$(per_request "$layer")
  printf '%-16s %8s instructions/request (%+d over bare)\n' "$layer" "$n" $((n - bare))
done
