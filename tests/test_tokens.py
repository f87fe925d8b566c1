"""Issue 3: each scope and each refusal, revocation, expiry, rotation, atomic caps, secret handling."""

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import requests
from sqlalchemy import text

from conftest import (auth, base_settings, credits, deposit, gunicorn_relay, migrated_token, needs_postgres,
                      postgres_database, sqlite_url)
from relay import db, tokens


def problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.get_json()


# --- format -------------------------------------------------------------------------------------------------------

def test_token_format_prefix_id_secret_checksum():
    token_id, secret, text_ = tokens.new_token()
    assert text_.startswith("pwr_") and len(text_) == tokens.TOKEN_LENGTH
    assert text_.isascii() and text_.replace("_", "").isalnum()  # a double click selects it whole
    assert len(secret) == 32 and len(set(tokens.new_token()[1] for _ in range(50))) == 50
    assert tokens.split(text_) == (token_id, secret)


def test_a_typo_fails_the_checksum_without_a_lookup():
    _, _, text_ = tokens.new_token()
    typo = text_[:10] + ("a" if text_[10] != "a" else "b") + text_[11:]
    assert tokens.split(typo) is None
    assert tokens.split(text_[:-1]) is None
    assert tokens.split("sk-paywalls-" + text_[4:]) is None


def test_secret_is_stored_only_as_a_hash(app, make_token):
    token_id, text_ = make_token()
    secret = tokens.split(text_)[1]
    with app.app_context(), db.engine().connect() as connection:
        rows = [tuple(str(v) for v in row) for row in connection.execute(text("SELECT * FROM tokens"))]
    dump = repr(rows)
    assert secret not in dump and text_ not in dump
    assert hashlib.sha256(secret.encode()).hexdigest() in dump


# --- authentication -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header,reason", [
    (None, "missing"), ("Basic abc", "missing"), ("Bearer nonsense", "malformed"), ("Bearer ", "missing")])
def test_401_says_why(client, header, reason):
    headers = {"Authorization": header} if header else {}
    body = problem(client.post("/v1/user/balance/deposit", json={"user": "u", "amount": "1"}, headers=headers), 401)
    assert body["reason"] == reason
    assert "reconnect" in body["detail"]


def test_unknown_id_and_wrong_secret_look_the_same(client, make_token):
    token_id, text_ = make_token()
    _, _, unknown = tokens.new_token()
    secret, wrong = tokens.new_secret_for(token_id)
    a = problem(client.get("/v1/relay/me", headers=auth(unknown)), 401)
    b = problem(client.get("/v1/relay/me", headers=auth(wrong)), 401)
    assert a["detail"] == b["detail"] and a["reason"] == b["reason"] == "invalid"


def test_revocation_takes_effect_on_the_next_request(app, client, make_token, sandbox):
    token_id, text_ = make_token()
    assert deposit(client, text_).status_code == 200
    with app.app_context(), db.transaction() as session:
        tokens.revoke(tokens.get(session, token_id))
    body = problem(deposit(client, text_, metadata={"n": 2}), 401)
    assert body["reason"] == "revoked"
    assert len(credits(sandbox)) == 1


def test_expired_token_is_refused(app, client, make_token):
    token_id, text_ = make_token(expires_in="1h")
    assert client.get("/v1/relay/me", headers=auth(text_)).status_code == 200
    with app.app_context(), db.transaction() as session:
        tokens.get(session, token_id).expires_at = datetime.now(timezone.utc) - timedelta(seconds=1)
    assert problem(client.get("/v1/relay/me", headers=auth(text_)), 401)["reason"] == "expired"


def test_disabled_token_is_refused(app, client, make_token):
    token_id, text_ = make_token()
    with app.app_context(), db.transaction() as session:
        tokens.update_token(session, tokens.get(session, token_id), {"disabled": True})
    assert problem(client.get("/v1/relay/me", headers=auth(text_)), 401)["reason"] == "disabled"


def test_rotation_keeps_scopes_and_kills_the_old_secret(app, client, make_token):
    token_id, old = make_token(max_amount="5")
    with app.app_context(), db.transaction() as session:
        new = tokens.rotate(tokens.get(session, token_id))
    assert new != old and tokens.split(new)[0] == token_id
    assert problem(client.get("/v1/relay/me", headers=auth(old)), 401)["reason"] == "invalid"
    assert client.get("/v1/relay/me", headers=auth(new)).get_json()["limits"]["max_amount"] == "5"


# --- scopes --------------------------------------------------------------------------------------------------------

def test_default_token_may_only_deposit(app, client, sandbox):
    with app.app_context(), db.transaction() as session:
        _, text_ = tokens.create(session, {"label": "deposit only"})
    assert deposit(client, text_).status_code == 200
    body = problem(client.post("/v1/user/charge", json={"user": "u", "amount": "1"}, headers=auth(text_)), 403)
    assert body["limit"] == "operation" and "charge" in body["detail"]
    assert problem(client.get("/v1/user/balance?user=u", headers=auth(text_)), 403)["limit"] == "operation"
    assert problem(client.get("/v1/relay/deposits", headers=auth(text_)), 403)["limit"] == "operation"
    assert sandbox.state.snapshot()["calls"] == {"deposit": 1}


def test_max_amount_per_call(client, make_token, sandbox):
    _, text_ = make_token(max_amount="20")
    assert deposit(client, text_, {"user": "u", "amount": "20"}).status_code == 200
    body = problem(deposit(client, text_, {"user": "u", "amount": "20.01"}), 403)
    assert body["limit"] == "max_amount" and "20" in body["detail"]
    assert len(credits(sandbox)) == 1


def test_user_pattern_matches_the_whole_id(client, make_token, sandbox):
    _, text_ = make_token(user_pattern="acme:[a-z0-9_]+")
    assert deposit(client, text_, {"user": "acme:user_1", "amount": "1"}).status_code == 200
    for user in ("globex:user_1", "xacme:user_1", "acme:user_1:extra"):
        assert problem(deposit(client, text_, {"user": user, "amount": "1"}), 403)["limit"] == "user_pattern"
    assert problem(client.get("/v1/user/balance?user=globex:1", headers=auth(text_)), 403)["limit"] == "user_pattern"
    assert len(credits(sandbox)) == 1


def test_required_metadata_names_the_field(client, make_token, sandbox):
    _, text_ = make_token(required_metadata=["invoice_id"])
    body = problem(deposit(client, text_, metadata={"reason": "renewal"}), 422)
    assert body["errors"][0]["field"] == "metadata.invoice_id"
    assert problem(deposit(client, text_, metadata={"invoice_id": ""}), 422)["errors"][0]["pointer"] == "/metadata/invoice_id"
    assert deposit(client, text_, metadata={"invoice_id": "in_1"}).status_code == 200
    assert len(credits(sandbox)) == 1


def test_rate_limit_answers_429_with_retry_after(client, make_token):
    _, text_ = make_token(rate_limit="3/minute")
    statuses = [client.get("/v1/relay/me", headers=auth(text_)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/v1/relay/me", headers=auth(text_))
    assert int(response.headers["Retry-After"]) >= 1
    assert response.get_json()["type"] == "urn:paywalls-relay:problem:rate-limited"


def test_rate_limits_are_shared_through_redis(make_app, sandbox):
    redis = "redis://127.0.0.1:6379/15"  # .ci/run starts Redis when it is not running
    first, second = make_app(REDIS_URL=redis), make_app(REDIS_URL=redis)
    with first.app_context(), db.transaction() as session:
        _, text_ = tokens.create(session, {"label": "shared", "rate_limit": "2/minute"})
    assert first.test_client().get("/v1/relay/me", headers=auth(text_)).status_code == 200
    assert second.test_client().get("/v1/relay/me", headers=auth(text_)).status_code == 200
    assert first.test_client().get("/v1/relay/me", headers=auth(text_)).status_code == 429


def test_failed_authentication_is_throttled_per_client(make_app):
    app = make_app(RELAY_AUTH_FAILURE_LIMIT="5/minute")
    client = app.test_client()
    with app.app_context(), db.transaction() as session:
        _, good = tokens.create(session, {"label": "good"})
    _, _, guess = tokens.new_token()
    statuses = [client.get("/v1/relay/me", headers=auth(guess)).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    # Only failures are refused: a good token from the same address (another Zap behind Zapier's egress) works,
    # and guesses stay refused; another address is not affected.
    assert client.get("/v1/relay/me", headers=auth(good)).status_code == 200
    assert client.get("/v1/relay/me", headers=auth(guess)).status_code == 429
    other = client.get("/v1/relay/me", headers=auth(guess), environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 401


def test_me_shows_scopes_usage_and_no_secret(client, make_token, sandbox):
    token_id, text_ = make_token(label="Zap: renewals", max_amount="20", daily_cap="50", monthly_cap="500",
                                 expires_in="90d")
    deposit(client, text_, {"user": "u", "amount": "12.5"})
    me = client.get("/v1/relay/me", headers=auth(text_))
    body = me.get_json()
    assert body["id"] == token_id and body["label"] == "Zap: renewals"
    assert body["usage"] == {"today": "12.5", "this_month": "12.5"}
    assert body["remaining"] == {"today": "37.5", "this_month": "487.5"}
    assert body["limits"]["max_amount"] == "20" and body["expires_at"].endswith("Z")
    assert tokens.split(text_)[1] not in me.get_data(as_text=True)


# --- caps -----------------------------------------------------------------------------------------------------------

def test_daily_cap_refusal_says_what_remains(client, make_token, sandbox):
    _, text_ = make_token(daily_cap="25")
    assert deposit(client, text_, {"user": "u", "amount": "20"}).status_code == 200
    body = problem(deposit(client, text_, {"user": "u", "amount": "10"}), 403)
    assert body["limit"] == "daily_cap" and body["remaining"] == "5"
    assert deposit(client, text_, {"user": "u", "amount": "5"}).status_code == 200
    assert len(credits(sandbox)) == 2


def test_monthly_cap(client, make_token, sandbox):
    _, text_ = make_token(monthly_cap="15")
    assert deposit(client, text_, {"user": "u", "amount": "10"}).status_code == 200
    refused = problem(deposit(client, text_, {"user": "u", "amount": "10", "metadata": {"n": 2}}), 403)
    assert refused["limit"] == "monthly_cap" and refused["remaining"] == "5"


def test_rejected_upstream_call_releases_its_reservation(client, make_token, sandbox):
    _, text_ = make_token(daily_cap="10")
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json={"kind": "status", "status": 400})
    assert deposit(client, text_, {"user": "u", "amount": "10"}).status_code == 400
    assert deposit(client, text_, {"user": "u", "amount": "10", "metadata": {"n": 2}}).status_code == 200


def test_20_concurrent_deposits_against_a_cap_of_50_credit_exactly_50_in_process(app, make_token, sandbox):
    from werkzeug.serving import make_server
    _, text_ = make_token(daily_cap="50")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        responses = _burst(f"http://127.0.0.1:{server.server_port}", text_)
    finally:
        server.shutdown()
    _assert_capped(responses, sandbox)


def _burst(*urls_and_token):
    *urls, text_ = urls_and_token
    barrier = threading.Barrier(20)

    def one(i):
        barrier.wait()
        return requests.post(urls[i % len(urls)] + "/v1/user/balance/deposit", headers=auth(text_), timeout=30,
                             json={"user": "u", "amount": "10", "metadata": {"n": i}})

    with ThreadPoolExecutor(20) as pool:
        return list(pool.map(one, range(20)))


def _assert_capped(responses, sandbox):
    assert sorted(r.status_code for r in responses) == [200] * 5 + [403] * 15
    assert sum(float(c["amount"]) for c in credits(sandbox)) == 50


def _capped_burst_two_processes(url, sandbox):
    text_ = migrated_token(url, daily_cap="50")
    settings = base_settings(url, sandbox.url)
    with gunicorn_relay(settings) as (a, _), gunicorn_relay(settings) as (b, _):
        responses = _burst(a, b, text_)
    _assert_capped(responses, sandbox)


def test_20_concurrent_deposits_cap_50_two_processes_sqlite(sandbox, tmp_path):
    _capped_burst_two_processes(sqlite_url(tmp_path), sandbox)


@needs_postgres
def test_20_concurrent_deposits_cap_50_two_processes_postgres(sandbox):
    with postgres_database() as url:
        _capped_burst_two_processes(url, sandbox)


# --- token specs ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,field", [
    ({"label": ""}, "label"),
    ({"label": "x", "operations": "deposit,refund"}, "operations"),
    ({"label": "x", "max_amount": "-1"}, "max_amount"),
    ({"label": "x", "daily_cap": "lots"}, "daily_cap"),
    ({"label": "x", "user_pattern": "(a+)+$"}, "user_pattern"),
    ({"label": "x", "user_pattern": "a" * 201}, "user_pattern"),
    ({"label": "x", "user_pattern": "([a-z]"}, "user_pattern"),
    ({"label": "x", "rate_limit": "fast"}, "rate_limit"),
    ({"label": "x", "dedupe_on": "user,email"}, "dedupe_on"),
    ({"label": "x", "expires_in": "3 weeks"}, "expires_in"),
    ({"label": "x", "colour": "red"}, "colour"),
])
def test_bad_token_specs_name_the_field(spec, field):
    with pytest.raises(tokens.SpecError) as refused:
        tokens.parse_spec(spec, datetime.now(timezone.utc), creating=True)
    assert field in [e["field"] for e in refused.value.errors]


@pytest.mark.parametrize("text_,seconds", [("30s", 30), ("15m", 900), ("12h", 43200), ("90d", 7776000)])
def test_durations(text_, seconds):
    assert tokens.parse_duration(text_).total_seconds() == seconds


def test_regex_bomb_pattern_is_refused_at_creation():
    for bomb in ("(a+)+b", "(a|aa)*c", "(.*a){20}", "(\\w+\\s?)*$", "(x+x+)+y"):
        with pytest.raises(ValueError):
            tokens.check_user_pattern(bomb)
    for fine in ("acme:.*", "(acme|globex):[A-Za-z0-9_]+", "^tenant-[0-9]{1,6}:user_[0-9]+$"):
        assert tokens.check_user_pattern(fine) == fine
