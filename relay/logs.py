"""One JSON line per request. Only ids, never headers or bodies, so no secret can reach a log."""

import json
import logging
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

from flask import g, request
from prometheus_client import Counter, Histogram

logger = logging.getLogger("relay.requests")
REQUESTS = Counter("relay_requests_total", "Requests answered", ["endpoint", "status"])
LATENCY = Histogram("relay_request_seconds", "Time to answer a request", ["endpoint"])
_children: dict = {}  # (endpoint, status) -> the two metrics' labelled children, looked up once


def timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds: lines from several machines sort and compare as they are."""
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record):
        line = {"time": timestamp(record.created), "level": record.levelname, "logger": record.name}
        line.update(getattr(record, "fields", None) or {"message": record.getMessage()})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(line)


def configure(level: str):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.relay_own = True
    root = logging.getLogger("relay")
    # Each create_app replaces the relay's own handler (no doubled lines) and leaves others' (pytest's) alone.
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "relay_own", False)] + [handler]
    root.setLevel(level)
    root.propagate = False


def init_app(app):
    @app.before_request
    def start():
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if incoming.isascii() and 0 < len(incoming) <= 64 and incoming.isprintable() \
            else uuid.uuid4().hex

    @app.after_request
    def log_line(response):
        values = vars(g._get_current_object())  # one lookup per field instead of g.get's
        latency_ms = round((time.perf_counter() - values.get("started", time.perf_counter())) * 1000, 2)
        request_id = values.get("request_id")
        response.headers["X-Request-Id"] = request_id or ""
        status = response.status_code
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        counted = _children.get((endpoint, status))
        if counted is None:
            counted = _children[(endpoint, status)] = (REQUESTS.labels(endpoint, str(status)), LATENCY.labels(endpoint))
        counted[0].inc()
        counted[1].observe(latency_ms / 1000)
        level = logging.WARNING if status >= 500 else logging.INFO
        if not logger.isEnabledFor(level):
            return response
        fields = {
            "request_id": request_id, "method": request.method, "path": request.path,
            "status": status, "latency_ms": latency_ms, "token_id": values.get("token_id"),
            "operation": values.get("operation"), "idempotency_key": values.get("idempotency_key"),
            "replayed": values.get("replayed"),
        }
        if status >= 400:
            fields.update(problem_fields(response))
        # logger.log would also walk the stack for the caller's file and line, which no line shows.
        logger.handle(logger.makeRecord(logger.name, level, "", 0, "request", (), None, extra={"fields": fields}))
        return response


def problem_fields(response) -> dict:
    """The problem type and its reason (401), limit (403) or upstream status, so a refusal explains itself in
    the log; read from the answer, which is problem+json for every 4xx and 5xx."""
    try:
        body = json.loads(response.get_data())
    except (ValueError, RuntimeError):  # a streamed or non-JSON body
        return {}
    if not isinstance(body, dict):
        return {}
    fields = {"problem": str(body.get("type", "")).rsplit(":", 1)[-1] or None}
    for name in ("reason", "limit", "upstream_status"):
        if body.get(name) is not None:
            fields[name] = body[name]
    return fields


def startup(settings: dict, database_url: str, workers, threads):
    """One line when a server process starts: what it serves, against what, with which database (no credentials)."""
    from . import __version__, db

    host = urlsplit(settings["PAYWALLS_BASE_URL"]).netloc
    logging.getLogger("relay").info("relay starting", extra={"fields": {
        "message": "relay starting", "version": __version__, "mode": "sandbox" if settings["SANDBOX"] else "live",
        "upstream_host": host, **db.describe_url(database_url), "workers": workers, "threads": threads,
        "pid": os.getpid(), "env": settings["RELAY_ENV"],
    }})
