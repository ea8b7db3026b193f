#!/usr/bin/env bash
# Instruction counts (callgrind) of gzip configs on the corpus: the figure the machine's noise does not move.
#
#   BENCH=target/release/deps/gzip_corpus-HASH CORPUS=/tmp/gzip-corpus \
#     benches/gzip-corpus/count.sh json-api 4k-16k nginx6 ld6 zw5 parapet6
#
# BENCH is the gzip_corpus bench binary (`cargo bench -p parapet-middlewares --bench gzip_corpus
# --no-run` prints its path). For each config it runs one pass over the class's files of that bucket
# (`-` for every bucket) under `valgrind --tool=callgrind`, subtracts the same pass doing nothing
# (reading the corpus), and prints instructions per input byte and relative to the first config.
set -euo pipefail
class=$1 bucket=$2
shift 2
[ "$bucket" = - ] && bucket=""
bytes=$(awk -F'\t' -v c="$class" -v b="$bucket" 'NR > 1 && $1 == c && (b == "" || $2 == b) {s += $4} END {print s}' "$CORPUS/manifest.tsv")
count() {
  GZC_CORPUS=$CORPUS GZC_MODE=count GZC_ONLY=$1 GZC_CLASS=$class GZC_BUCKET=$bucket \
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BENCH" --bench 2>&1 |
    awk '/Collected :/ {print $NF}' | tr -d ,
}
base=$(count none)
first=""
for config in "$@"; do
  n=$(( $(count "$config") - base ))
  [ -z "$first" ] && first=$n
  awk -v c="$config" -v n="$n" -v b="$bytes" -v f="$first" -v cl="$class" -v bu="${bucket:-all}" \
    'BEGIN {printf "%s\t%s\t%s\t%d\t%.1f\t%.3f\n", cl, bu, c, n, n / b, n / f}'
done
