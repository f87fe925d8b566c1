"""One JSON line per request. Only ids, never headers or bodies, so no secret can reach a log."""

import json
import logging
import sys
import time
import uuid

from flask import g, request
from prometheus_client import Counter, Histogram

logger = logging.getLogger("relay.requests")
REQUESTS = Counter("relay_requests_total", "Requests answered", ["endpoint", "status"])
LATENCY = Histogram("relay_request_seconds", "Time to answer a request", ["endpoint"])


class JsonFormatter(logging.Formatter):
    def format(self, record):
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name}
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
        latency_ms = round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2)
        response.headers["X-Request-Id"] = g.get("request_id", "")
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(endpoint, str(response.status_code)).inc()
        LATENCY.labels(endpoint).observe(latency_ms / 1000)
        logger.info("request", extra={"fields": {
            "request_id": g.get("request_id"), "method": request.method, "path": request.path,
            "status": response.status_code, "latency_ms": latency_ms, "token_id": g.get("token_id"),
            "operation": g.get("operation"), "idempotency_key": g.get("idempotency_key"),
            "replayed": g.get("replayed"),
        }})
        return response
