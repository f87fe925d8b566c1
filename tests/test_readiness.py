"""/readyz means ready: the database answers and is migrated to head, and Paywalls accepts the key (issue 13, item 3)."""

import logging
import uuid

from sqlalchemy import text

from conftest import deposit
from relay import db


def test_ready_checks_database_migrations_and_key_and_probes_paywalls_once_per_30_s(make_app, sandbox):
    app = make_app()
    client = app.test_client()
    first, second = client.get("/readyz"), client.get("/readyz")
    assert first.status_code == 200 and first.get_json()["failed"] == []
    assert first.get_json()["checks"] == {"database": "ok", "migrations": "ok", "paywalls_key": "accepted"}
    assert second.get_json() == first.get_json()
    assert sandbox.state.snapshot()["calls"]["balance"] == 1  # cached: probes cost Paywalls nothing
    upstream = app.extensions["relay.upstream"]
    upstream._probe = (upstream._probe[0] - 31, upstream._probe[1])  # 31 s later
    client.get("/readyz")
    assert sandbox.state.snapshot()["calls"]["balance"] == 2


def test_a_wrong_paywalls_key_is_not_ready_and_logged_at_error_once(make_app, make_token_on, sandbox, relay_log):
    app = make_app(PAYWALLS_API_KEY="sk-paywalls-wrong-" + uuid.uuid4().hex)
    client = app.test_client()
    _, token = make_token_on(app)
    with relay_log.at_level(logging.INFO, logger="relay"):
        ready = client.get("/readyz")
        refused = deposit(client, token)
        deposit(client, token, {"user": "acme:other", "amount": "1"})
    assert ready.status_code == 503
    assert ready.get_json()["failed"] == ["paywalls_key"] and ready.get_json()["checks"]["paywalls_key"] == "refused"
    assert refused.status_code >= 500 and not sandbox.state.snapshot()["deposits"]
    errors = [r for r in relay_log.records if "refused the relay's API key" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR
    assert "set PAYWALLS_API_KEY" in errors[0].getMessage()


def test_an_unmigrated_database_is_not_ready(make_app):
    app = make_app()
    with app.app_context(), db.engine().begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and response.get_json()["failed"] == ["migrations"]
    assert "run `paywalls-relay db upgrade`" in response.get_json()["checks"]["migrations"]


def test_paywalls_unreachable_is_reported_but_the_relay_stays_in_rotation(make_app):
    app = make_app(PAYWALLS_BASE_URL="http://127.0.0.1:9/v1")  # nothing listens on port 9
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"]["paywalls_key"].startswith("unknown (Paywalls unreachable")
