"""Liveness, readiness, metrics and the OpenAPI document."""

from flask import Blueprint, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import db, openapi

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    sandbox = current_app.config["RELAY"]["SANDBOX"]
    return jsonify(status="ok", sandbox=sandbox, mode="sandbox" if sandbox else "live")


@bp.get("/readyz")
def readyz():
    checks = {"database": db.ping(), "upstream_configured": bool(current_app.config["RELAY"]["PAYWALLS_BASE_URL"])}
    ready = all(checks.values())
    # Reported, not required: without Redis the relay still serves, with per-process limits.
    rate_limits = current_app.extensions["relay.ratelimits"].status()
    return jsonify(status="ready" if ready else "not ready", checks=checks, rate_limits=rate_limits), 200 if ready else 503


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi.document())


@bp.get("/metrics")
def metrics():
    return generate_latest(), 200, {"Content-Type": CONTENT_TYPE_LATEST}
