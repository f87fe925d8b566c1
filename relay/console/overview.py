"""The overview (mode, upstream, database, credits, busiest tokens, expiring tokens, latest failures) and the
audit page."""

from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app, render_template, request
from sqlalchemy import func, select

from .. import amounts, audit, caps, clock, db, tokens
from ..models import LedgerEntry, Token
from . import bp

FAILURES = ("declined", "rejected", "failed", "ambiguous")
EXPIRING_WITHIN = timedelta(days=14)
AUDIT_PAGE = 50


def _credited(read, start, end) -> str:
    total = read.execute(select(func.sum(LedgerEntry.amount_micros)).where(
        LedgerEntry.outcome == "credited", LedgerEntry.created_at >= start, LedgerEntry.created_at < end)).scalar()
    return amounts.from_micros(int(total or 0))


def _database() -> str:
    return "ok" if db.ping() else "unreachable"


@bp.get("/")
def overview():
    settings = current_app.config["RELAY"]
    now = clock.now()
    database = _database()
    upstream = current_app.extensions["relay.upstream"].key_verdict()
    data = {}
    if database == "ok":
        bounds = caps.bounds(now)
        with db.read() as read:
            data["credited_today"] = _credited(read, *bounds["d"])
            data["credited_month"] = _credited(read, *bounds["m"])
            month_start = bounds["m"][0]
            busiest = read.execute(
                select(LedgerEntry.token_id, func.count().label("calls"),
                       func.sum(LedgerEntry.amount_micros).filter(LedgerEntry.outcome == "credited").label("credited"))
                .where(LedgerEntry.created_at >= month_start, LedgerEntry.operation != "read")
                .group_by(LedgerEntry.token_id).order_by(func.count().desc(), LedgerEntry.token_id).limit(5)).all()
            labels = dict(read.execute(select(Token.id, Token.label).where(
                Token.id.in_([row.token_id for row in busiest]))).all()) if busiest else {}
            data["busiest"] = [{"id": row.token_id, "label": labels.get(row.token_id, row.token_id),
                                "calls": row.calls, "credited": amounts.from_micros(int(row.credited or 0))}
                               for row in busiest]
            expiring = read.scalars(select(Token).where(
                Token.revoked_at.is_(None), Token.expires_at.is_not(None), Token.expires_at > now,
                Token.expires_at <= now + EXPIRING_WITHIN).order_by(Token.expires_at))
            data["expiring"] = [tokens.describe(token, now) for token in expiring]
            data["failures"] = list(read.scalars(select(LedgerEntry).where(LedgerEntry.outcome.in_(FAILURES))
                                                 .order_by(LedgerEntry.id.desc()).limit(10)))
    return render_template("console/overview.html", sandbox=settings["SANDBOX"], database=database,
                           upstream=upstream, upstream_host=_host(settings["PAYWALLS_BASE_URL"]), **data)


def _host(url: str) -> str:
    """The host of PAYWALLS_BASE_URL only: a URL may carry credentials or a query."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or "")


@bp.get("/audit")
def audit_log():
    before = request.args.get("before", "")
    before_id = int(before) if before.isdigit() and len(before) < 19 else None
    token_id = request.args.get("token", "").strip()[:64] or None
    action = request.args.get("action", "")
    action = action if action in audit.ACTIONS else None
    with db.read() as read:
        entries = audit.recent(read, limit=AUDIT_PAGE + 1, before_id=before_id, token_id=token_id, action=action)
    more = len(entries) > AUDIT_PAGE
    entries = entries[:AUDIT_PAGE]
    return render_template("console/audit.html", entries=entries, token_id=token_id or "", action=action or "",
                           actions=audit.ACTIONS, next_before=entries[-1].id if more else None)
