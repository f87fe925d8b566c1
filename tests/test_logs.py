"""One JSON line per request, with ids and timings, and never a secret."""

import json
import logging

from conftest import SANDBOX_KEY, auth, deposit
from relay import logs, tokens


def request_lines(caplog):
    return [r.fields for r in caplog.records if r.name == "relay.requests"]


def test_one_structured_line_per_request(client, token, sandbox, caplog):
    with caplog.at_level(logging.INFO, logger="relay.requests"):
        deposit(client, token, headers={"X-Request-Id": "req-abc"})
        client.get("/healthz")
    first, second = request_lines(caplog)
    assert first["request_id"] == "req-abc" and first["method"] == "POST"
    assert first["path"] == "/v1/user/balance/deposit" and first["status"] == 200
    assert first["token_id"] == tokens.split(token)[0] and first["operation"] == "deposit"
    assert first["idempotency_key"].startswith("pwk1_") and first["replayed"] is False
    assert isinstance(first["latency_ms"], float)
    assert second["path"] == "/healthz" and second["token_id"] is None


def test_formatter_writes_json():
    record = logging.LogRecord("relay.requests", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"request_id": "r1", "status": 200}
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["request_id"] == "r1" and line["status"] == 200 and line["level"] == "INFO"


def test_no_secret_reaches_a_log_line_or_a_response(app, client, token, sandbox, caplog, capsys):
    admin_key = app.config["RELAY"]["RELAY_ADMIN_KEY"]
    secret = tokens.split(token)[1]
    _, _, wrong = tokens.new_token()
    bodies = []
    with caplog.at_level(logging.DEBUG):
        bodies.append(deposit(client, token))
        bodies.append(deposit(client, wrong))
        bodies.append(client.get("/v1/relay/me", headers=auth(token)))
        bodies.append(client.post("/v1/admin/tokens", json={"label": "x"}, headers={"Authorization": f"Bearer {admin_key}"}))
        bodies.append(client.get("/v1/admin/tokens", headers=auth(token)))
        bodies.append(client.post("/v1/user/balance/deposit", data="garbage", headers=auth(token)))
    text = "\n".join(caplog.text.splitlines()) + capsys.readouterr().err
    text += "".join(r.get_data(as_text=True) + str(r.headers) for r in bodies)
    created = bodies[3].get_json()["token"]
    text = text.replace(created, "")  # the one place a secret belongs: the creation answer
    for needle in (SANDBOX_KEY, secret, token, wrong, admin_key, tokens.split(created)[1]):
        assert needle not in text
    assert len(request_lines(caplog)) == 6
