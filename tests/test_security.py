"""Issue 7, security: secrets stay secret, the admin API is the admin key's alone, guessing is throttled,
and every answer carries the security headers.

The whole-run leak check (every answer and log line of the session, scanned for the master key, the admin
keys and every token secret) lives in tests/leakcheck.py and fails the run at its end; the tests here
check that it sees what it must, and test the same in a relay run by gunicorn, log file included.
"""

import json
import uuid

import pytest
import requests

import leakcheck
from conftest import (SANDBOX_KEY, auth, base_settings, deposit, gunicorn_relay, migrated_token, sqlite_url)
from relay import db, messages, tokens
from relay.app import SECURITY_HEADERS

DEPOSIT = "/v1/user/balance/deposit"


def admin_headers(app) -> dict:
    return {"Authorization": f"Bearer {app.config['RELAY']['RELAY_ADMIN_KEY']}"}


def new_token(app, **spec) -> tuple[str, str]:
    with app.app_context(), db.transaction() as session:
        token, text = tokens.create(session, {"label": "sec", "operations": list(tokens.OPERATIONS), **spec})
        return token.id, text


def assert_security_headers(response, what=""):
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, f"{what}: {name} missing or wrong on a {response.status_code}"
    assert headers.get("X-Request-Id"), f"{what}: no X-Request-Id on a {response.status_code}"


# --- the whole-run leak check ---------------------------------------------------------------------------------

def test_leak_check_sees_secrets_in_answers_and_logs(make_app, sandbox):
    app = make_app()
    _, token = new_token(app)
    assert SANDBOX_KEY in leakcheck.SECRETS
    assert app.config["RELAY"]["RELAY_ADMIN_KEY"] in leakcheck.SECRETS
    assert tokens.split(token)[1] in leakcheck.SECRETS
    before = len(leakcheck.RECORDS)
    response = deposit(app.test_client(), token)
    assert response.status_code == 200
    seen = leakcheck.RECORDS[before:]
    assert any(where.startswith("test client POST " + DEPOSIT) for where, _ in seen)
    assert any(where.startswith("log line") and '"path": "' + DEPOSIT in text for where, text in seen)
    # A planted leak is found, in a response header, a body or a log line.
    secret = tokens.split(token)[1]
    for planted in (f"X-Debug: {secret}", '{"token": "' + token + '"}', f"Authorization: Bearer {SANDBOX_KEY}"):
        assert leakcheck.leaks([("planted", planted)]), planted
    assert leakcheck.leaks([("planted", "nothing to see")]) == []


def test_the_scan_finds_a_secret_wherever_it_stands():
    word_secret, other_secret = "pwrs_Abc123-_xyz7890QRS", "k3y.with+plus/and=0123456789"
    secrets = {word_secret, other_secret, "unrelated_secret_0123456789"}
    for text in (word_secret, f"glued{word_secret}glued", f"a={word_secret}&b", f"..{other_secret}..",
                 "x" * 70000 + word_secret):
        found = leakcheck.leaks([("planted", text)], secrets)
        assert found and found[0].startswith("planted: contains a secret"), text[:40]
    for text in (word_secret[:-1], word_secret[1:], other_secret.replace("+", " "), ""):
        assert leakcheck.leaks([("planted", text)], secrets) == [], text


def test_no_secret_in_any_answer_or_log_line_so_far():
    assert leakcheck.leaks() == []


def test_token_creation_and_rotation_show_the_token_once_and_never_again(make_app, sandbox):
    app = make_app()
    client, admin = app.test_client(), admin_headers(app)
    created = client.post("/v1/admin/tokens", json={"label": "once", "operations": ["deposit", "ledger"]}, headers=admin)
    assert created.status_code == 201
    text = created.get_json()["token"]
    rotated = client.post(f"/v1/admin/tokens/{created.get_json()['id']}/rotate", headers=admin).get_json()["token"]
    secrets = {tokens.split(text)[1], tokens.split(rotated)[1]}
    assert secrets <= leakcheck.SECRETS
    before = len(leakcheck.RECORDS)
    assert deposit(client, rotated).status_code == 200
    assert deposit(client, text).status_code == 401  # the old secret is dead
    for path in ("/v1/admin/tokens", f"/v1/admin/tokens/{created.get_json()['id']}"):
        assert client.get(path, headers=admin).status_code == 200
    assert client.get("/v1/relay/me", headers=auth(rotated)).status_code == 200
    assert client.get("/v1/relay/deposits", headers=auth(rotated)).status_code == 200
    assert leakcheck.leaks(leakcheck.RECORDS[before:]) == []


# --- the admin API is the admin key's alone --------------------------------------------------------------------

ADMIN_CALLS = [("GET", "/v1/admin/tokens", None), ("POST", "/v1/admin/tokens", {"label": "sneaky"}),
               ("GET", "/v1/admin/tokens/{id}", None), ("PATCH", "/v1/admin/tokens/{id}", {"max_amount": "1000000"}),
               ("POST", "/v1/admin/tokens/{id}/revoke", None), ("POST", "/v1/admin/tokens/{id}/rotate", None)]


@pytest.mark.parametrize("method,path,body", ADMIN_CALLS)
def test_admin_endpoints_refuse_relay_tokens(make_app, method, path, body):
    app = make_app()
    client = app.test_client()
    token_id, token = new_token(app)
    response = client.open(path.format(id=token_id), method=method, json=body, headers=auth(token))
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert "relay tokens are not accepted" in response.get_json()["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Nothing changed: the token still works with its old limits, and no token was created.
    assert client.get("/v1/relay/me", headers=auth(token)).get_json()["limits"]["max_amount"] is None
    listed = client.get("/v1/admin/tokens", headers=admin_headers(app)).get_json()["data"]
    assert [t["id"] for t in listed] == [token_id]


@pytest.mark.parametrize("header", ["Bearer {admin}", "bearer {admin}", "Basic {admin}", "{admin}", "Bearer {admin}x",
                                    "Bearer ", "Token {admin}"])
def test_admin_endpoints_refuse_anything_but_the_exact_admin_key(make_app, header):
    app = make_app()
    admin_key = app.config["RELAY"]["RELAY_ADMIN_KEY"]
    response = app.test_client().get("/v1/admin/tokens", headers={"Authorization": header.format(admin=admin_key)})
    expected = 200 if header.lower().startswith("bearer ") and header.format(admin=admin_key).split(" ", 1)[1] == admin_key else 401
    assert response.status_code == expected


def test_the_admin_key_is_not_a_relay_token(make_app, sandbox):
    app = make_app()
    response = deposit(app.test_client(), app.config["RELAY"]["RELAY_ADMIN_KEY"])
    assert response.status_code == 401
    assert response.get_json()["reason"] == "malformed"
    assert sandbox.state.snapshot()["calls"] == {}


def test_admin_api_is_off_without_an_admin_key(make_app):
    app = make_app(RELAY_ADMIN_KEY=None)
    _, token = new_token(app)
    for header in ({}, auth(token), {"Authorization": "Bearer "}):
        response = app.test_client().get("/v1/admin/tokens", headers=header)
        assert response.status_code == 404


# --- failed-authentication throttling ----------------------------------------------------------------------

def test_guessing_the_admin_key_is_throttled_and_the_throttle_covers_the_relay_api(make_app):
    app = make_app(RELAY_AUTH_FAILURE_LIMIT="4/minute")
    client = app.test_client()
    _, token = new_token(app)
    guesses = [client.get("/v1/admin/tokens", headers={"Authorization": f"Bearer guess-{n}"}) for n in range(5)]
    assert [r.status_code for r in guesses] == [401] * 4 + [429]
    assert int(guesses[-1].headers["Retry-After"]) >= 1
    assert guesses[-1].get_json()["type"] == "urn:paywalls-relay:problem:rate-limited"
    # The admin key, a person's choice, is now refused from this address even when right (no oracle for a guesser),
    # and so are bad relay tokens; a valid relay token is not (issue 12: Zaps share egress addresses)...
    assert client.get("/v1/admin/tokens", headers=admin_headers(app)).status_code == 429
    assert client.get("/v1/relay/me", headers=auth(token + "x")).status_code == 429
    assert client.get("/v1/relay/me", headers=auth(token)).status_code == 200
    # ...and other addresses are not.
    elsewhere = {"REMOTE_ADDR": "10.1.2.3"}
    assert client.get("/v1/admin/tokens", headers=admin_headers(app), environ_base=elsewhere).status_code == 200
    assert client.get("/v1/relay/me", headers=auth(token), environ_base=elsewhere).status_code == 200


def test_successful_calls_do_not_count_towards_the_throttle(make_app, sandbox):
    app = make_app(RELAY_AUTH_FAILURE_LIMIT="3/minute")
    client = app.test_client()
    _, token = new_token(app)
    for n in range(10):
        assert deposit(client, token, metadata={"n": n}).status_code == 200
    assert [client.get("/v1/relay/me", headers=auth(token + "x")).status_code for _ in range(4)] == [401] * 3 + [429]


# --- security headers on every answer ----------------------------------------------------------------------

def _answers(app, sandbox, monkeypatch):
    """One request for each kind of answer the relay gives, with the status it must have."""
    client = app.test_client()
    _, token = new_token(app, max_amount="50")
    _, deposit_only = new_token(app, operations=["deposit"])
    admin = admin_headers(app)
    faults = sandbox.url.replace("/v1", "/_sandbox/faults")
    yield 200, "deposit", lambda: deposit(client, token)
    yield 200, "replay", lambda: deposit(client, token)
    yield 200, "balance", lambda: client.get("/v1/user/balance?user=acme:user_1", headers=auth(token))
    yield 200, "me", lambda: client.get("/v1/relay/me", headers=auth(token))
    yield 200, "feed", lambda: client.get("/v1/relay/deposits", headers=auth(token))
    yield 200, "healthz", lambda: client.get("/healthz")
    yield 200, "readyz", lambda: client.get("/readyz")
    yield 200, "openapi", lambda: client.get("/openapi.json")
    yield 200, "metrics", lambda: client.get("/metrics")
    yield 201, "admin create", lambda: client.post("/v1/admin/tokens", json={"label": "h"}, headers=admin)
    yield 400, "malformed", lambda: client.post(DEPOSIT, data=b"{", headers={**auth(token), "Content-Type": "application/json"})
    yield 401, "no token", lambda: client.post(DEPOSIT, json={"user": "u", "amount": "1"})
    yield 403, "over max", lambda: deposit(client, token, amount="500")
    yield 403, "not granted", lambda: client.get("/v1/relay/deposits", headers=auth(deposit_only))
    yield 404, "no path", lambda: client.get("/nope")
    yield 405, "wrong method", lambda: client.delete(DEPOSIT)
    yield 413, "too large", lambda: client.post(DEPOSIT, data=b"{" + b" " * 20000 + b"}",
                                                headers={**auth(token), "Content-Type": "application/json"})
    yield 415, "not json", lambda: client.post(DEPOSIT, data=b"user=u", headers={**auth(token), "Content-Type": "text/plain"})
    yield 422, "invalid", lambda: deposit(client, token, amount="-1")
    yield 422, "key reused", lambda: deposit(client, token, amount="2", headers={"Idempotency-Key": "k1"}) and \
        deposit(client, token, amount="3", headers={"Idempotency-Key": "k1"})
    yield 502, "ambiguous", lambda: requests.post(faults, json={"kind": "status", "status": 500, "count": 10}) and \
        deposit(client, token, amount="4")
    yield 429, "throttled", lambda: [client.get("/v1/relay/me", headers=auth("pwr_x")) for _ in range(3)][-1]
    yield 503, "database down", lambda: (monkeypatch.setattr(db, "read_connection", _database_down),
                                        client.get("/v1/relay/me", headers=auth(token),
                                                   environ_base={"REMOTE_ADDR": "10.0.0.1"}))[1]
    yield 500, "unexpected", lambda: (monkeypatch.setattr(db, "read_connection", _bug),
                                     client.get("/v1/relay/me", headers=auth(token),
                                                environ_base={"REMOTE_ADDR": "10.0.0.2"}))[1]


def _database_down():
    from sqlalchemy.exc import OperationalError
    raise OperationalError("SELECT 1", {}, Exception("connection refused"))


def _bug():
    raise RuntimeError("a bug")


def test_security_headers_on_every_kind_of_answer(make_app, sandbox, monkeypatch):
    app = make_app(RELAY_AUTH_FAILURE_LIMIT="2/minute", RELAY_UPSTREAM_RETRIES=0)
    statuses = set()
    for status, what, call in _answers(app, sandbox, monkeypatch):
        response = call()
        assert response.status_code == status, (what, response.status_code, response.get_data(as_text=True)[:300])
        statuses.add(status)
        if isinstance(response, requests.Response):
            continue
        assert_security_headers(response, what)
        assert "Server" not in response.headers or "relay" not in response.headers["Server"].lower()
    assert statuses >= {200, 201, 400, 401, 403, 404, 405, 413, 415, 422, 429, 500, 502, 503}


def test_the_sandbox_header_is_only_set_in_sandbox_mode(make_app, client):
    assert "X-Relay-Sandbox" not in client.get("/healthz").headers


# --- the same through gunicorn, log file included -------------------------------------------------------------

def test_under_gunicorn_headers_throttling_and_no_secret_in_answers_or_logs(sandbox, tmp_path):
    url_db = sqlite_url(tmp_path)
    token = migrated_token(url_db, operations=list(tokens.OPERATIONS))
    admin_key = "admin-" + uuid.uuid4().hex
    settings = base_settings(url_db, sandbox.url, RELAY_ADMIN_KEY=admin_key, RELAY_AUTH_FAILURE_LIMIT="5/minute")
    log_path = tmp_path / "relay.log"
    secrets = {SANDBOX_KEY, admin_key, tokens.split(token)[1]}
    with gunicorn_relay(settings, workers=1, threads=4, log_path=log_path) as (url, _process):
        http = requests.Session()
        answers = [http.post(url + DEPOSIT, json={"user": "u1", "amount": "1"}, headers=auth(token)),
                   http.get(url + "/v1/relay/me", headers=auth(token)),
                   http.get(url + "/v1/admin/tokens", headers={"Authorization": f"Bearer {admin_key}"}),
                   http.get(url + "/v1/admin/tokens", headers=auth(token)),
                   http.get(url + "/nope"), http.get(url + "/healthz")]
        assert [a.status_code for a in answers] == [200, 200, 200, 401, 404, 200]
        guesses = [http.get(url + "/v1/relay/me", headers=auth(token[:-1] + "x")).status_code for _ in range(6)]
        assert guesses == [401] * 4 + [429] * 2  # the admin guess above was the first of five
        for answer in answers:
            for name, value in SECURITY_HEADERS.items():
                assert answer.headers.get(name) == value, (answer.url, name)
            assert answer.headers.get("X-Request-Id")
            text = "\n".join(f"{k}: {v}" for k, v in answer.headers.items()) + answer.text
            assert not any(secret in text for secret in secrets), answer.url
    log = log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if line.startswith("{")]
    assert len([line for line in lines if '"path": "' in line]) >= len(answers) + len(guesses)
    for secret in secrets:
        assert secret not in log
    assert "Bearer" not in log and "Authorization" not in log
    assert all(json.loads(line)["logger"] for line in lines)


def test_messages_never_interpolate_credentials():
    """The 401 texts are fixed: nothing a caller sends is echoed back."""
    for reason in ("missing", "malformed", "invalid", "revoked", "expired", "disabled"):
        problem = messages.unauthorized(reason)
        assert "{" not in problem.detail and "pwr_" not in problem.detail.replace("pwr_...", "")
