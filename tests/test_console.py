"""The operator console (issue 17): sign-in, cookie, throttle, CSRF, CSP, pages (Flask test client).

The real-browser suite is tests/browser/."""

import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest

from conftest import manual_clock
from relay import db, tokens
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


def test_under_https_a_post_from_another_origin_is_refused(make_app, sandbox):
    """What SameSite=Strict already stops in a browser, the CSRF check stops again: a post over HTTPS must come
    from a page of this relay (its Referer), with this session's token."""
    app = make_app(RELAY_ENV="production")
    client = app.test_client()
    base = "https://relay.example"
    token = csrf_of(client.get("/console/sign-in", base_url=base).get_data(as_text=True))
    form = {"csrf_token": token, "admin_key": admin_key(app)}
    for referer in (None, "https://evil.example/console/sign-in"):
        headers = {"Referer": referer} if referer else {}
        response = client.post("/console/sign-in", base_url=base, headers=headers, data=form)
        assert response.status_code == 400, referer
    assert client.post("/console/sign-in", base_url=base, data=form,
                       headers={"Referer": f"{base}/console/sign-in"}).status_code == 302


def test_session_ends_after_twelve_hours(app, console):
    clock = manual_clock(app)
    assert console.get("/console/").status_code == 200
    clock.advance(12 * 3600 - 1)
    assert console.get("/console/").status_code == 200
    clock.advance(2)
    assert console.get("/console/").status_code == 302
    # The next sign-in sweeps the expired session away.
    assert sign_in(console, admin_key(app)).status_code == 302
    with app.app_context(), db.read() as read:
        assert len(read.scalars(select(ConsoleSession)).all()) == 1


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
    assert page.headers["Referrer-Policy"] == "same-origin"  # Flask-WTF checks it on HTTPS posts
    assert console.get("/healthz").headers["Referrer-Policy"] == "no-referrer"
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


# --- tokens: create ----------------------------------------------------------------------------------------

def form_of(console, path: str) -> dict:
    """The hidden fields (CSRF token, form nonce) of the form on a page."""
    page = console.get(path).get_data(as_text=True)
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))


def create(console, **fields):
    data = {**form_of(console, "/console/tokens/new"), "label": "Zap: renewals", "operations": ["deposit"], **fields}
    return console.post("/console/tokens/new", data=data)


def token_of(page: str) -> str:
    return re.search(r'<code id="token-text"[^>]*>(pwr_[^<]+)</code>', page).group(1)


def test_create_shows_the_token_once_with_the_next_steps(app, console):
    response = create(console, daily_cap="100", max_amount="20", user_pattern="acme:[a-z0-9_]+",
                      required_metadata="reference, invoice_id", expires_in="90d", operations=["deposit", "ledger"])
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    text = token_of(page)
    assert "shown this once" in page and 'data-copy="token-text"' in page
    assert "Relay URL" in page and "Relay Token" in page and "Base URL" in page and "http://localhost" in page
    token_id = tokens.split(text)[0]
    with app.app_context(), db.read() as read:
        token = tokens.get(read, token_id)
        assert token.label == "Zap: renewals" and token.operations == ["deposit", "ledger"]
        assert token.daily_cap_micros == 100_000_000 and token.max_amount_micros == 20_000_000
        assert token.required_metadata == ["reference", "invoice_id"] and token.user_pattern == "acme:[a-z0-9_]+"
        assert token.expires_at is not None
    # It works, and no later page shows it again.
    deposit = console.post("/v1/user/balance/deposit", json={"user": "acme:u1", "amount": "5",
                                                             "metadata": {"reference": "r1", "invoice_id": "i1"}},
                           headers={"Authorization": f"Bearer {text}"})
    assert deposit.status_code == 200
    for path in ("/console/tokens", f"/console/tokens/{token_id}", "/console/", "/console/audit"):
        assert text not in console.get(path).get_data(as_text=True)
        assert tokens.split(text)[1] not in console.get(path).get_data(as_text=True)
    [created] = audit_rows(app, "token.created")
    assert created.via == "console" and created.token_id == token_id
    assert created.changes["daily_cap"] == "100" and created.changes["label"] == "Zap: renewals"


def test_create_never_puts_the_secret_in_the_cookie(console):
    response = create(console)
    text = token_of(response.get_data(as_text=True))
    for header in response.headers.getlist("Set-Cookie"):
        assert text not in header and tokens.split(text)[1] not in header


def test_reloading_the_create_post_does_not_create_twice(app, console):
    data = {**form_of(console, "/console/tokens/new"), "label": "once", "operations": ["deposit"]}
    first = console.post("/console/tokens/new", data=data)
    assert first.status_code == 200
    again = console.post("/console/tokens/new", data=data)
    assert again.status_code == 302 and "/console/tokens/" in again.headers["Location"]
    assert "pwr_" not in console.get(again.headers["Location"]).get_data(as_text=True)
    assert len(audit_rows(app, "token.created")) == 1


@pytest.mark.parametrize("fields, field, words", [
    ({"label": "  "}, "label", "not only blanks"),
    ({"label": ""}, "label", "label must be"),
    ({"operations": []}, "operations", "operations must be"),
    ({"operations": ["deposit", "teleport"]}, "operations", "operations must be"),
    ({"max_amount": "-3"}, "max_amount", "max_amount"),
    ({"daily_cap": "ten"}, "daily_cap", "daily_cap"),
    ({"monthly_cap": "0.0000001"}, "monthly_cap", "monthly_cap"),
    ({"user_pattern": "(a+)+$"}, "user_pattern", "user_pattern"),
    ({"user_pattern": "(a"}, "user_pattern", "user_pattern"),
    ({"required_metadata": "has space, ok"}, "required_metadata", "required_metadata"),
    ({"rate_limit": "0/minute"}, "rate_limit", "rate_limit"),
    ({"dedupe_on": "user, colour"}, "dedupe_on", "dedupe_on"),
    ({"namespace": "has space"}, "namespace", "namespace"),
    ({"feed": "everyone"}, "feed", "feed"),
    ({"expires_in": "soon"}, "expires_in", "expires_in"),
    ({"expires_at": "31/12/2026"}, "expires_at", "expires_at"),
    ({"expires_in": "1d", "expires_at": "2027-01-01"}, "expires_at", "both"),
])
def test_each_field_error_is_shown_beside_its_field(app, console, fields, field, words):
    response = create(console, **fields)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    error = re.search(rf'<p class="error" id="{field}-error">([^<]+)</p>', page)
    assert error, page
    assert words in error.group(1)
    assert f'aria-describedby="{field}-hint {field}-error"' in page or field == "operations"
    assert "pwr_" not in page
    with app.app_context(), db.read() as read:
        assert tokens.all_tokens(read) == []
    assert audit_rows(app, "token.created") == []


def test_a_refused_form_keeps_what_was_typed(console):
    page = create(console, label="Keep me", daily_cap="abc", notes="a <b>note</b>").get_data(as_text=True)
    assert 'value="Keep me"' in page and 'value="abc"' in page
    assert "a &lt;b&gt;note&lt;/b&gt;" in page  # escaped, never markup


def test_the_form_and_the_admin_api_give_the_same_messages(app, console):
    page = create(console, rate_limit="lots").get_data(as_text=True)
    shown = re.search(r'<p class="error" id="rate_limit-error">([^<]+)</p>', page).group(1)
    api = console.post("/v1/admin/tokens", json={"label": "x", "rate_limit": "lots"},
                       headers={"Authorization": f"Bearer {admin_key(app)}"}).get_json()
    import html
    assert html.unescape(shown) == api["errors"][0]["message"]


# --- tokens: list, detail, edit, actions -------------------------------------------------------------------

def console_token(console, **fields) -> tuple[str, str]:
    text = token_of(create(console, **fields).get_data(as_text=True))
    return tokens.split(text)[0], text


def pay(client, text, amount="10", user="acme:u1", **metadata):
    return client.post("/v1/user/balance/deposit", json={"user": user, "amount": amount, "metadata": metadata},
                       headers={"Authorization": f"Bearer {text}"})


def test_list_shows_usage_bars_against_the_caps(console):
    token_id, text = console_token(console, label="Capped", daily_cap="40", monthly_cap="100")
    console_token(console, label="Uncapped")
    assert pay(console, text, "30", reference="a").status_code == 200
    page = console.get("/console/tokens").get_data(as_text=True)
    assert 'aria-label="30 of 40 used today (75%)"' in page
    assert 'aria-label="30 of 100 used this month (30%)"' in page
    assert 'width="150.0"' in page  # 30/40 of the 200-wide bar
    assert "0 today, no cap" in page and "Uncapped" in page
    assert pay(console, text, "10", reference="b").status_code == 200
    page = console.get("/console/tokens").get_data(as_text=True)
    assert 'class="bar bar-full"' in page and "40 / 40 today" in page


def test_detail_shows_limits_usage_recent_rows_and_the_chart(app, console):
    token_id, text = console_token(console, label="Detail", daily_cap="100", user_pattern="acme:.*")
    assert pay(console, text, "12.5", user="acme:ann").status_code == 200
    assert pay(console, text, "7.5", user="acme:bob").status_code == 200
    assert pay(console, text, "1", user="other:x").status_code == 403
    page = console.get(f"/console/tokens/{token_id}").get_data(as_text=True)
    assert "<h1>Detail</h1>" in page and "acme:.*" in page
    assert "80 left" in page and 'aria-label="20 of 100 used today (20%)"' in page
    assert "acme:ann" in page and "acme:bob" in page and "12.5" in page
    assert "Credits per day over the last 30 days: 20 in all" in page
    today = datetime.now(timezone.utc).date().isoformat()
    assert f"<td>{today}</td><td>20</td>" in page
    assert page.count('class="chart-bar"') == 30
    assert "token.created via console" in page


def test_chart_counts_only_credits_of_this_token_by_utc_day(app, console):
    from relay.console import charts
    from relay.models import LedgerEntry
    token_id, _ = console_token(console, label="Chart")
    other_id, _ = console_token(console, label="Other")
    now = datetime.now(timezone.utc)

    def row(days_ago, micros, outcome="credited", tid=token_id):
        return LedgerEntry(created_at=now - timedelta(days=days_ago), token_id=tid, token_label="x",
                           operation="deposit", outcome=outcome, amount_micros=micros, amount=str(micros / 1e6))
    with app.app_context():
        with db.transaction() as write:
            write.add_all([row(0, 1_000_000), row(0, 2_500_000), row(3, 4_000_000), row(29, 1),
                           row(30, 9_000_000), row(1, 5_000_000, "declined"), row(1, 6_000_000, tid=other_id)])
        with db.read() as read:
            series = dict(charts.credits_per_day(read, token_id, now.date()))
    assert len(series) == 30
    assert series[now.date()] == 3_500_000
    assert series[now.date() - timedelta(days=3)] == 4_000_000
    assert series[now.date() - timedelta(days=29)] == 1
    assert series[now.date() - timedelta(days=1)] == 0  # declined, and another token's credit, are not counted
    assert sum(series.values()) == 7_500_001  # 30 days ago is outside


def test_chart_geometry():
    from datetime import date
    from relay.console import charts
    figure = charts.chart([(date(2026, 11, 1), 0), (date(2026, 11, 2), 3_000_000), (date(2026, 11, 3), 5_000_000)])
    assert [line["label"] for line in figure["grid"]] == ["0", "2.5", "5"]
    heights = [bar["h"] for bar in figure["bars"]]
    assert heights[0] == 0 and heights[2] == figure["plot_h"] and heights[1] == round(figure["plot_h"] * 0.6, 1)
    assert charts.bar(50_000_000, 40_000_000)["width"] == 200 and charts.bar(50_000_000, 40_000_000)["level"] == "full"
    assert charts.bar(10, None)["cap"] is None


def test_edit_changes_settings_and_is_audited(app, console):
    token_id, text = console_token(console, label="Edit me", daily_cap="10", operations=["deposit", "balance"])
    hidden = form_of(console, f"/console/tokens/{token_id}/edit")
    page = console.get(f"/console/tokens/{token_id}/edit").get_data(as_text=True)
    assert 'value="Edit me"' in page and 'value="10"' in page and 'id="op-balance" name="operations" value="balance" checked' in page
    form = {**hidden, "label": "Edited", "daily_cap": "", "monthly_cap": "500", "operations": ["deposit"],
            "dedupe_on": "user, amount, metadata", "feed": "own", "expires_at": "", "required_metadata": "",
            "user_pattern": "", "rate_limit": "", "namespace": "", "notes": "", "max_amount": ""}
    response = console.post(f"/console/tokens/{token_id}/edit", data=form)
    assert response.status_code == 302 and response.headers["Location"] == f"/console/tokens/{token_id}"
    assert "Saved: daily_cap, label, monthly_cap, operations changed." in console.get(response.headers["Location"]).get_data(as_text=True)
    with app.app_context(), db.read() as read:
        token = tokens.get(read, token_id)
        assert token.label == "Edited" and token.daily_cap_micros is None and token.monthly_cap_micros == 500_000_000
        assert token.operations == ["deposit"]
    [updated] = audit_rows(app, "token.updated")
    assert updated.changes == {"label": {"from": "Edit me", "to": "Edited"}, "daily_cap": {"from": "10", "to": None},
                               "monthly_cap": {"from": None, "to": "500"},
                               "operations": {"from": ["deposit", "balance"], "to": ["deposit"]}}
    assert pay(console, text, "5").status_code == 200  # same secret


def test_edit_refusals_show_beside_the_field_and_change_nothing(app, console):
    token_id, text = console_token(console, label="Locked")
    assert pay(console, text, "5").status_code == 200  # the token now holds a key: its identity is locked
    hidden = form_of(console, f"/console/tokens/{token_id}/edit")
    base = {**hidden, "label": "Locked", "operations": ["deposit"], "dedupe_on": "user, amount, metadata"}
    page = console.post(f"/console/tokens/{token_id}/edit", data={**base, "monthly_cap": "-5"}).get_data(as_text=True)
    assert re.search(r'id="monthly_cap-error">monthly_cap', page)
    response = console.post(f"/console/tokens/{token_id}/edit", data={**base, "namespace": "shared"})
    assert response.status_code == 422
    assert re.search(r'id="namespace-error">[^<]*idempotency', response.get_data(as_text=True))
    response = console.post(f"/console/tokens/{token_id}/edit", data={**base, "operations": []})
    assert response.status_code == 422 and 'id="operations-error"' in response.get_data(as_text=True)
    with app.app_context(), db.read() as read:
        token = tokens.get(read, token_id)
        assert token.namespace is None and token.monthly_cap_micros is None and token.operations == ["deposit"]
    assert audit_rows(app, "token.updated") == []


def act(console, token_id, action):
    page = console.get(f"/console/tokens/{token_id}/{action}")
    assert page.status_code == 200
    return console.post(f"/console/tokens/{token_id}/{action}", data=form_of(console, f"/console/tokens/{token_id}/{action}"))


def test_every_action_asks_first_and_a_get_changes_nothing(app, console):
    token_id, text = console_token(console, label="Careful")
    for action in ("rotate", "disable", "revoke"):
        page = console.get(f"/console/tokens/{token_id}/{action}").get_data(as_text=True)
        assert "Cancel" in page and f'action="/console/tokens/{token_id}/{action}"' in page
    assert pay(console, text).status_code == 200  # still the same, working token
    assert [e.action for e in audit_rows(app) if e.action.startswith("token.")] == ["token.created"]


def test_rotate_shows_the_new_secret_once_and_the_old_one_gets_401(app, console):
    token_id, old = console_token(console, label="Rotate me")
    response = act(console, token_id, "rotate")
    assert response.status_code == 200
    new = token_of(response.get_data(as_text=True))
    assert new != old and tokens.split(new)[0] == token_id
    assert pay(console, old).status_code == 401
    assert pay(console, new).status_code == 200
    assert new not in console.get(f"/console/tokens/{token_id}").get_data(as_text=True)
    assert [e.action for e in audit_rows(app) if e.action.startswith("token.")] == ["token.created", "token.rotated"]


def test_disable_enable_and_revoke(app, console):
    token_id, text = console_token(console, label="Lifecycle")
    assert act(console, token_id, "disable").status_code == 302
    assert pay(console, text).status_code == 401
    assert "disabled" in console.get(f"/console/tokens/{token_id}").get_data(as_text=True)
    assert act(console, token_id, "enable").status_code == 302
    assert pay(console, text).status_code == 200
    assert act(console, token_id, "revoke").status_code == 302
    assert pay(console, text).status_code == 401
    detail = console.get(f"/console/tokens/{token_id}").get_data(as_text=True)
    assert "status-revoked" in detail and f"/console/tokens/{token_id}/edit" not in detail
    # A revoked token cannot be rotated, enabled or edited, even by a hand-made post.
    hidden = form_of(console, "/console/tokens")  # the sign-out form's CSRF token
    for action in ("rotate", "enable", "disable"):
        response = console.post(f"/console/tokens/{token_id}/{action}", data={"csrf_token": hidden["csrf_token"]})
        assert response.status_code == 302
        assert "cannot be" in console.get(response.headers["Location"]).get_data(as_text=True)
    assert console.get(f"/console/tokens/{token_id}/edit").status_code == 404
    assert pay(console, text).status_code == 401
    assert [e.action for e in audit_rows(app) if e.action.startswith("token.")] == [
        "token.created", "token.disabled", "token.enabled", "token.revoked"]


def test_unknown_tokens_and_actions_are_404_pages(console):
    for path in ("/console/tokens/nope", "/console/tokens/nope/rotate", "/console/tokens/x/explode", "/console/tokens/" + "a" * 5000):
        response = console.get(path)
        assert response.status_code == 404 and "text/html" in response.headers["Content-Type"], path


# --- overview and audit pages ------------------------------------------------------------------------------

def test_overview(app, console, sandbox):
    busy_id, busy = console_token(console, label="Busy", expires_in="3d")
    calm_id, calm = console_token(console, label="Calm", expires_in="30d")
    for n in range(3):
        assert pay(console, busy, "10", user=f"acme:{n}").status_code == 200
    assert pay(console, calm, "2.5").status_code == 200
    page = console.get("/console/").get_data(as_text=True)
    assert "reachable, key accepted" in page and "answering" in page
    assert re.search(r"<dt>Today \(UTC\)</dt><dd>32.5</dd>", page)
    assert re.search(r"<dt>This month</dt><dd>32.5</dd>", page)
    busiest = page[page.index("busiest-heading"):page.index("expiring-heading")]
    assert busiest.index("Busy") < busiest.index("Calm") and "<td>3</td><td>30</td>" in busiest
    expiring = page[page.index("expiring-heading"):page.index("failures-heading")]
    assert "Busy" in expiring and "Calm" not in expiring
    assert "No failures." in page


def test_overview_lists_the_latest_failures(app, console):
    token_id, text = console_token(console, label="Failing", max_amount="5")
    assert pay(console, text, "50").status_code in (403, 422)
    from relay.models import LedgerEntry
    with app.app_context(), db.transaction() as write:
        write.add(LedgerEntry(token_id=token_id, token_label="Failing", operation="deposit", user="acme:z",
                              amount="3", outcome="ambiguous", upstream_status=504))
    page = console.get("/console/").get_data(as_text=True)
    failures = page[page.index("failures-heading"):]
    assert "ambiguous" in failures and "504" in failures and "acme:z" in failures


def test_failures_link_to_the_ledger_pages_once_they_exist(make_app, sandbox):
    """The ledger's row and ambiguous pages are a separate part of the console: without them the overview shows
    plain text, with them it links each failure to its row."""
    from relay.models import LedgerEntry
    app = make_app()
    with app.app_context(), db.transaction() as write:
        write.add(LedgerEntry(token_id="t", token_label="T", operation="deposit", outcome="ambiguous", user="acme:q"))
    app.view_functions.pop("console.ledger_entry", None)
    app.view_functions.pop("console.ledger_ambiguous", None)
    client = app.test_client()
    sign_in(client, admin_key(app))
    page = client.get("/console/").get_data(as_text=True)
    assert "led_" not in page and "the ledger's ambiguous view" in page
    app.view_functions["console.ledger_entry"] = lambda entry_id: entry_id
    app.view_functions["console.ledger_ambiguous"] = lambda: ""
    app.url_map.add(app.url_rule_class("/console/ledger/<entry_id>", endpoint="console.ledger_entry"))
    app.url_map.add(app.url_rule_class("/console/ledger/ambiguous", endpoint="console.ledger_ambiguous"))
    page = client.get("/console/").get_data(as_text=True)
    assert re.search(r'<a href="/console/ledger/led_\d+">', page) and 'href="/console/ledger/ambiguous"' in page


def test_overview_says_when_paywalls_refuses_the_key(make_app, sandbox):
    app = make_app(PAYWALLS_API_KEY="sk-wrong-key-0123456789")
    client = app.test_client()
    sign_in(client, admin_key(app))
    assert "the key is refused" in client.get("/console/").get_data(as_text=True)


def test_audit_page_filters_and_pages(app, console):
    first_id, _ = console_token(console, label="First")
    second_id, _ = console_token(console, label="Second")
    act(console, second_id, "disable")
    page = console.get("/console/audit").get_data(as_text=True)
    assert "<td>token.disabled</td>" in page and "<td>console.signed_in</td>" in page and "<code>disabled</code>: false → true" in page
    only = console.get(f"/console/audit?token={first_id}").get_data(as_text=True)
    assert first_id in only and second_id not in only
    actions = console.get("/console/audit?action=token.disabled").get_data(as_text=True)
    assert second_id in actions and first_id not in actions
    from relay.console import overview
    with app.app_context(), db.transaction() as write:
        from relay import audit
        for _ in range(overview.AUDIT_PAGE + 5):
            audit.record(write, "cli", "ops@host", "token.updated", first_id, {"label": {"from": "a", "to": "b"}})
    page = console.get("/console/audit").get_data(as_text=True)
    older = re.search(r'href="(/console/audit\?before=\d+)"', page).group(1)
    assert "<td>console.signed_in</td>" not in page
    assert "<td>console.signed_in</td>" in console.get(older).get_data(as_text=True)
    assert console.get("/console/audit?before=abc&action=<script>").status_code == 200


# --- `paywalls-relay run` prints the console URL -----------------------------------------------------------

def test_run_prints_a_console_url_and_key_that_sign_in(tmp_path):
    """Sandbox mode with no RELAY_ADMIN_KEY: run makes a key for this process and prints it with the URL."""
    import os
    import subprocess
    import sys

    import requests
    from conftest import free_port, relay_env, sqlite_url, stop_process
    port = free_port()
    env = relay_env({"DATABASE_URL": sqlite_url(tmp_path)})
    env.pop("RELAY_ADMIN_KEY", None)
    process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "paywalls-relay"), "run", "--port",
                                str(port)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        seen = ""
        while "Operator console" not in seen:
            line = process.stdout.readline()
            assert line, seen
            seen += line
        url, key = re.search(r"Operator console: (\S+) \(sandbox admin key, a new one each start: (\S+)\)", seen).groups()
        assert url == f"http://127.0.0.1:{port}/console/"
        browser = requests.Session()
        page = browser.get(url + "sign-in", timeout=10).text
        signed = browser.post(url + "sign-in", data={"csrf_token": csrf_of(page), "admin_key": key},
                              allow_redirects=False, timeout=10)
        assert signed.status_code == 302 and signed.headers["Location"] == "/console/"
        assert "<h1>Overview</h1>" in browser.get(url, timeout=10).text
        # The same key opens the admin API of this process, and nothing else knows it.
        assert requests.get(f"http://127.0.0.1:{port}/v1/admin/tokens", headers={"Authorization": f"Bearer {key}"},
                            timeout=10).status_code == 200
    finally:
        stop_process(process)


def test_database_outage_is_a_503_page_and_the_session_survives_it(make_app, sandbox):
    from test_faults import private_postgres
    with private_postgres() as cluster:
        app = make_app(database_url=cluster.url("relay"))
        client = app.test_client()
        assert sign_in(client, admin_key(app)).status_code == 302
        cluster.stop()
        for path in ("/console/", "/console/tokens", "/console/sign-in"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert "The database is not answering" in response.get_data(as_text=True)
            assert "text/html" in response.headers["Content-Type"] and response.headers["Retry-After"] == "30"
        cluster.start()
        assert client.get("/console/tokens").status_code == 200  # same cookie, same session, no restart
        app.extensions["relay.engine"].dispose()


# --- hostile input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("next_path", ["/console/\r\nSet-Cookie: x=1", "/console/\x00", "/console/ tokens",
                                       "/console/../v1/admin/tokens", "/console/%2e%2e/v1",
                                       "/console//evil.example", "/console/" + "a" * 3000])
def test_a_hostile_next_is_dropped_not_obeyed(app, client, next_path):
    response = sign_in(client, admin_key(app), next_path=next_path)
    assert response.status_code == 302 and response.headers["Location"] == "/console/"
    assert not any("x=1" in header for header in response.headers.getlist("Set-Cookie"))


def test_oversized_forms_get_a_413_page_and_change_nothing(app, console):
    hidden = form_of(console, "/console/tokens/new")
    for data in ({**hidden, "label": "x" * 20000, "operations": ["deposit"]},
                 {**hidden, "label": "x", "operations": ["deposit"] * 5000}):
        response = console.post("/console/tokens/new", data=data)
        assert response.status_code == 413 and "too large" in response.get_data(as_text=True)
    with app.app_context(), db.read() as read:
        assert tokens.all_tokens(read) == []


def test_markup_and_control_characters_in_fields(app, console):
    response = create(console, label="<script>alert(1)</script>", notes="<img src=x onerror=alert(1)>")
    assert response.status_code == 200
    token_id = tokens.split(token_of(response.get_data(as_text=True)))[0]
    detail = console.get(f"/console/tokens/{token_id}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in detail and "&lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "<img src=x" not in detail
    refused = create(console, label="a\x00b")
    assert refused.status_code == 422 and 'id="label-error"' in refused.get_data(as_text=True)


def test_a_tampered_or_foreign_cookie_signs_nobody_in(app, client):
    client.set_cookie("relay_console", "eyJzaWQiOiJ4In0.abc.def", path="/console")
    assert client.get("/console/").status_code == 302
    from flask.sessions import SecureCookieSessionInterface
    from relay.console import session_secret
    from flask import Flask
    forger = Flask("forger")
    forger.secret_key = session_secret("admin-some-other-key")
    forged = SecureCookieSessionInterface().get_signing_serializer(forger).dumps({"sid": "anything"})
    client.set_cookie("relay_console", forged, path="/console")
    assert client.get("/console/").status_code == 302
    # Signed with the right key but naming no stored session: still nobody.
    real = Flask("real")
    real.secret_key = session_secret(admin_key(app))
    client.set_cookie("relay_console", SecureCookieSessionInterface().get_signing_serializer(real).dumps({"sid": "guess"}),
                      path="/console")
    assert client.get("/console/").status_code == 302


def test_neither_the_admin_key_nor_a_wrong_guess_reaches_the_log(app, client, relay_log):
    sign_in(client, "admin-a-wrong-guess-123456")
    sign_in(client, admin_key(app))
    client.get("/console/tokens")
    logged = "\n".join(record.getMessage() + " " + str(record.__dict__) for record in relay_log.records)
    assert "/console/sign-in" in logged  # the requests were logged ...
    assert admin_key(app) not in logged and "admin-a-wrong-guess-123456" not in logged  # ... without the keys


def test_times_are_shown_in_utc_whatever_zone_the_database_hands_back():
    from relay.console import utc
    kolkata = timezone(timedelta(hours=5, minutes=30))
    assert utc(datetime(2026, 11, 30, 5, 30, tzinfo=kolkata)) == "2026-11-30 00:00:00"
    assert utc(datetime(2026, 11, 30, 0, 0)) == "2026-11-30 00:00:00"  # SQLite: naive, stored as UTC
    assert utc(None) == ""
    from relay.console import iso_utc
    assert iso_utc("2026-11-30T16:16:01.608246Z") == "2026-11-30 16:16:01" and iso_utc(None) == ""


# --- several relay processes --------------------------------------------------------------------------------

def test_sessions_and_sign_out_hold_across_gunicorn_workers(database_url, sandbox):
    """Every worker agrees on who is signed in, and a sign-out in one worker ends the session in all of them."""
    import requests
    from conftest import base_settings, gunicorn_relay
    from relay import migrate
    migrate.upgrade(database_url)
    settings = base_settings(database_url, sandbox.url)
    with gunicorn_relay(settings, workers=3, threads=2) as (relay, _process):
        browser = requests.Session()
        page = browser.get(relay + "/console/sign-in", timeout=10).text
        assert browser.post(relay + "/console/sign-in", data={"csrf_token": csrf_of(page),
                                                              "admin_key": settings["RELAY_ADMIN_KEY"]},
                            allow_redirects=False, timeout=10).status_code == 302
        stolen = browser.cookies.get("relay_console")
        pages = [browser.get(relay + "/console/tokens", allow_redirects=False, timeout=10) for _ in range(12)]
        assert {page.status_code for page in pages} == {200}
        token = csrf_of(pages[-1].text)
        assert browser.post(relay + "/console/sign-out", data={"csrf_token": token}, allow_redirects=False,
                            timeout=10).status_code == 302
        thief = requests.Session()
        thief.cookies.set("relay_console", stolen, path="/console")
        after = [thief.get(relay + "/console/tokens", allow_redirects=False, timeout=10) for _ in range(12)]
        assert {page.status_code for page in after} == {302}
