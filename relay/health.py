"""Liveness, readiness, metrics and the OpenAPI document."""

from flask import Blueprint, current_app, jsonify
from . import db, migrate, openapi
from . import metrics as metrics_module

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    sandbox = current_app.config["RELAY"]["SANDBOX"]
    return jsonify(status="ok", sandbox=sandbox, mode="sandbox" if sandbox else "live")


@bp.get("/readyz")
def readyz():
    """Ready means able to serve a deposit: the database answers and is at the head migration, and Paywalls has
    not refused the key. Paywalls unreachable is reported but not a failure: its answers then explain themselves
    (502, safe to retry), and taking every relay out of rotation would turn that into connection errors."""
    checks = {"database": _database()}
    if checks["database"] == "ok":
        checks["migrations"] = _migrations()
    checks["paywalls_key"] = current_app.extensions["relay.upstream"].key_verdict()
    failed = [name for name, verdict in checks.items() if verdict not in ("ok", "accepted")
              and not verdict.startswith("unknown")]
    # Reported, not required: without Redis the relay still serves, with per-process limits.
    rate_limits = current_app.extensions["relay.ratelimits"].status()
    return jsonify(status="not ready" if failed else "ready", checks=checks, failed=failed,
                   rate_limits=rate_limits), 503 if failed else 200


def _database() -> str:
    return "ok" if db.ping() else "unreachable"


def _migrations() -> str:
    wanted = _head()
    try:
        with db.engine().connect() as connection:
            found = migrate.current(connection)
    except Exception:
        return "unreachable"
    return "ok" if found == wanted else f"at {found or 'no schema'}, needs {wanted}: run `paywalls-relay db upgrade`"


_HEAD: list[str] = []


def _head() -> str:
    if not _HEAD:
        _HEAD.append(migrate.head())  # the migration scripts do not change while the process runs
    return _HEAD[0]


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi.document(current_app.config["RELAY"]["RELAY_AMOUNT_DECIMALS"]))


@bp.get("/metrics")
def metrics():
    return metrics_module.exposition()
