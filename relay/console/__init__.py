"""The operator console: server-rendered pages under /console, signed in with RELAY_ADMIN_KEY.

Off (404 on every path) while RELAY_ADMIN_KEY is unset. Pages are Jinja templates with a little vendored-free
JavaScript kept as files under relay/static/console, so the CSP needs no 'unsafe-inline'.
"""

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta

from flask import Blueprint, current_app, render_template, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import NotFound, RequestEntityTooLarge

from .. import ledger as ledger_rows
from .. import validation
from ..models import as_utc


log = logging.getLogger("relay")
bp = Blueprint("console", __name__, url_prefix="/console", static_folder="../static/console",
               static_url_path="/static")
csrf = CSRFProtect()

SESSION_HOURS = 12
# The API keeps default-src 'none'. Console pages load their own CSS and JS files and nothing else; forms post
# only back to the relay. Usage bars and charts are SVG attributes, not inline styles.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# Flask-WTF checks the Referer of an HTTPS form post against the host: the API's no-referrer would refuse every
# console form under production. same-origin sends it to the relay only.
HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "same-origin"}


def session_secret(admin_key: str) -> bytes:
    """The key that signs console cookies, derived from the admin key: every relay process agrees on it without
    another setting, and changing RELAY_ADMIN_KEY signs every console session out."""
    return hmac.new(admin_key.encode(), b"paywalls-relay console session v1", hashlib.sha256).digest()


def init_app(app):
    settings = app.config["RELAY"]
    app.config.update(
        SESSION_COOKIE_NAME="relay_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings["RELAY_ENV"] == "production",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        WTF_CSRF_CHECK_DEFAULT=False,  # the API takes bearer tokens, not cookies: only console posts are checked
        WTF_CSRF_TIME_LIMIT=None,  # a form's token lives as long as the session (12 h), not 1 h
    )
    if settings["RELAY_ADMIN_KEY"]:
        app.secret_key = session_secret(settings["RELAY_ADMIN_KEY"])
    csrf.init_app(app)
    app.register_blueprint(bp)


@bp.app_template_filter("utc")
def utc(moment) -> str:
    """A stored moment as UTC text. PostgreSQL hands timestamps back in the server's time zone, SQLite without one:
    both are shown in UTC, as the pages say."""
    return "" if moment is None else as_utc(moment).strftime("%Y-%m-%d %H:%M:%S")


@bp.app_template_filter("iso_utc")
def iso_utc(text: str | None) -> str:
    """tokens.describe's ISO 8601 moments, shown as the stored moments are."""
    return "" if not text else utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


@bp.app_template_global()
def console_url(endpoint: str, **values) -> str | None:
    """The URL of a console page, or None while that page does not exist (the ledger pages are a separate part):
    links to it then render as plain text instead of failing the page."""
    if endpoint not in current_app.view_functions:
        return None
    return url_for(endpoint, **values)


@bp.app_template_global()
def ledger_row_url(row) -> str | None:
    return console_url("console.ledger_entry", entry_id=ledger_rows.entry_id(row))


def sandbox_admin_key(app) -> str:
    """`paywalls-relay run` in sandbox mode without RELAY_ADMIN_KEY: a fresh key for this process only, printed on
    its terminal like the demo token, so the console works on first run. Never in live mode."""
    settings = app.config["RELAY"]
    if not settings["SANDBOX"]:
        raise RuntimeError("a generated admin key is for sandbox mode only")
    settings["RELAY_ADMIN_KEY"] = "admin-sandbox-" + secrets.token_urlsafe(24)
    app.secret_key = session_secret(settings["RELAY_ADMIN_KEY"])
    return settings["RELAY_ADMIN_KEY"]


@bp.errorhandler(NotFound)
def not_found(_error):
    return render_template("console/error.html", title="Not found",
                           detail="There is nothing here: the token or page may have been removed, or the link "
                                  "mistyped."), 404


@bp.errorhandler(OperationalError)
@bp.errorhandler(DBAPIError)
def database_down(_error):
    log.exception("database unavailable")
    response = current_app.make_response((render_template(
        "console/error.html", title="The database is not answering",
        detail="The relay cannot read or save anything until its database answers again; nothing was changed. "
               "Reload this page in a minute. /readyz says when the database is back."), 503))
    response.headers["Retry-After"] = "30"
    return response


@bp.errorhandler(RequestEntityTooLarge)
def too_large(_error):
    return render_template("console/error.html", title="That form was too large",
                           detail=f"The relay takes forms up to {validation.MAX_BODY_BYTES // 1024} KiB. Shorten the "
                                  "longest field (notes, a pattern) and send it again."), 413


@bp.errorhandler(CSRFError)
def csrf_refused(error: CSRFError):
    return render_template("console/error.html", title="This form has expired",
                           detail=f"{error.description} Go back, reload the page and send the form again."), 400


from . import auth, ledger, overview, token_pages  # noqa: E402,F401  (they add their routes to bp)
