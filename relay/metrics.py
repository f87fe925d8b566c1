"""Prometheus metrics. Under gunicorn every worker writes its values to PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py) and a scrape, answered by any worker, adds them all up: per-worker registries gave a different
count on each scrape."""

import hmac
import os

from flask import current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import REGISTRY, multiprocess
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select


UPSTREAM_SECONDS = Histogram("relay_upstream_seconds", "Time of one call to Paywalls, all attempts included",
                             ["path"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30))
OUTCOMES = Counter("relay_outcomes_total", "Ledger rows written, by operation and outcome", ["operation", "outcome"])
CLAIMS_WAITING = Gauge("relay_claims_waiting", "Requests waiting for the same event's call in flight",
                       multiprocess_mode="livesum")
POOL_IN_USE = Gauge("relay_db_connections_in_use", "Database connections checked out of the pool", ["pool"],
                    multiprocess_mode="livesum")


def watch_pool(engine, name: str):
    from sqlalchemy import event

    gauge = POOL_IN_USE.labels(name)
    event.listen(engine, "checkout", lambda *_: gauge.inc())
    event.listen(engine, "checkin", lambda *_: gauge.dec())


class _OpenAmbiguous:
    """Keys whose outcome is unknown and that `ledger resolve` should settle: read from the database at scrape
    time, so every worker (and the CLI) agrees."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from . import db
        from .models import IdempotencyKey

        family = GaugeMetricFamily("relay_ambiguous_keys_open", "Idempotency keys in state ambiguous (run "
                                   "`paywalls-relay ledger resolve` if this stays above zero)")
        try:
            with self.app.app_context(), db.read() as session:
                count = session.scalar(select(func.count()).select_from(IdempotencyKey)
                                       .where(IdempotencyKey.state == "ambiguous"))
        except Exception:
            return  # the database being down shows in /readyz; a scrape still answers
        family.add_metric([], count)
        yield family


def exposition() -> tuple[bytes, int, dict]:
    from . import messages, tokens

    expected = current_app.config["RELAY"]["RELAY_METRICS_TOKEN"]
    if expected:
        presented = tokens.bearer(request.headers.get("Authorization")) or ""
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            raise messages.metrics_unauthorized()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    registry.register(_OpenAmbiguous(current_app._get_current_object()))
    return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}


class _Default:
    """This process's own metrics (no gunicorn: `paywalls-relay run`, tests)."""

    def collect(self):
        return REGISTRY.collect()
