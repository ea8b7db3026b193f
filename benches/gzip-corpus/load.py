#!/usr/bin/env python3
"""A fixed-rate, deterministic load for run.sh: every file of a list requested equally often.

  load.py BASE_URL LIST RATE DURATION [CONNECTIONS]

LIST has one `path size` per line. Requests go out at RATE per second, the files in the list's order
round and round, for about DURATION seconds rounded to whole passes over the list, over CONNECTIONS
keep-alive connections (default 16), each with `Accept-Encoding: gzip`. A request is sent when it is
due (request i at start + i / RATE) or as soon as a connection is free after that, so the offered rate
does not depend on how fast answers come back. Prints one JSON object: requests, ok (200s), gzip (of
them, how many came gzipped), in_bytes (the files' sizes, summed over requests), out_bytes (the bodies
as received), elapsed seconds and the largest lag behind the schedule.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse


def main():
    base, listing, rate, duration = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    conns = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    files = []
    with open(listing) as f:
        for line in f:
            path, size = line.split()
            files.append((path, int(size)))
    passes = max(1, round(rate * duration / len(files)))
    total = passes * len(files)
    url = urllib.parse.urlsplit(base)
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "gzip": 0, "in": 0, "out": 0, "lag": 0.0, "errors": 0}
    start = time.monotonic() + 0.05

    def worker():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        while True:
            with lock:
                i = state["next"]
                if i >= total:
                    break
                state["next"] = i + 1
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            path, size = files[i % len(files)]
            try:
                conn.request("GET", url.path.rstrip("/") + path, headers={"Accept-Encoding": "gzip"})
                res = conn.getresponse()
                body = res.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
                with lock:
                    state["errors"] += 1
                continue
            with lock:
                state["lag"] = max(state["lag"], time.monotonic() - due)
                if res.status == 200:
                    state["ok"] += 1
                    state["in"] += size
                    state["out"] += len(body)
                    if res.getheader("content-encoding") == "gzip":
                        state["gzip"] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"requests": total, "ok": state["ok"], "gzip": state["gzip"],
                      "errors": state["errors"], "in_bytes": state["in"], "out_bytes": state["out"],
                      "elapsed": round(time.monotonic() - start, 3), "max_lag": round(state["lag"], 3)}))


main()
