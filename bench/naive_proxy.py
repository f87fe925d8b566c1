"""The deliberately naive pass-through the relay is compared with: Flask + requests, no validation,
no database, no idempotency. It forwards the body and three headers to the upstream unchanged.

Served by `make bench` with the relay's own gunicorn.conf.py, so both run with the same settings.
"""

import os

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

UPSTREAM = os.environ["NAIVE_UPSTREAM"].rstrip("/")
FORWARDED = ("Authorization", "Content-Type", "Idempotency-Key")

app = Flask(__name__)
session = requests.Session()
session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=64))  # the relay's pool settings


@app.route("/v1/<path:path>", methods=["GET", "POST"])
def forward(path):  # noqa: ARG001 - the whole path is forwarded
    headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
    answer = session.request(request.method, UPSTREAM + request.path, params=request.args, data=request.get_data(),
                             headers=headers, timeout=(3.05, 10.0))
    return Response(answer.content, answer.status_code, content_type=answer.headers.get("Content-Type"))


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
