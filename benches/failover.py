#!/usr/bin/env python3
"""Upstreams that fail: parapet in front of 3 Python upstream servers on loopback, under a fixed rate.

    benches/failover.py                        # both scenarios, DURATION=10 s per run
    DURATION=4 RATE=300 benches/failover.py    # shorter
    PARAPET_BIN=target/debug/parapet ONLY=failover benches/failover.py

Scenarios:
  failover  3 servers (balance = round_robin), RATE requests/s (oha -q, --latency-correction) for DURATION
            seconds healthy (p99 "before"), then the same with one server killed a third of the way in:
            failed requests (goal 0: errors and non-2xx answers) and p99 "after".
  slow      3 servers, one 10x slower (DELAY_MS vs 10 x DELAY_MS per response): p99 of round_robin
            and of least_requests at RATE/2 requests/s.

Needs oha (cargo install oha) and python3. Every run is bounded by DURATION seconds; every process the
script starts is stopped at its end. Without PARAPET_BIN, parapet is built with --release.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DURATION = int(os.environ.get("DURATION", "10"))
RATE = int(os.environ.get("RATE", "600"))
DELAY_MS = float(os.environ.get("DELAY_MS", "2"))
ONLY = os.environ.get("ONLY", "failover slow").split()

# One upstream server: HTTP/1.1 keep-alive, threaded, answering "ok" after a delay.
SERVER = r"""
import sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
delay = float(sys.argv[2]) / 1000
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body go in two writes: without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True
    def do_GET(self):
        if delay:
            time.sleep(delay)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=10.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port} after {limit}s")


def start_upstream(delay_ms):
    port = free_port()
    # Its stderr is dropped: a server killed mid-run, or a connection parapet closes, prints tracebacks.
    p = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(delay_ms)], stderr=subprocess.DEVNULL
    )
    procs.append(p)
    wait_port(port)
    return port, p


def start_parapet(binary, ports, balance, work):
    port = free_port()
    servers = ", ".join(f'"http://127.0.0.1:{p}"' for p in ports)
    conf = os.path.join(work, f"{balance}.toml")
    with open(conf, "w") as f:
        f.write(
            f"""
[server]
workers = 1
[listeners.main]
bind = "127.0.0.1:{port}"
[[routes]]
app = "api"
[apps.api]
upstream = "backend"
[upstreams.backend]
servers = [{servers}]
balance = "{balance}"
connect_timeout = "1s"
"""
        )
    env = dict(os.environ, PARAPET_LOG=os.environ.get("PARAPET_LOG", "warn"))
    p = subprocess.Popen([binary, "run", "-c", conf], env=env)
    procs.append(p)
    wait_port(port)
    return port, p


def oha(port, rate, duration, on_start=None):
    """Runs oha at `rate` for `duration` s; `on_start(proc)` runs while it does. Returns its JSON."""
    cmd = [
        "oha", "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-q", str(rate),
        "--latency-correction", "-c", "32",
        # Requests in flight at the deadline are waited for, not counted as errors.
        "--wait-ongoing-requests-after-deadline", f"http://127.0.0.1:{port}/",
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if on_start:
        on_start()
    out, _ = p.communicate(timeout=duration + 30)
    return json.loads(out)


def summary(result):
    statuses = result.get("statusCodeDistribution", {})
    errors = result.get("errorDistribution", {})
    total = sum(statuses.values()) + sum(errors.values())
    failed = sum(n for s, n in statuses.items() if not s.startswith("2")) + sum(errors.values())
    p99 = (result.get("latencyPercentiles") or {}).get("p99")
    return total, failed, (p99 or 0) * 1000, statuses, errors


def main():
    binary = os.environ.get("PARAPET_BIN")
    if not binary:
        print("building parapet (release)...", file=sys.stderr)
        subprocess.run(
            ["cargo", "build", "--release", "-q", "--manifest-path", os.path.join(REPO, "Cargo.toml")],
            check=True,
        )
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
        binary = os.path.join(target, "release", "parapet")
    work = tempfile.mkdtemp(prefix="parapet-failover.")
    rows = []
    if "failover" in ONLY:
        ups = [start_upstream(DELAY_MS) for _ in range(3)]
        port, proxy = start_parapet(binary, [u[0] for u in ups], "round_robin", work)
        before = summary(oha(port, RATE, DURATION))

        def kill_later():
            time.sleep(DURATION / 3)
            ups[1][1].kill()

        import threading

        killer = threading.Thread(target=kill_later)
        after = summary(oha(port, RATE, DURATION, on_start=killer.start))
        killer.join()
        rows.append(("failover: healthy", before))
        rows.append(("failover: one killed", after))
        for p in [proxy] + [u[1] for u in ups]:
            p.kill()
            p.wait()
    if "slow" in ONLY:
        for balance in ["round_robin", "least_requests"]:
            ups = [start_upstream(DELAY_MS), start_upstream(DELAY_MS), start_upstream(10 * DELAY_MS)]
            port, proxy = start_parapet(binary, [u[0] for u in ups], balance, work)
            rows.append((f"one 10x slower: {balance}", summary(oha(port, RATE // 2, DURATION))))
            for p in [proxy] + [u[1] for u in ups]:
                p.kill()
                p.wait()
    print(f"\n{'scenario':32} {'requests':>9} {'failed':>7} {'p99 ms':>8}")
    for name, (total, failed, p99, statuses, errors) in rows:
        print(f"{name:32} {total:9} {failed:7} {p99:8.2f}")
        if failed:
            print(f"  statuses {statuses} errors {errors}")


try:
    main()
finally:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
