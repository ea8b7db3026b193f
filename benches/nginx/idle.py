#!/usr/bin/env python3
"""Opens N keep-alive connections to HOST:PORT, sends one request on each, reads the answer, then holds
them open (idle) until stdin closes. Prints "ready" once every connection is idle.

usage: idle.py HOST PORT PATH N [tls]

With `tls`, each connection is TLS (HTTP/1.1 by ALPN, certificate not verified: the bench's own).
"""
import asyncio
import os
import ssl
import sys

TLS = None
if len(sys.argv) > 5 and sys.argv[5] == "tls":
    TLS = ssl.create_default_context()
    TLS.check_hostname = False
    TLS.verify_mode = ssl.CERT_NONE
    TLS.set_alpn_protocols(["http/1.1"])


async def one(host, port, path, conns):
    if TLS is None:
        reader, writer = await asyncio.open_connection(host, port)
    else:
        reader, writer = await asyncio.open_connection(host, port, ssl=TLS, server_hostname="localhost")
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if length:
        await reader.readexactly(length)
    conns.append((reader, writer))


async def main():
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    conns = []
    # In batches, so the listen backlog never overflows.
    batch = int(os.environ.get("IDLE_BATCH", "500"))
    for start in range(0, n, batch):
        await asyncio.gather(*(one(host, port, path, conns) for _ in range(start, min(n, start + batch))))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, w in conns:
        w.close()


asyncio.run(main())
