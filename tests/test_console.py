"""The operator console (issue 17): sign-in, cookie, throttle, CSRF, CSP, pages (Flask test client).

The real-browser suite is tests/browser/."""

import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest

from conftest import manual_clock
from relay import db
from relay.models import AuditEntry, ConsoleSession
from sqlalchemy import select

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    return CSRF_RE.search(page).group(1)


def admin_key(app) -> str:
    return app.config["RELAY"]["RELAY_ADMIN_KEY"]


def sign_in(client, key, next_path=None):
    page = client.get("/console/sign-in").get_data(as_text=True)
    form = {"csrf_token": csrf_of(page), "admin_key": key}
    if next_path:
        form["next"] = next_path
    return client.post("/console/sign-in", data=form)


@pytest.fixture
def console(app, client):
    """A client signed in to the console."""
    response = sign_in(client, admin_key(app))
    assert response.status_code == 302
    return client


def cookie_header(response) -> str:
    return next(value for name, value in response.headers.items() if name == "Set-Cookie" and "relay_console=" in value)


def audit_rows(app, action=None):
    with app.app_context(), db.read() as read:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        return list(read.scalars(query))


# --- off, sign-in, sign-out ---------------------------------------------------------------------------------

def test_console_is_off_without_an_admin_key(make_app):
    client = make_app(RELAY_ADMIN_KEY=None).test_client()
    for path in ("/console/", "/console/sign-in", "/console/tokens", "/console/static/console.css"):
        assert client.get(path).status_code == 404, path
    assert client.post("/console/sign-in", data={"admin_key": "x"}).status_code == 404


def test_pages_redirect_to_sign_in_and_back(app, client):
    response = client.get("/console/tokens")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/sign-in?next=/console/tokens"
    response = sign_in(client, admin_key(app), next_path="/console/tokens")
    assert response.status_code == 302 and response.headers["Location"] == "/console/tokens"
    page = client.get("/console/tokens")
    assert page.status_code == 200 and "<h1>Tokens</h1>" in page.get_data(as_text=True)


@pytest.mark.parametrize("next_path", ["https://evil.example/", "//evil.example/x", "/v1/admin/tokens",
                                       "/console\\@evil.example"])
def test_sign_in_never_redirects_off_the_console(app, client, next_path):
    response = sign_in(client, admin_key(app), next_path=next_path)
    assert response.status_code == 302 and response.headers["Location"] == "/console/"


def test_wrong_key_is_refused_and_audited_without_the_key(app, client):
    response = sign_in(client, "admin-not-the-key")
    assert response.status_code == 401
    body = response.get_data(as_text=True)
    assert "That is not the admin key" in body and "admin-not-the-key" not in body
    assert client.get("/console/").status_code == 302  # still signed out
    [failed] = audit_rows(app, "console.sign_in_failed")
    assert failed.via == "console" and failed.origin == "127.0.0.1" and failed.changes is None


def test_cookie_flags_and_twelve_hour_expiry(app, client):
    response = sign_in(client, admin_key(app))
    cookie = cookie_header(response)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # development: plain http on localhost must work
    expires = parsedate_to_datetime(re.search(r"Expires=([^;]+)", cookie).group(1))
    assert abs((expires - datetime.now(timezone.utc)) - timedelta(hours=12)) < timedelta(minutes=1)
    assert admin_key(app) not in cookie


def test_cookie_is_secure_under_production(make_app, sandbox):
    app = make_app(RELAY_ENV="production")
    client = app.test_client()
    page = client.get("/console/sign-in", base_url="https://relay.example")
    response = client.post("/console/sign-in", base_url="https://relay.example",
                           headers={"Referer": "https://relay.example/console/sign-in"},
                           data={"csrf_token": csrf_of(page.get_data(as_text=True)), "admin_key": admin_key(app)})
    assert response.status_code == 302
    assert "Secure" in cookie_header(response)


def test_session_ends_after_twelve_hours(app, console):
    clock = manual_clock(app)
    assert console.get("/console/").status_code == 200
    clock.advance(12 * 3600 - 1)
    assert console.get("/console/").status_code == 200
    clock.advance(2)
    assert console.get("/console/").status_code == 302


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(app, console):
    stolen = console.get_cookie("relay_console", path="/console").value
    page = console.get("/console/").get_data(as_text=True)
    response = console.post("/console/sign-out", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/console/sign-in"
    assert console.get("/console/").status_code == 302
    replay = app.test_client()
    replay.set_cookie("relay_console", stolen, path="/console")
    assert replay.get("/console/").status_code == 302  # the server ended it: the old cookie signs nobody in
    with app.app_context(), db.read() as read:
        [ended] = read.scalars(select(ConsoleSession)).all()
    assert ended.ended_at is not None
    assert [e.action for e in audit_rows(app)] == ["console.signed_in", "console.signed_out"]


def test_changing_the_admin_key_signs_everyone_out(make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    first = make_app(url, RELAY_ADMIN_KEY="admin-first-key-0123456789")
    client = first.test_client()
    assert sign_in(client, "admin-first-key-0123456789").status_code == 302
    cookie = client.get_cookie("relay_console", path="/console").value
    second = make_app(url, RELAY_ADMIN_KEY="admin-second-key-0123456789").test_client()
    second.set_cookie("relay_console", cookie, path="/console")
    assert second.get("/console/").status_code == 302


# --- throttle -----------------------------------------------------------------------------------------------

def test_failed_sign_ins_are_throttled_even_for_the_right_key(app, client):
    from relay.console import auth
    for _ in range(auth.SIGN_IN_FAILURES):
        assert sign_in(client, "wrong").status_code == 401
    response = sign_in(client, admin_key(app))
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= auth.SIGN_IN_WINDOW.total_seconds() + 1
    assert "Too many failed sign-ins" in response.get_data(as_text=True)
    assert client.get("/console/").status_code == 302


def test_throttle_is_per_address_and_shared_by_every_process(make_app, tmp_path):
    """Two apps on one database stand for two relay processes: failures counted by one block the other."""
    from relay.console import auth
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    one = make_app(url, RELAY_ADMIN_KEY="admin-shared-key-0123456789").test_client()
    two = make_app(url, RELAY_ADMIN_KEY="admin-shared-key-0123456789").test_client()
    for number in range(auth.SIGN_IN_FAILURES):
        assert sign_in(one if number % 2 else two, "wrong").status_code == 401
    assert sign_in(two, "admin-shared-key-0123456789").status_code == 429
    other = make_app(url, RELAY_ADMIN_KEY="admin-shared-key-0123456789").test_client()
    other.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert sign_in(other, "admin-shared-key-0123456789").status_code == 302


def test_throttle_lifts_after_the_window(app, client):
    from relay.console import auth
    clock = manual_clock(app)
    for _ in range(auth.SIGN_IN_FAILURES):
        sign_in(client, "wrong")
    assert sign_in(client, admin_key(app)).status_code == 429
    clock.advance(auth.SIGN_IN_WINDOW.total_seconds())
    assert sign_in(client, admin_key(app)).status_code == 302


# --- CSRF and headers ---------------------------------------------------------------------------------------

def test_posts_without_a_csrf_token_are_refused(app, console):
    assert console.post("/console/sign-out").status_code == 400
    assert console.get("/console/").status_code == 200  # still signed in: the forged post did nothing
    fresh = app.test_client()
    response = fresh.post("/console/sign-in", data={"admin_key": admin_key(app)})
    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    assert fresh.get("/console/").status_code == 302


def test_a_csrf_token_from_another_session_is_refused(app, console):
    other = app.test_client()
    token = csrf_of(other.get("/console/sign-in").get_data(as_text=True))
    assert console.post("/console/sign-out", data={"csrf_token": token}).status_code == 400


def test_console_csp_has_no_unsafe_inline_and_the_api_keeps_none(app, console):
    page = console.get("/console/")
    csp = page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    body = page.get_data(as_text=True)
    assert "<script>" not in body and " style=" not in body and "onclick" not in body
    assert console.get("/healthz").headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_static_files_are_served_before_sign_in(client):
    response = client.get("/console/static/console.css")
    assert response.status_code == 200 and "text/css" in response.headers["Content-Type"]


def test_navigation_on_every_page(console):
    for path in ("/console/", "/console/tokens", "/console/ledger", "/console/audit"):
        body = console.get(path).get_data(as_text=True)
        for label in ("Overview", "Tokens", "Ledger", "Audit", "Sign out"):
            assert f">{label}<" in body, (path, label)
        assert 'aria-current="page"' in body


def test_admin_key_never_in_a_page(app, console):
    key = admin_key(app)
    for path in ("/console/", "/console/tokens", "/console/ledger", "/console/audit", "/console/sign-in"):
        assert key not in console.get(path).get_data(as_text=True)
