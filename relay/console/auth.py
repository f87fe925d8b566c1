"""Sign-in with the admin key, the server-side session behind the cookie, logout, and sign-in throttling.

The cookie (signed by a key derived from the admin key) carries a random session secret; the database keeps its
SHA-256 with an expiry 12 h after sign-in and the moment of logout. So logout ends a session for every copy of the
cookie, and every relay process agrees on who is signed in.

Failed sign-ins are audit entries (console.sign_in_failed, with the client's address): counting them in the
database throttles guessing across every relay process, and the operator sees the attempts on the audit page.
"""

import hashlib
import re
import hmac
import secrets
from datetime import timedelta

from flask import current_app, g, redirect, render_template, request, session, url_for
from sqlalchemy import delete, func, select, update

from .. import audit, clock, db, messages
from ..models import AuditEntry, ConsoleSession, as_utc
from . import SESSION_HOURS, bp, csrf

SIGN_IN_FAILURES = 10  # per client address ...
SIGN_IN_WINDOW = timedelta(minutes=15)  # ... within this window; then every attempt is refused until it passes
OPEN_ENDPOINTS = ("console.sign_in", "console.static")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def client_address() -> str:
    return request.remote_addr or "-"


@bp.before_request
def guard():
    if not current_app.config["RELAY"]["RELAY_ADMIN_KEY"]:
        raise messages.not_found("This path")  # the console is off: answered as any unknown path is
    if request.method == "POST":
        csrf.protect()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    signed_in = current_session()
    if signed_in is None:
        session.pop("sid", None)
        return redirect(url_for("console.sign_in", next=_local_path(request.full_path)))
    g.console_session = signed_in
    return None


def current_session() -> ConsoleSession | None:
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None
    with db.read() as read:
        found = read.get(ConsoleSession, _digest(sid))
    if found is None or found.ended_at is not None or as_utc(found.expires_at) <= clock.now():
        return None
    return found


# A path on this console, with an optional query of printable characters: no scheme, host, backslash, control
# character, space, percent escape or dot segment (/console/../v1, /console/%2e%2e/v1). An open redirect would
# send a freshly signed-in operator anywhere; a CR/LF would break the Location header.
LOCAL_PATH = re.compile(r"/console(?:/[A-Za-z0-9._~/:@!$&'()*+,;=-]*)?(?:\?[\x21-\x7e]*)?")


def _local_path(path: str | None) -> str | None:
    where = (path or "").split("?")[0]
    if not path or len(path) > 2000 or not LOCAL_PATH.fullmatch(path) or "//" in where or "/." in where:
        return None
    return path.rstrip("?") or None


def _recent_failures(read, address: str) -> tuple[int, object]:
    since = clock.now() - SIGN_IN_WINDOW
    count, oldest = read.execute(
        select(func.count(), func.min(AuditEntry.at)).where(
            AuditEntry.action == "console.sign_in_failed", AuditEntry.origin == address, AuditEntry.at > since)).one()
    return count, oldest


def _blocked_for(address: str) -> int | None:
    with db.read() as read:
        count, oldest = _recent_failures(read, address)
    if count < SIGN_IN_FAILURES:
        return None
    wait = as_utc(oldest) + SIGN_IN_WINDOW - clock.now()
    return max(1, int(wait.total_seconds()) + 1)


def _throttled(wait: int):
    minutes = max(1, round(wait / 60))
    response = current_app.make_response((render_template(
        "console/signin.html", error=f"Too many failed sign-ins from your address. Try again in about {minutes} "
                                     f"minute{'s' if minutes != 1 else ''}.", next=None), 429))
    response.headers["Retry-After"] = str(wait)
    return response


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    next_path = _local_path(request.values.get("next"))
    if request.method == "GET":
        if current_session() is not None:
            return redirect(next_path or url_for("console.overview"))
        return render_template("console/signin.html", error=None, next=next_path)
    address = client_address()
    # Blocked before the key is compared: while blocked even the right key is refused, so a guess learns nothing.
    wait = _blocked_for(address)
    if wait:
        return _throttled(wait)
    presented = request.form.get("admin_key", "")
    admin_key = current_app.config["RELAY"]["RELAY_ADMIN_KEY"]
    now = clock.now()
    if not hmac.compare_digest(presented.encode(), admin_key.encode()):
        with db.transaction() as write:
            audit.record(write, "console", address, "console.sign_in_failed", at=now)
        return render_template("console/signin.html", next=next_path,
                               error="That is not the admin key. Paste the value of RELAY_ADMIN_KEY."), 401
    secret = secrets.token_urlsafe(32)
    with db.transaction() as write:
        # Sessions past their 12 h are of no use to anyone: each sign-in sweeps them, so the table stays small.
        write.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
        write.add(ConsoleSession(id=_digest(secret), created_at=now, expires_at=now + timedelta(hours=SESSION_HOURS),
                                 origin=address))
        audit.record(write, "console", address, "console.signed_in", at=now)
    session.clear()  # a fresh cookie and CSRF token: nothing from before sign-in carries over (session fixation)
    session.permanent = True
    session["sid"] = secret
    return redirect(next_path or url_for("console.overview"))


@bp.post("/sign-out")
def sign_out():
    now = clock.now()
    with db.transaction() as write:
        write.execute(update(ConsoleSession).where(ConsoleSession.id == g.console_session.id,
                                                   ConsoleSession.ended_at.is_(None)).values(ended_at=now))
        audit.record(write, "console", client_address(), "console.signed_out", at=now)
    session.clear()
    return redirect(url_for("console.sign_in"))

