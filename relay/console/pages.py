"""Overview, tokens and audit pages."""

from flask import current_app, render_template

from .. import audit, clock, db, tokens
from . import bp


@bp.get("/")
def overview():
    settings = current_app.config["RELAY"]
    return render_template("console/overview.html", sandbox=settings["SANDBOX"],
                           database="ok" if db.ping() else "unreachable")


@bp.get("/tokens")
def token_list():
    now = clock.now()
    with db.read() as read:
        described = [tokens.describe(token, now) for token in tokens.all_tokens(read)]
    return render_template("console/tokens.html", tokens=described)


@bp.get("/audit")
def audit_log():
    with db.read() as read:
        entries = audit.recent(read)
    return render_template("console/audit.html", entries=entries)
