"""A Flask app served by parapet in-process, as a user would write it."""

from flask import Flask, Response, redirect, request, url_for

app = Flask(__name__)


@app.route("/")
def hello():
    return "hello from flask"


@app.route("/login")
def login():
    resp = redirect(url_for("whoami"))
    resp.set_cookie("user", "ada")
    return resp


@app.route("/whoami")
def whoami():
    return f"you are {request.cookies.get('user', 'nobody')}"


@app.route("/stream")
def stream():
    def pieces():
        for i in range(5):
            yield f"piece {i}\n"
    return Response(pieces(), mimetype="text/plain")


@app.route("/boom")
def boom():
    raise RuntimeError("flask's own 500")


@app.route("/form", methods=["POST"])
def form():
    return f"name={request.form['name']}"
