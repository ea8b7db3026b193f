#!/usr/bin/env python3
"""Tables for the gzip corpus benchmark.

  report.py e2e RESULTS MANIFEST [COUNTS]
                                     run.sh's raw results: per class, CPU and size, parapet/nginx;
                                     with COUNTS=1's file, system calls and wake-ups per request
  report.py gzip TSV                 the gzip_corpus bench's TSV (GZC_MODE=gzip): per class and bucket
  report.py others TSV CLI_TSV       the bench's Brotli and Zstandard (GZC_MODE=others) beside the CLIs
"""
import json
import statistics
import sys

MIB = 1024 * 1024
CLASS_ORDER = ["html", "css", "js", "svg", "text", "json-api", "json-data", "small"]
BUCKETS = ["1k-4k", "4k-16k", "16k-64k", "64k-256k", "256k-1m"]


def cell(values, fmt="{:,.1f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def cpu_ratio(a, b, key="req", bold=True):
    """`b` against `a` per request: the ratio of medians, with the range of per-round ratios."""
    ratios = [y / x for x, y in zip(a[key], b[key]) if x]
    ratio = statistics.median(b[key]) / statistics.median(a[key]) if statistics.median(a[key]) else float("nan")
    mark = "**" if bold else ""
    span = f" ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else ""
    return f"{mark}{ratio:.2f}{mark}{span}"


def ordered(keys):
    return sorted(keys, key=lambda k: CLASS_ORDER.index(k) if k in CLASS_ORDER else 99)


def e2e(results, manifest, counts=None):
    data = {}
    requests = {}
    warnings = []
    with open(results) as f:
        for line in f:
            rnd, cls, proxy, cpu_us, user_us, js = line.rstrip("\n").split("\t", 5)
            r = json.loads(js)
            if r["ok"] != r["requests"] or r["gzip"] != r["ok"]:
                warnings.append(f"round {rnd} {cls} {proxy}: {r}")
            requests[(rnd, cls, proxy)] = r["requests"]
            if not r["ok"]:
                continue
            d = data.setdefault(cls, {}).setdefault(
                proxy, {"req": [], "user": [], "mb": [], "size": [], "lag": []})
            d["req"].append(int(cpu_us) / r["ok"])
            d["user"].append(int(user_us) / r["ok"])
            d["mb"].append(int(cpu_us) / 1000 / (r["in_bytes"] / MIB))
            d["size"].append(r["out_bytes"] / r["in_bytes"])
            d["lag"].append(r["max_lag"])
    print("| class | nginx CPU µs/request | parapet CPU µs/request | CPU parapet/nginx: median (range of per-round ratios) "
          "| user CPU µs/request nginx, parapet: parapet/nginx | nginx CPU ms/MB | parapet CPU ms/MB | gzipped size nginx | parapet "
          "| size parapet/nginx |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for cls in ordered(data):
        n, p = data[cls].get("nginx"), data[cls].get("parapet")
        if not n or not p:
            continue
        sn, sp = statistics.median(n["size"]), statistics.median(p["size"])
        print(f"| {cls} | {cell(n['req'])} | {cell(p['req'])} | {cpu_ratio(n, p)} "
              f"| {statistics.median(n['user']):,.0f}, {statistics.median(p['user']):,.0f}: "
              f"{cpu_ratio(n, p, 'user', bold=False)} | {cell(n['mb'])} | {cell(p['mb'])} | {sn:.2%} | {sp:.2%} | {sp / sn:.3f} |")
    if counts:
        per = {}
        with open(counts) as f:
            for line in f:
                rnd, cls, proxy, syscalls, switches = line.split()
                n = requests.get((rnd, cls, proxy))
                if not n:
                    continue
                d = per.setdefault(cls, {}).setdefault(proxy, {"sys": [], "cs": []})
                d["sys"].append(int(syscalls) / n)
                d["cs"].append(int(switches) / n)
        print()
        print("| class | nginx syscalls/request | parapet syscalls/request | nginx context switches/request "
              "| parapet context switches/request |")
        print("| --- | --- | --- | --- | --- |")
        for cls in ordered(per):
            n, p = per[cls].get("nginx"), per[cls].get("parapet")
            if n and p:
                print(f"| {cls} | {cell(n['sys'], '{:.2f}')} | {cell(p['sys'], '{:.2f}')} "
                      f"| {cell(n['cs'], '{:.2f}')} | {cell(p['cs'], '{:.2f}')} |")
    if any("base" in d for d in data.values()):
        print()
        print("| class | base CPU µs/request | parapet CPU µs/request | CPU parapet/base: median (range of per-round ratios) |")
        print("| --- | --- | --- | --- |")
        for cls in ordered(data):
            b, p = data[cls].get("base"), data[cls].get("parapet")
            if not b or not p:
                continue
            print(f"| {cls} | {cell(b['req'])} | {cell(p['req'])} | {cpu_ratio(b, p)} |")
    for w in warnings:
        print("warning:", w, file=sys.stderr)


def gzip(tsv):
    rows = [line.rstrip("\n").split("\t") for line in open(tsv)][1:]
    by = {}
    for cls, bucket, config, inb, outb, nsmin, nsmed in rows:
        by.setdefault((cls, bucket), {})[config] = (int(inb), int(outb), int(nsmin), int(nsmed))
    configs = []
    for v in by.values():
        for c in v:
            if c not in configs:
                configs.append(c)
    base = "nginx6"
    print("CPU (min over trials) and size, relative to nginx6; nginx6 itself in MB/s of input.")
    print("| class | bucket | nginx6 MB/s | " + " | ".join(c for c in configs if c != base) + " |")
    print("| --- | --- | --- |" + " --- |" * (len(configs) - 1))
    classes = ordered({k[0] for k in by})
    for cls in classes:
        for bucket in BUCKETS:
            v = by.get((cls, bucket))
            if not v or base not in v:
                continue
            b = v[base]
            cells = []
            for c in configs:
                if c == base or c not in v:
                    continue
                x = v[c]
                cells.append(f"{x[2] / b[2]:.2f} / {x[1] / b[1]:.3f}")
            print(f"| {cls} | {bucket} | {b[0] / MIB / (b[2] / 1e9):.1f} | " + " | ".join(cells) + " |")


def others(tsv, cli_tsv):
    ours = {}
    for line in list(open(tsv))[1:]:
        cls, bucket, config, inb, outb, nsmin, _ = line.rstrip("\n").split("\t")
        tool = "brotli" if config.startswith("br") else "zstd"
        level = int(config.lstrip("brzstd"))
        a = ours.setdefault((tool, cls, level), [0, 0, 0])
        a[0] += int(inb)
        a[1] += int(outb)
        a[2] += int(nsmin)
    cli = {}
    for line in list(open(cli_tsv))[1:]:
        tool, cls, level, inb, outb, ns = line.rstrip("\n").split("\t")
        cli[(tool, cls, int(level))] = (int(inb), int(outb), int(ns))
    # The summary: per encoder and level, the median and range over classes.
    print("| encoder | level | parapet CPU ms/MB: median (range over classes) | CLI CPU ms/MB | parapet ratio (range) | CLI ratio (range) |")
    print("| --- | --- | --- | --- | --- | --- |")
    classes = ordered({k[1] for k in ours})
    for tool in ["brotli", "zstd"]:
        for level in range(1, 10):
            o = [ours[(tool, c, level)] for c in classes if (tool, c, level) in ours]
            c = [cli[(tool, k, level)] for k in classes if (tool, k, level) in cli]
            if not o:
                continue
            ms = lambda rows: [r[2] / 1e6 / (r[0] / MIB) for r in rows]
            ratio = lambda rows: [r[0] / r[1] for r in rows]
            rng = lambda v, f="{:.1f}": f"{f.format(statistics.median(v))} ({f.format(min(v))}–{f.format(max(v))})" if v else "–"
            print(f"| {tool} | {level} | {rng(ms(o))} | {rng(ms(c))} | {rng(ratio(o), '{:.2f}')} | {rng(ratio(c), '{:.2f}')} |")
    print()
    print("| encoder | level | class | parapet ms/MB | CLI ms/MB | parapet ratio | CLI ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for tool in ["brotli", "zstd"]:
        for level in range(1, 10):
            for cls in ordered({k[1] for k in ours}):
                o = ours.get((tool, cls, level))
                c = cli.get((tool, cls, level))
                if not o:
                    continue
                mine = f"{o[2] / 1e6 / (o[0] / MIB):.2f} | "
                theirs = f"{c[2] / 1e6 / (c[0] / MIB):.2f} | " if c else "– | "
                print(f"| {tool} | {level} | {cls} | {mine}{theirs}{o[0] / o[1]:.2f} | "
                      + (f"{c[0] / c[1]:.2f} |" if c else "– |"))


def main():
    cmd = sys.argv[1]
    if cmd == "e2e":
        e2e(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif cmd == "gzip":
        gzip(sys.argv[2])
    elif cmd == "others":
        others(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


main()
