"""WSGI apps for parapet's tests, every one wrapped in wsgiref's PEP 3333 validator, so that anything
parapet's side does against the PEP fails the request (an AssertionError becomes a 500)."""

import hashlib
import json
import sys
import threading
import time
from wsgiref.validate import validator

closed = threading.Event()
ENV_KEYS = [
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
    "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "HTTP_HOST", "HTTP_X_MULTI",
    "HTTP_COOKIE", "HTTP_X_UNDER_SCORE", "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess",
    "wsgi.run_once",
]


def _text(start_response, body, status="200 OK"):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class SlowBody:
    """An iterable that streams until the client goes away; its close() is what the test waits for."""

    def __init__(self):
        self.n = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.n += 1
        if self.n > 10000:
            raise StopIteration
        return b"x" * 65536

    def close(self):
        closed.set()


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/env" or path.startswith("/env/"):
        env = {k: environ.get(k) for k in ENV_KEYS}
        env["wsgi.version"] = list(environ["wsgi.version"])
        return _text(start_response, json.dumps(env))
    if path == "/upload":
        h, n = hashlib.sha256(), 0
        while True:
            piece = environ["wsgi.input"].read(65536)
            if not piece:
                break
            h.update(piece)
            n += len(piece)
        return _text(start_response, f"{n} {h.hexdigest()}")
    if path == "/lines":
        lines = []
        line = environ["wsgi.input"].readline()
        while line:
            lines.append(line.decode())
            line = environ["wsgi.input"].readline()
        return _text(start_response, json.dumps(lines))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        return [b"then returned"]
    if path == "/replace-status":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]
    if path == "/raise-after-head":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _after_head(start_response)
    if path == "/raise":
        raise RuntimeError("the app broke before its head")
    if path == "/slow":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return SlowBody()
    if path == "/closed":
        ok = closed.wait(10)
        return _text(start_response, "closed" if ok else "open")
    if path == "/sleep":
        time.sleep(0.2)
        return _text(start_response, "slept")
    if path == "/file":
        f = open(environ["QUERY_STRING"], "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/errors":
        environ["wsgi.errors"].write("a line for the log\n")
        environ["wsgi.errors"].flush()
        return _text(start_response, "logged")
    if path == "/thread":
        return _text(start_response, str(threading.get_ident()))
    return _text(start_response, "no such page", "404 Not Found")


def _after_head(start_response):
    yield b"first piece, "
    try:
        raise ValueError("broke after the head")
    except ValueError:
        # The head is out: start_response must re-raise, and the gateway abort the response.
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
    yield b"never sent"


application = validator(_app)
