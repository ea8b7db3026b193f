#!/usr/bin/env python3
"""Small helpers for nginx.sh, so the script needs nothing but bash, python3 and the tools it measures.

  stat.py free-ports N          N free TCP ports on 127.0.0.1
  stat.py cpu PID...            user+system CPU of the processes, in microseconds
  stat.py rss PID...            resident memory of the processes, in bytes
  stat.py oha-count FILE        successful (2xx) responses in an oha JSON report
  stat.py wrk FILE              requests/s and bytes/s from wrk's output
  stat.py div A B [SCALE]       A / B * SCALE, as a float
  stat.py summary FILE          the table of medians and ratios from the raw results
"""
import json
import os
import socket
import statistics
import sys

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15; after "pid (comm)" they are at index 11 and 12.
        total += int(fields[11]) + int(fields[12])
    return total * 1_000_000 // TICK


def cpu_split(pids):
    """User and system CPU time of `pids`, in microseconds: "USER SYS"."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return f"{user * 1_000_000 // TICK} {system * 1_000_000 // TICK}"


def rss(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def summary(path):
    # lines: scenario metric proxy value
    data = {}
    with open(path) as f:
        for line in f:
            scenario, metric, proxy, value = line.split()
            data.setdefault((scenario, metric), {}).setdefault(proxy, []).append(float(value))
    # With a base build (PARAPET_BASE), two more columns: its figures, and parapet/base.
    with_base = any("base" in by for by in data.values())

    def cell(values):
        return f"{statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"

    def paired(a, b):
        """a/b round by round (the rounds alternate, so a round's two figures were taken a few
        seconds apart): the median and range of those ratios, which a machine that slows down or
        speeds up over the run moves less than the ratio of the medians."""
        ratios = [x / y for x, y in zip(a, b) if y]
        if len(ratios) < 2:
            return ""
        return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"

    head = (
        "| scenario | metric | nginx median (min–max) | parapet median (min–max) | parapet/nginx"
        " | per round: median (min–max) |"
    )
    if with_base:
        head += " base median (min–max) | parapet/base | per round |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for (scenario, metric), by in data.items():
        n, p, b = by.get("nginx", []), by.get("parapet", []), by.get("base", [])
        if not n or not p:
            continue
        mn, mp = statistics.median(n), statistics.median(p)
        ratio = mp / mn if mn else float("nan")
        row = f"| {scenario} | {metric} | {cell(n)} | {cell(p)} | {ratio:.2f} | {paired(p, n)} |"
        if with_base and b:
            mb = statistics.median(b)
            row += f" {cell(b)} | {mp / mb if mb else float('nan'):.2f} | {paired(p, b)} |"
        print(row)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "free-ports":
        socks = []
        for _ in range(int(args[0])):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
    elif cmd == "cpu":
        print(cpu(args))
    elif cmd == "cpu-split":
        print(cpu_split(args))
    elif cmd == "rss":
        print(rss(args))
    elif cmd == "oha-count":
        with open(args[0]) as f:
            report = json.load(f)
        dist = report.get("statusCodeDistribution", {})
        print(sum(v for k, v in dist.items() if str(k).startswith("2")))
    elif cmd == "wrk":
        rps = bps = 0.0
        units = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
        with open(args[0]) as f:
            for line in f:
                if line.startswith("Requests/sec:"):
                    rps = float(line.split()[1])
                elif line.startswith("Transfer/sec:"):
                    v = line.split()[1]
                    num = v.rstrip("KMGB")
                    bps = float(num) * units[v[len(num):]]
        print(f"{rps} {bps}")
    elif cmd == "div":
        scale = float(args[2]) if len(args) > 2 else 1.0
        b = float(args[1])
        print(f"{float(args[0]) / b * scale:.3f}" if b else "nan")
    elif cmd == "summary":
        summary(args[0])
    else:
        sys.exit(f"unknown command {cmd}")


main()
