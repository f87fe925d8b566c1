"""Paywalls compatibility, the deposits feed, health, OpenAPI and sandbox mode."""

import json
import logging

import pytest

from conftest import auth, deposit
from relay import config, openapi, validation
from relay.app import create_app


def test_deposit_passes_the_upstream_body_through_and_sends_only_the_master_key(client, token, sandbox):
    response = deposit(client, token, {"user": "acme:u1", "amount": "12.50", "metadata": {"invoice_id": "in_7"}})
    assert response.status_code == 200
    assert response.get_json() == {"balanceFormatted": "12.50"}
    snapshot = sandbox.state.snapshot()
    assert snapshot["bad_auth"] == 0  # the sandbox requires SANDBOX_KEY: the relay sent it, not the relay token
    assert snapshot["deposits"][0] == {"user": "acme:u1", "amount": "12.5", "metadata": {"invoice_id": "in_7"},
                                       "idempotency_key": snapshot["deposits"][0]["idempotency_key"]}


def test_balance_and_charge(client, token, sandbox):
    deposit(client, token, {"user": "u1", "amount": "10"})
    balance = client.get("/v1/user/balance?user=u1", headers=auth(token))
    assert balance.get_json() == {"balance": "10000000", "balanceFormatted": "10.00"}
    charged = client.post("/v1/user/charge", json={"user": "u1", "amount": "2.5"}, headers=auth(token))
    assert charged.get_json() == {"success": True, "message": "Charged"}
    assert client.get("/v1/user/balance?user=u1", headers=auth(token)).get_json()["balanceFormatted"] == "7.50"


def test_charge_declined_is_data_not_an_error(client, token):
    response = client.post("/v1/user/charge", json={"user": "broke", "amount": "1"}, headers=auth(token))
    assert response.status_code == 200
    assert response.get_json()["success"] is False and "top up" in response.get_json()["message"]


def test_upstream_refusing_the_master_key_is_an_operator_problem(make_app, sandbox):
    app = make_app(PAYWALLS_API_KEY="sk-wrong")
    from relay import db, tokens
    with app.app_context(), db.transaction() as session:
        _, text = tokens.create(session, {"label": "t"})
    response = deposit(app.test_client(), text)
    assert response.status_code == 502
    assert "PAYWALLS_API_KEY" in response.get_json()["detail"]
    assert "sk-wrong" not in response.get_data(as_text=True)


def test_deposits_feed_newest_first_with_cursor_and_filters(client, token, sandbox):
    for i in range(5):
        deposit(client, token, {"user": f"u{i % 2}", "amount": str(i + 1), "metadata": {"n": i}})
    deposit(client, token, {"user": "u0", "amount": "1", "metadata": {"n": 0}})  # a replay is not a new credit
    page = client.get("/v1/relay/deposits?limit=2", headers=auth(token)).get_json()
    assert [d["amount"] for d in page["data"]] == ["5", "4"]
    rest = client.get(f"/v1/relay/deposits?limit=10&cursor={page['next_cursor']}", headers=auth(token)).get_json()
    assert [d["amount"] for d in rest["data"]] == ["3", "2", "1"] and rest["next_cursor"] is None
    ids = [d["id"] for d in page["data"] + rest["data"]]
    assert len(set(ids)) == 5 and all(i.startswith("led_") for i in ids)
    only = client.get("/v1/relay/deposits?user=u1", headers=auth(token)).get_json()
    assert [d["amount"] for d in only["data"]] == ["4", "2"]
    later = client.get("/v1/relay/deposits?since=2999-01-01T00:00:00Z", headers=auth(token)).get_json()
    assert later["data"] == []


def test_deposits_feed_shows_only_users_the_pattern_allows(client, make_token, token, sandbox):
    deposit(client, token, {"user": "acme:1", "amount": "1"})
    deposit(client, token, {"user": "globex:1", "amount": "2"})
    _, acme = make_token(operations=["ledger"], user_pattern="acme:.*", feed="all")
    data = client.get("/v1/relay/deposits", headers=auth(acme)).get_json()["data"]
    assert [d["user"] for d in data] == ["acme:1"]
    assert client.get("/v1/relay/deposits?user=globex:1", headers=auth(acme)).status_code == 403


@pytest.mark.parametrize("query,field", [("limit=0", "limit"), ("limit=101", "limit"), ("since=yesterday", "since"),
                                         ("cursor=abc", "cursor"), ("page=2", "page")])
def test_deposits_feed_bad_query(client, token, query, field):
    response = client.get(f"/v1/relay/deposits?{query}", headers=auth(token))
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == field


def test_health_readiness_and_headers(client):
    health = client.get("/healthz")
    assert health.get_json() == {"status": "ok", "sandbox": False, "mode": "live"}
    assert "X-Relay-Sandbox" not in health.headers
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["checks"] == {"database": "ok", "migrations": "ok", "paywalls_key": "accepted"}
    for name in ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Cache-Control"):
        assert name in health.headers
    assert health.headers["X-Request-Id"]


def test_readyz_fails_without_a_database(make_app, tmp_path):
    app = make_app(database_url=f"sqlite:///{tmp_path}/x.db")
    app.extensions["relay.engine"].dispose()
    (tmp_path / "x.db").unlink()
    (tmp_path / "x.db").mkdir()  # a directory where the database file should be: unreachable
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and response.get_json()["checks"]["database"] == "unreachable"
    assert response.get_json()["failed"] == ["database"]


def test_sandbox_mode_is_loud(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RELAY_SANDBOX_URL", "")
    with caplog.at_level(logging.WARNING, logger="relay"):
        app = create_app({"PAYWALLS_API_KEY": None, "DATABASE_URL": f"sqlite:///{tmp_path}/s.db", "REDIS_URL": None},
                         check_schema=False)
    assert app.config["RELAY"]["SANDBOX"] is True
    assert app.config["RELAY"]["PAYWALLS_BASE_URL"].startswith("http://127.0.0.1:")
    client = app.test_client()
    response = client.get("/healthz")
    assert response.get_json()["sandbox"] is True and response.get_json()["mode"] == "sandbox"
    assert response.headers["X-Relay-Sandbox"] == "true"
    assert client.get("/nope").headers["X-Relay-Sandbox"] == "true"


def test_production_without_key_refuses():
    with pytest.raises(config.ConfigError, match="PAYWALLS_API_KEY"):
        config.from_env({"RELAY_ENV": "production"})


def test_settings_come_from_the_environment_and_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("RELAY_AMOUNT_DECIMALS=4\nPAYWALLS_API_KEY=sk-from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    for name in ("RELAY_AMOUNT_DECIMALS", "PAYWALLS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RELAY_UPSTREAM_BUDGET", "12.5")
    settings = config.from_env()
    assert settings["RELAY_AMOUNT_DECIMALS"] == 4 and settings["PAYWALLS_API_KEY"] == "sk-from-dotenv"
    assert settings["RELAY_UPSTREAM_BUDGET"] == 12.5 and settings["SANDBOX"] is False
    assert settings["PAYWALLS_BASE_URL"] == "https://api.paywalls.ai/v1"
    with pytest.raises(config.ConfigError):
        config.from_env({"RELAY_AMOUNT_DECIMALS": "many"})


def test_openapi_is_built_from_schemas(client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    for path in ("/v1/user/balance/deposit", "/v1/user/charge", "/v1/user/balance", "/v1/relay/me", "/v1/relay/deposits"):
        assert path in document["paths"]
    deposit_schema = document["components"]["schemas"]["deposit_request"]
    assert deposit_schema["required"] == validation.load_schema("deposit-request.json")["required"]
    assert set(deposit_schema["properties"]) == set(validation.load_schema("deposit-request.json")["properties"])
    # common.json's amount, with this relay's RELAY_AMOUNT_DECIMALS (tests/test_amount_contract.py holds it to the relay)
    published, common = document["components"]["schemas"]["amount"]["anyOf"], \
        validation.load_schema("common.json")["$defs"]["amount"]["anyOf"]
    assert [item["type"] for item in published] == [item["type"] for item in common] == ["string", "number"]
    assert published == openapi.amount_schema(client.application.config["RELAY"]["RELAY_AMOUNT_DECIMALS"])["anyOf"]
    assert "$ref" not in json.dumps(document).replace('"$ref": "#/components/', "")


def test_unknown_path_and_method_are_problems(client):
    assert client.get("/v1/nope").get_json()["status"] == 404
    response = client.get("/v1/user/balance/deposit")
    assert response.status_code == 405 and response.mimetype == "application/problem+json"


def test_balance_reads_are_in_the_ledger_and_metrics_count_requests(app, client, token, sandbox):
    from relay import db, ledger
    client.get("/v1/user/balance?user=u1", headers=auth(token))
    with app.app_context(), db.read() as session:
        rows = list(ledger.export_rows(session, since=__import__("datetime").datetime(2000, 1, 1)))
    assert [(r["operation"], r["outcome"], r["user"], r["balance_formatted"]) for r in rows] == [
        ("balance", "read", "u1", "0.00")]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'relay_requests_total{endpoint="/v1/user/balance",status="200"}' in metrics
    assert 'relay_upstream_calls_total{outcome="ok",path="/user/balance"}' in metrics


def test_deposits_feed_pages_past_long_runs_of_hidden_users(app, client, token, make_token, sandbox):
    from relay import db, ledger
    for i in range(3):
        deposit(client, token, {"user": "acme:1", "amount": "1", "metadata": {"i": i}})
    for i in range(45):
        deposit(client, token, {"user": "globex:1", "amount": "1", "metadata": {"i": i}})
    with app.app_context(), db.read() as session:
        allowed = lambda user: user.startswith("acme:")  # noqa: E731
        first, cursor = ledger.deposits(session, limit=2, allowed=allowed)
        assert first == [] and cursor is not None  # 40 rows scanned, all hidden: resume later
        seen = []
        while cursor:
            page, cursor = ledger.deposits(session, limit=2, allowed=allowed, before_id=ledger.parse_cursor(cursor))
            seen += page
    assert [d["metadata"]["i"] for d in seen] == [2, 1, 0]


def test_a_ledger_token_sees_its_own_deposits_or_its_namespaces_unless_its_feed_is_all(client, make_token, sandbox):
    _, crm = make_token(label="crm")
    _, stripe = make_token(label="stripe", namespace="renewals")
    _, n8n = make_token(label="n8n", namespace="renewals")
    _, auditor = make_token(label="auditor", operations=["ledger"], feed="all")
    _, watcher = make_token(label="watcher", operations=["ledger"])
    for text, user in ((crm, "acme:crm"), (stripe, "acme:stripe"), (n8n, "acme:n8n")):
        assert deposit(client, text, {"user": user, "amount": "1"}).status_code == 200

    def feed(text):
        return sorted(d["user"] for d in client.get("/v1/relay/deposits", headers=auth(text)).get_json()["data"])
    assert feed(crm) == ["acme:crm"]
    assert feed(stripe) == feed(n8n) == ["acme:n8n", "acme:stripe"]
    assert feed(watcher) == []
    assert feed(auditor) == ["acme:crm", "acme:n8n", "acme:stripe"]


def test_ledger_tokens_from_before_the_feed_setting_keep_seeing_everything(tmp_path):
    """Upgrading must not silently empty a Zapier 'New Deposit' trigger: migration 0003 spells out feed=all."""
    from sqlalchemy import create_engine, text as sql
    from relay import migrate
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0002")
    engine = create_engine(url)
    with engine.begin() as connection:
        for token_id, operations in (("tokledger0001", '["deposit", "ledger"]'), ("tokdeposit001", '["deposit"]')):
            connection.execute(sql("INSERT INTO tokens (id, secret_hash, label, operations, required_metadata, dedupe_on,"
                                   " created_at, disabled) VALUES (:id, 'x', 'old', :ops, '[]', '[\"user\"]',"
                                   " '2026-01-01 00:00:00', 0)"), {"id": token_id, "ops": operations})
    migrate.upgrade(url)
    with engine.connect() as connection:
        feeds = dict(connection.execute(sql("SELECT id, feed FROM tokens")).all())
    engine.dispose()
    assert feeds == {"tokledger0001": "all", "tokdeposit001": None}
