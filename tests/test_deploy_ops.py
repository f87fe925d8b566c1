"""Dependencies that fail soft and migrations that serialise (issue 13, item 9)."""

import logging
import os
import subprocess
import sys

import pytest
import requests
from sqlalchemy import create_engine, text

from conftest import PG_URL, auth, deposit, needs_postgres, postgres_database, relay_env
from relay import db, migrate, sandbox as sandbox_module

BIN = os.path.join(os.path.dirname(sys.executable), "paywalls-relay")
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.mark.parametrize("given", ["postgres://u:p@db.example:6543/relay", "postgresql://u:p@db.example:6543/relay",
                                   "postgresql+psycopg://u:p@db.example:6543/relay"])
def test_every_postgres_url_form_means_psycopg(given):
    engine = db.make_engine(given)
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    assert migrate.alembic_config(given).get_main_option("sqlalchemy.url").startswith("postgresql+psycopg://")
    described = db.describe_url(given)
    assert described == {"database": "postgresql", "database_host": "db.example:6543", "database_name": "relay"}


def test_unreachable_redis_fails_soft(make_app, make_token_on, relay_log):
    app = make_app(REDIS_URL=UNREACHABLE_REDIS)
    client = app.test_client()
    _, limited = make_token_on(app, rate_limit="2/minute")
    _, unlimited = make_token_on(app)
    with relay_log.at_level(logging.ERROR, logger="relay"):
        assert deposit(client, unlimited).status_code == 200
        answers = [deposit(client, limited, {"user": "acme:u", "amount": "1", "metadata": {"n": n}}).status_code
                   for n in range(3)]
        admin = client.get("/v1/admin/tokens", headers=auth(app.config["RELAY"]["RELAY_ADMIN_KEY"]))
    assert answers == [200, 200, 429]  # the limit still holds, per process
    assert admin.status_code == 200
    errors = [r for r in relay_log.records if "Redis (REDIS_URL) is unreachable" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR  # once a minute, not once a request
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["rate_limits"] == "memory (Redis unreachable)"


def test_readyz_says_redis_when_it_answers(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:6379/15")
    client = app.test_client()
    client.get("/v1/relay/me")  # one limiter call (the failed-auth guard)
    assert client.get("/readyz").get_json()["rate_limits"] == "redis"


@needs_postgres
@pytest.mark.postgres
def test_concurrent_db_upgrades_wait_for_each_other(tmp_path):
    with postgres_database() as url:
        env = relay_env({"DATABASE_URL": "postgres://" + url.split("://", 1)[1]})
        runs = [subprocess.Popen([BIN, "db", "upgrade"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(3)]
        results = [(run.wait(120), run.stdout.read(), run.stderr.read()) for run in runs]
        for code, out, err in results:
            assert code == 0, err
            assert "up to date" in out
        engine = create_engine(db.normalize_url(url))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [migrate.head()]
        engine.dispose()


def test_embedded_sandbox_controls_need_the_per_start_secret(monkeypatch):
    monkeypatch.delenv("RELAY_SANDBOX_URL", raising=False)
    url = sandbox_module.ensure_embedded(None).replace("/v1", "")
    secret = sandbox_module._embedded.control_secret
    assert secret and len(secret) >= 24
    for method, path in (("post", "/_sandbox/reset"), ("get", "/_sandbox/state"), ("post", "/_sandbox/faults"),
                         ("put", "/_sandbox/balances/u")):
        refused = requests.request(method, url + path, json={"kind": "status", "status": 500}, timeout=5)
        wrong = requests.request(method, url + path, json={"kind": "status", "status": 500}, timeout=5,
                                 headers={"X-Sandbox-Control": "guess"})
        assert refused.status_code == 403 and wrong.status_code == 403, path
    assert requests.get(url + "/_sandbox/state", headers={"X-Sandbox-Control": secret}, timeout=5).status_code == 200


def test_sqlite_syncs_every_commit(make_app):
    """synchronous=FULL (2): a ledger row the client was told about survives a power loss."""
    app = make_app()
    for engine in (app.extensions["relay.engine"], app.extensions["relay.reader"]):
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_the_money_path_syncs_each_commit_before_acting_on_it(make_app, monkeypatch):
    """Group commit (db.write): the claim and the record commit without syncing, then sync the WAL, before
    Paywalls is called and before the client is answered. Other transactions keep synchronous=FULL."""
    from conftest import create_token, deposit

    app = make_app()
    _, text = create_token(app)
    events = []
    upstream = app.extensions["relay.upstream"]
    real_call, real_sync = upstream.call, db._sync_file
    monkeypatch.setattr(upstream, "call", lambda *a, **k: events.append("upstream") or real_call(*a, **k))
    monkeypatch.setattr(db, "_sync_file", lambda path: events.append(os.path.basename(path)) or real_sync(path))
    client = app.test_client()
    assert deposit(client, text).status_code == 200
    assert events == ["relay.db-wal", "upstream", "relay.db-wal"]
    # A replay stores only a note in the ledger, which nobody acts on: no flush. One that binds a new client key
    # to the event does flush: that binding decides what the key means from now on.
    events.clear()
    assert deposit(client, text).headers["Idempotent-Replayed"] == "true"
    assert events == []
    assert deposit(client, text, headers={"Idempotency-Key": "k-new"}).headers["Idempotent-Replayed"] == "true"
    assert events == ["relay.db-wal"]
    with app.extensions["relay.engine"].connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_a_malformed_redis_url_is_refused_at_start_without_echoing_it(make_app):
    from relay.config import ConfigError
    with pytest.raises(ConfigError, match="REDIS_URL must be a redis://") as refused:
        make_app(REDIS_URL="htp://user:hunter2@cache:6379")
    assert "hunter2" not in str(refused.value)


def test_a_database_down_while_a_worker_boots_does_not_stop_gunicorn(tmp_path, sandbox):
    """A worker whose create_app raised would make gunicorn halt every worker; an unreachable database is not a
    wrong schema: the relay serves, /readyz says what is wrong, and deposits get 503 until the database answers."""
    from conftest import base_settings, gunicorn_relay
    missing = f"sqlite:///{tmp_path / 'no-such-dir' / 'relay.db'}"  # cannot be opened
    with gunicorn_relay(base_settings(missing, sandbox.url), workers=2, threads=2) as (relay, process):
        ready = requests.get(relay + "/readyz", timeout=10)
        refused = requests.post(relay + "/v1/user/balance/deposit", json={"user": "u", "amount": "1"},
                                headers=auth("pwr_" + "0" * 50), timeout=10)
        assert process.poll() is None
    assert ready.status_code == 503 and ready.json()["failed"] == ["database"]
    assert refused.status_code in (401, 503)
