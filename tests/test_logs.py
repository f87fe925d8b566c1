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


def test_timestamps_are_iso_8601_utc_with_milliseconds():
    import re
    record = logging.LogRecord("relay", logging.INFO, __file__, 1, "x", None, None)
    record.created = 1764495000.5
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["time"] == "2025-11-30T09:30:00.500Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_every_refusal_line_names_its_problem_and_reason(client, make_token, sandbox, caplog):
    _, capped = make_token(daily_cap="5")
    with caplog.at_level(logging.INFO, logger="relay.requests"):
        deposit(client, "pwr_not-a-token")
        deposit(client, capped, amount="6")
        client.get("/nowhere")
    malformed, over_cap, missing = request_lines(caplog)
    assert (malformed["status"], malformed["problem"], malformed["reason"]) == (401, "unauthorized", "malformed")
    assert (over_cap["status"], over_cap["problem"], over_cap["limit"]) == (403, "forbidden", "daily_cap")
    assert (missing["status"], missing["problem"]) == (404, "not-found")


def test_502_and_504_bodies_carry_the_request_id_also_when_replayed(client, token, sandbox, caplog):
    import requests
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json={"kind": "status", "status": 500, "count": 100},
                  timeout=5)
    with caplog.at_level(logging.INFO, logger="relay.requests"):
        first = deposit(client, token, headers={"X-Request-Id": "req-first"})
    assert first.status_code == 502 and first.get_json()["request_id"] == "req-first"
    assert request_lines(caplog)[-1]["problem"] == "upstream-ambiguous"
    again = deposit(client, token, headers={"X-Request-Id": "req-again"})
    assert again.status_code == 502 and again.get_json()["request_id"] == "req-again"


def test_gunicorn_start_up_line_says_what_serves_what(tmp_path, sandbox):
    from conftest import gunicorn_relay, migrated_token, sqlite_url
    url = sqlite_url(tmp_path)
    migrated_token(url)
    log_path = tmp_path / "relay.log"
    with gunicorn_relay({"DATABASE_URL": url, "PAYWALLS_API_KEY": SANDBOX_KEY, "PAYWALLS_BASE_URL": sandbox.url},
                        workers=2, threads=3, log_path=log_path):
        pass
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    starts = [line for line in lines if line.get("message") == "relay starting"]
    assert len(starts) == 2  # one per worker
    line = starts[0]
    assert line["mode"] == "live" and line["upstream_host"] == sandbox.url.split("/")[2]
    assert line["database"] == "sqlite" and line["database_path"] == str(tmp_path / "relay.db")
    assert (line["workers"], line["threads"], line["version"]) == ("2", "3", "0.1.0")
