"""One JSON line per request. Only ids, never headers or bodies, so no secret can reach a log."""

import json
import logging
import sys
import time
import uuid

from flask import g, request

logger = logging.getLogger("relay.requests")


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
    root = logging.getLogger("relay")
    root.handlers[:] = [handler]
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
        logger.info("request", extra={"fields": {
            "request_id": g.get("request_id"), "method": request.method, "path": request.path,
            "status": response.status_code, "latency_ms": latency_ms, "token_id": g.get("token_id"),
            "operation": g.get("operation"), "idempotency_key": g.get("idempotency_key"),
            "replayed": g.get("replayed"),
        }})
        return response
