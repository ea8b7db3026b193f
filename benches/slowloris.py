#!/usr/bin/env python3
"""A slowloris client against parapet: memory held by its connections, and when they are closed.

    benches/slowloris.py [PARAPET_BIN] [CONNECTIONS] [HEADER_TIMEOUT_SECONDS]
    benches/slowloris.py target/release/parapet 10000 10

It starts parapet (`server.header_timeout` as given, one worker) on a free loopback port, opens
CONNECTIONS connections that each send the start of a request head and then one more header line every
2 s, never finishing it (the slowloris attack), and reports:

- parapet's RSS before, with every connection open, and per connection;
- how long after its first byte each connection was closed by parapet: every one should be closed
  within HEADER_TIMEOUT (+1 s, the resolution of parapet's connection clock), however slowly it
  trickles.

The run is bounded: the client gives up 3 x HEADER_TIMEOUT after the last connection opened.
"""

import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def loris(port, opened, closed_after):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    start = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\nHost: slow\r\n")
    opened.append(start)
    try:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(1024), 2)
                if not data:
                    break
            except asyncio.TimeoutError:
                writer.write(b"X-Loris: still here\r\n")
                await writer.drain()
    except (ConnectionError, OSError):
        pass
    closed_after.append(time.monotonic() - start)
    writer.close()


async def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/parapet"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    timeout = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = free_port()
    work = tempfile.mkdtemp(prefix="parapet-loris-")
    config = os.path.join(work, "parapet.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
workers = 1
header_timeout = "{timeout}s"
[listeners.main]
bind = "127.0.0.1:{port}"
[[routes]]
app = "hello"
[apps.hello]
handler = {{ kind = "respond", body = "hello" }}
""")
    proc = subprocess.Popen([binary, "run", "-c", config], env={**os.environ, "PARAPET_LOG": "warn"})
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        before = rss(proc.pid)
        opened, closed_after = [], []
        tasks = []
        t0 = time.monotonic()
        for i in range(n):
            tasks.append(asyncio.create_task(loris(port, opened, closed_after)))
            if i % 500 == 499:
                await asyncio.sleep(0.05)
        while len(opened) + 0 < n and time.monotonic() - t0 < 30:
            await asyncio.sleep(0.05)
        open_all = time.monotonic() - t0
        await asyncio.sleep(0.5)
        held = rss(proc.pid)
        still_open = len(opened) - len(closed_after)
        done, pending = await asyncio.wait(tasks, timeout=3 * timeout)
        for t in pending:
            t.cancel()
        after = rss(proc.pid)
        print(f"parapet {subprocess.run([binary, '--version'], capture_output=True, text=True).stdout.strip()}; "
              f"header_timeout {timeout}s; {n} slowloris connections requested")
        print(f"opened: {len(opened)} in {open_all:.1f}s; open when measured: {still_open}")
        print(f"RSS: before {before / 1e6:.1f} MB, held {held / 1e6:.1f} MB, "
              f"{(held - before) / max(still_open, 1):,.0f} bytes per open connection; after {after / 1e6:.1f} MB")
        if closed_after:
            s = sorted(closed_after)
            print(f"closed by parapet: {len(s)} of {len(opened)}; seconds after the first byte: "
                  f"median {statistics.median(s):.2f}, min {s[0]:.2f}, max {s[-1]:.2f}")
        print(f"never closed within {3 * timeout}s: {len(pending)}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
