"""Webhooks in: the one signature rule (verify), the timestamp window, and POST /v1/webhooks/paywalls."""

import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from conftest import manual_clock
from relay import db, events, webhooks
from relay.models import Event

# RFC 4231, test case 2: an HMAC-SHA256 vector computed by someone else.
RFC_KEY, RFC_DATA = "Jefe", b"what do ya want for nothing?"
RFC_MAC = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_verify_matches_the_rfc_4231_vector():
    assert webhooks.sign(RFC_KEY, RFC_DATA) == RFC_MAC
    assert webhooks.verify(RFC_KEY, RFC_DATA, RFC_MAC)


def test_the_whsec_prefix_is_part_of_the_key():
    secret, body = "whsec_Zm9vYmFy", b'{"id":"evt_1"}'
    with_prefix = hmac.new(b"whsec_Zm9vYmFy", body, hashlib.sha256).hexdigest()
    without_prefix = hmac.new(b"Zm9vYmFy", body, hashlib.sha256).hexdigest()
    assert webhooks.verify(secret, body, with_prefix)
    assert not webhooks.verify(secret, body, without_prefix)


def test_a_unicode_secret_is_keyed_by_its_utf8_bytes():
    secret, body = "clé-✓-秘密", b"{}"
    utf8 = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    utf16 = hmac.new(secret.encode("utf-16-le"), body, hashlib.sha256).hexdigest()
    assert webhooks.verify(secret, body, utf8)
    assert not webhooks.verify(secret, body, utf16)


def test_an_empty_body_has_a_signature_too():
    assert webhooks.verify("whsec_x", b"", hmac.new(b"whsec_x", b"", hashlib.sha256).hexdigest())
    assert not webhooks.verify("whsec_x", b" ", hmac.new(b"whsec_x", b"", hashlib.sha256).hexdigest())


def test_hex_case_and_a_sha256_prefix_do_not_matter():
    assert webhooks.verify(RFC_KEY, RFC_DATA, RFC_MAC.upper())
    assert webhooks.verify(RFC_KEY, RFC_DATA, "sha256=" + RFC_MAC)
    assert webhooks.verify(RFC_KEY, RFC_DATA, f" {RFC_MAC} ")


@pytest.mark.parametrize("signature", [
    None, "", RFC_MAC[:-1], RFC_MAC[:32], RFC_MAC + "0", RFC_MAC[:-1] + "g", "sha1=" + RFC_MAC,
    RFC_MAC[:-1] + ("4" if RFC_MAC[-1] != "4" else "5"), "é" * 64, "\x00" * 64, "0" * 64,
])
def test_a_wrong_truncated_or_odd_signature_fails(signature):
    assert not webhooks.verify(RFC_KEY, RFC_DATA, signature)


def test_a_body_changed_by_one_byte_fails():
    assert not webhooks.verify(RFC_KEY, RFC_DATA + b" ", RFC_MAC)


def test_no_secret_verifies_nothing():
    assert not webhooks.verify("", b"", hmac.new(b"", b"", hashlib.sha256).hexdigest())
    assert not webhooks.verify(None, b"", hmac.new(b"", b"", hashlib.sha256).hexdigest())


NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, fresh", [
    ("2026-11-30T12:00:00Z", True), ("2026-11-30T11:55:01Z", True), ("2026-11-30T11:54:59Z", False),
    ("2026-11-30T12:04:59.5+00:00", True), ("2026-11-30T12:05:01Z", False), ("2026-11-30T13:00:00+01:00", True),
    (str(int(NOW.timestamp())), True), (str(int(NOW.timestamp()) - 301), False), (str(int(NOW.timestamp()) + 299), True),
    (str(int(NOW.timestamp() * 1000)), True), (f"{NOW.timestamp():.3f}", True),
    (None, False), ("", False), ("yesterday", False), ("99999999999999999999", False), ("-5", False),
    ("2026-13-45T00:00:00Z", False),
])
def test_the_timestamp_window_is_five_minutes_each_way(text, fresh):
    assert webhooks.fresh(webhooks.parse_timestamp(text), NOW) is fresh


# --- stored secrets -------------------------------------------------------------------------------------------

def test_a_sealed_secret_is_not_the_secret_and_opens_only_with_the_key():
    settings = {"PAYWALLS_API_KEY": "sk-paywalls-1", "RELAY_SECRET_KEY": None}
    sealed = webhooks.seal(settings, "whsec_topsecretvalue")
    assert "topsecret" not in sealed and "whsec_" not in sealed
    assert webhooks.unseal(settings, sealed) == "whsec_topsecretvalue"
    assert webhooks.unseal({"PAYWALLS_API_KEY": "sk-paywalls-2"}, sealed) is None
    # Setting RELAY_SECRET_KEY later: what was sealed before still opens; new seals use the new key.
    moved = {"PAYWALLS_API_KEY": "sk-paywalls-1", "RELAY_SECRET_KEY": "relay-key"}
    assert webhooks.unseal(moved, sealed) == "whsec_topsecretvalue"
    assert webhooks.unseal({"RELAY_SECRET_KEY": "relay-key"}, webhooks.seal(moved, "whsec_b")) == "whsec_b"
    assert webhooks.unseal(settings, "not a fernet token") is None


# --- the intake -------------------------------------------------------------------------------------------------

SECRET = "whsec_intake_" + "k" * 24
EVENT = {"id": "evt_in_1", "type": "paywall.balance.deposit.created", "version": "1",
         "createdAt": "2026-11-30T12:00:00Z",
         "data": {"walletUserId": "w_1", "externalUserId": "acme:u1", "amount": "5", "currency": "USD"}}


@pytest.fixture
def intake_app(make_app, database_url):
    events.webhooks_configured.forget()
    return make_app(database_url, PAYWALLS_WEBHOOK_SECRET=SECRET)


def post(client, body, secret=SECRET, timestamp=None, signature=None, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json",
               "X-Paywalls-Event": "paywall.balance.deposit.created@1",
               "X-Paywalls-Timestamp": timestamp if timestamp is not None else
               datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
    sig = signature if signature is not None else webhooks.sign(secret, data)
    if sig != "":
        headers["X-Paywalls-Signature"] = sig
    if headers["X-Paywalls-Timestamp"] == "":
        del headers["X-Paywalls-Timestamp"]
    return client.post("/v1/webhooks/paywalls", data=data, headers=headers)


def stored(app):
    with app.app_context(), db.read() as session:
        return list(session.scalars(select(Event).order_by(Event.received_at)))


def test_a_signed_wrapped_delivery_is_stored_once_and_a_duplicate_acknowledged(intake_app):
    client = intake_app.test_client()
    events.wake.clear()
    first = post(client, {"delivery": {"id": "dlv_1", "attempt": 1}, "event": EVENT})
    assert first.status_code == 202
    assert first.get_json() == {"received": True, "id": "evt_in_1", "type": EVENT["type"], "duplicate": False}
    assert events.wake.is_set()
    again = post(client, {"delivery": {"id": "dlv_2", "attempt": 2}, "event": EVENT})
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    [row] = stored(intake_app)
    assert (row.source, row.user, row.fanned_out) == ("paywalls", "acme:u1", False)
    assert json.loads(row.payload) == EVENT


def test_a_bare_event_is_taken_too(intake_app):
    answer = post(intake_app.test_client(), {**EVENT, "id": "evt_bare"})
    assert answer.status_code == 202
    assert [row.id for row in stored(intake_app)] == ["evt_bare"]


@pytest.mark.parametrize("kwargs, reason", [
    ({"signature": ""}, "signature_missing"),
    ({"secret": "whsec_other"}, "signature"),
    ({"secret": SECRET.removeprefix("whsec_")}, "signature"),
    ({"signature": "0" * 64}, "signature"),
    ({"timestamp": ""}, "timestamp_missing"),
    ({"timestamp": "2020-01-01T00:00:00Z"}, "timestamp"),
    ({"timestamp": "not a time"}, "timestamp"),
])
def test_a_bad_signature_or_timestamp_gets_401_and_stores_nothing(intake_app, kwargs, reason):
    answer = post(intake_app.test_client(), EVENT, **kwargs)
    assert answer.status_code == 401
    body = answer.get_json()
    assert body["type"] == "urn:paywalls-relay:problem:webhook-refused" and body["reason"] == reason
    assert SECRET not in answer.get_data(as_text=True)
    assert stored(intake_app) == []


def test_a_stale_timestamp_by_the_relays_clock(intake_app):
    clock = manual_clock(intake_app, NOW)
    client = intake_app.test_client()
    assert post(client, EVENT, timestamp=(NOW - timedelta(minutes=5, seconds=1)).isoformat()).status_code == 401
    assert post(client, EVENT, timestamp=(NOW + timedelta(minutes=6)).isoformat()).status_code == 401
    assert post(client, EVENT, timestamp=str(int(NOW.timestamp()) - 10)).status_code == 202
    clock.advance(600)
    assert stored(intake_app)[0].received_at.replace(tzinfo=timezone.utc) == NOW


def test_a_body_changed_after_signing_is_refused(intake_app):
    data = json.dumps(EVENT).encode()
    answer = post(intake_app.test_client(), None, raw=data.replace(b"5", b"500"), signature=webhooks.sign(SECRET, data))
    assert answer.status_code == 401 and stored(intake_app) == []


@pytest.mark.parametrize("raw, status", [(b"{not json", 400), (b"[]", 422), (b'{"type": "x"}', 422),
                                         (b'{"delivery": {}, "event": {"id": "e"}}', 422), (b"\xff\xfe", 400),
                                         (b'{"id": "e", "type": "t", "data": {"amount": NaN}}', 400),
                                         (b"[" * 5000 + b"]" * 5000, 400), (b"", 400),
                                         (b'{"id": "e2", "type": "t", "id": "e3"}', 400),
                                         (b'\xef\xbb\xbf{"id": "e4", "type": "t"}', 400)])
def test_a_signed_body_that_is_no_event_is_refused_naming_the_field(intake_app, raw, status):
    answer = post(intake_app.test_client(), None, raw=raw)
    assert answer.status_code == status
    assert stored(intake_app) == []


def test_intake_is_off_without_any_secret(make_app, database_url):
    app = make_app(database_url)
    answer = post(app.test_client(), EVENT)
    assert answer.status_code == 404
    assert "PAYWALLS_WEBHOOK_SECRET" in answer.get_json()["detail"]
    assert stored(app) == []


def test_a_stored_subscription_secret_verifies_and_is_never_stored_plain(make_app, database_url):
    from relay.models import WebhookSubscription
    app = make_app(database_url)
    settings = app.config["RELAY"]
    with app.app_context(), db.transaction() as session:
        session.add(WebhookSubscription(id="sub_a", url="https://r.example/v1/webhooks/paywalls", events=["*"],
                                        secret_encrypted=webhooks.seal(settings, "whsec_stored_one"),
                                        secret_suffix="_one"))
        session.add(WebhookSubscription(id="sub_old", url="https://r.example/v1/webhooks/paywalls", events=["*"],
                                        secret_encrypted=webhooks.seal(settings, "whsec_deactivated"),
                                        secret_suffix="ated", deactivated_at=NOW))
    client = app.test_client()
    assert post(client, EVENT, secret="whsec_stored_one").status_code == 202
    assert post(client, {**EVENT, "id": "evt_2"}, secret="whsec_deactivated").status_code == 401
    with app.app_context(), db.read() as session:
        columns = session.execute(select(WebhookSubscription.__table__)).all()
    assert "whsec_stored_one" not in repr(columns) and "stored_one" not in repr(columns)


def test_a_secret_that_no_longer_opens_is_skipped_and_logged_without_it(make_app, database_url, relay_log):
    from relay.models import WebhookSubscription
    app = make_app(database_url, PAYWALLS_WEBHOOK_SECRET=SECRET)
    sealed = webhooks.seal({"PAYWALLS_API_KEY": "sk-an-old-key"}, "whsec_lost_secret")
    with app.app_context(), db.transaction() as session:
        session.add(WebhookSubscription(id="sub_lost", url="https://r.example/x", events=["*"],
                                        secret_encrypted=sealed, secret_suffix="cret"))
    client = app.test_client()
    assert post(client, EVENT).status_code == 202  # the env secret still works
    assert post(client, {**EVENT, "id": "evt_x"}, secret="whsec_lost_secret").status_code == 401
    logged = [json.dumps(record.fields) for record in relay_log.records if hasattr(record, "fields")]
    assert any("sub_lost" in line for line in logged)
    assert not any("lost_secret" in line for line in logged) and "lost_secret" not in relay_log.text


# --- `paywalls-relay webhooks subscribe|list|unsubscribe` against the sandbox -----------------------------------------

def cli_run(*args, ok=True):
    from click.testing import CliRunner

    from relay import cli
    result = CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def operator_app(url):
    from relay.app import create_app
    app = create_app()
    app.testing = True
    return app


def test_subscribe_list_and_unsubscribe_against_the_sandbox(operator_env, sandbox):
    from relay.models import WebhookSubscription
    intake = "https://127.0.0.1:9/v1/webhooks/paywalls"
    made = json.loads(cli_run("webhooks", "subscribe", "--url", intake, "--events",
                              "paywall.balance.deposit.created, paywall.balance.depleted", "--json").output)
    [remote] = sandbox.state.subscriptions.values()
    secret = remote["secret"]
    assert remote["url"] == intake and remote["events"] == ["paywall.balance.deposit.created", "paywall.balance.depleted"]
    assert made["id"] == remote["id"] and made["secret"] == "…" + secret[-4:] and made["active"] is True
    # The secret is stored, encrypted: never in the command's output, nor plain in the database.
    human = cli_run("webhooks", "list").output
    assert remote["id"] in human and secret[-4:] in human and "active" in human
    for output in (json.dumps(made), human, cli_run("webhooks", "list", "--json").output):
        assert secret not in output and secret[6:] not in output
    app = operator_app(operator_env)
    with app.app_context(), db.read() as session:
        [row] = session.scalars(select(WebhookSubscription)).all()
        assert secret not in row.secret_encrypted and secret[6:] not in row.secret_encrypted
        assert webhooks.unseal(app.config["RELAY"], row.secret_encrypted) == secret
    # Paywalls' deliveries signed with it are taken.
    client = app.test_client()
    assert post(client, EVENT, secret=secret).status_code == 202
    listed = json.loads(cli_run("webhooks", "list", "--json").output)
    assert [s["paywalls_active"] for s in listed["subscriptions"]] == [True] and listed["paywalls_error"] is None

    gone = cli_run("webhooks", "unsubscribe", remote["id"])
    assert "Unsubscribed" in gone.output
    assert sandbox.state.subscriptions[remote["id"]]["active"] is False
    assert post(client, {**EVENT, "id": "evt_after"}, secret=secret).status_code == 404  # no secret left at all
    listed = json.loads(cli_run("webhooks", "list", "--json").output)
    assert [(s["active"], s["paywalls_active"]) for s in listed["subscriptions"]] == [(False, False)]
    # Subscribing again makes a new subscription (not a replay of the deactivated one), with a new secret.
    again = json.loads(cli_run("webhooks", "subscribe", "--url", intake, "--json").output)
    assert again["id"] != remote["id"] and sandbox.state.subscriptions[again["id"]]["secret"] != secret
    assert again["events"] == ["paywall.balance.*"]
    assert post(client, {**EVENT, "id": "evt_again"}, secret=sandbox.state.subscriptions[again["id"]]["secret"]
                ).status_code == 202


def test_subscribe_refuses_plain_http_for_a_live_relay_and_odd_events(operator_env, sandbox):
    refused = cli_run("webhooks", "subscribe", "--url", "http://relay.example.com/v1/webhooks/paywalls", ok=False)
    assert refused.exit_code == 2 and "https" in refused.output
    refused = cli_run("webhooks", "subscribe", "--url", "https://r.example/v1/webhooks/paywalls", "--events", "*,x",
                      ok=False)
    assert refused.exit_code == 2 and "* alone" in refused.output
    assert sandbox.state.subscriptions == {}


def test_subscribe_says_what_paywalls_answered_when_it_refuses(operator_env, sandbox):
    with sandbox.state.lock:
        sandbox.state.faults.append({"kind": "status", "status": 403, "count": 1})
    refused = cli_run("webhooks", "subscribe", "--url", "https://r.example/v1/webhooks/paywalls", ok=False)
    assert refused.exit_code == 1 and "HTTP 403" in refused.output and "Nothing was changed" in refused.output
    assert json.loads(cli_run("webhooks", "list", "--json").output)["subscriptions"] == []


def test_unsubscribe_of_an_unknown_id(operator_env, sandbox):
    refused = cli_run("webhooks", "unsubscribe", "wh_nope", ok=False)
    assert refused.exit_code == 1 and "webhooks list" in refused.output


def test_refused_signatures_are_throttled_per_address_and_a_valid_one_still_passes(make_app, database_url):
    app = make_app(database_url, PAYWALLS_WEBHOOK_SECRET=SECRET, RELAY_AUTH_FAILURE_LIMIT="3/minute")
    client = app.test_client()
    statuses = [post(client, {**EVENT, "id": f"evt_bad_{n}"}, secret="whsec_guess").status_code for n in range(5)]
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]
    assert post(client, EVENT).status_code == 202
    assert [row.id for row in stored(app)] == ["evt_in_1"]


def test_the_relays_own_event_ids_cannot_come_from_outside(intake_app):
    answer = post(intake_app.test_client(), {**EVENT, "id": "evt_relay_1"})
    assert answer.status_code == 422 and answer.get_json()["errors"][0]["field"] == "id"
    assert stored(intake_app) == []


def test_a_database_failure_while_storing_is_a_503_paywalls_retries(intake_app, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def down(*args, **kwargs):
        raise OperationalError("INSERT INTO events", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(events, "store", down)
    answer = post(intake_app.test_client(), EVENT)
    assert answer.status_code == 503 and answer.get_json()["type"].endswith(":unavailable")
    monkeypatch.undo()
    assert stored(intake_app) == []
    assert post(intake_app.test_client(), EVENT).status_code == 202  # Paywalls' retry is taken


def test_the_same_event_delivered_concurrently_is_stored_once(intake_app):
    from concurrent.futures import ThreadPoolExecutor
    barrier = __import__("threading").Barrier(6)

    def deliver(_):
        client = intake_app.test_client()
        barrier.wait()
        return post(client, {"delivery": {"id": "dlv"}, "event": EVENT}).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(deliver, range(6)))
    assert statuses == [200] * 5 + [202]
    assert len(stored(intake_app)) == 1


def test_a_body_over_16_kib_is_refused_however_it_is_framed(intake_app):
    import io
    raw = json.dumps({**EVENT, "data": {"x": "a" * 20000}}).encode()
    headers = {"X-Paywalls-Signature": webhooks.sign(SECRET, raw),
               "X-Paywalls-Timestamp": datetime.now(timezone.utc).isoformat()}
    client = intake_app.test_client()
    assert client.post("/v1/webhooks/paywalls", data=raw, headers=headers).status_code == 413
    # As gunicorn hands over a chunked request: no Content-Length, a stream the server ends.
    chunked = client.post("/v1/webhooks/paywalls", input_stream=io.BytesIO(raw), headers=headers,
                          environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": "",
                                             "HTTP_TRANSFER_ENCODING": "chunked"})
    assert chunked.status_code == 413
    assert stored(intake_app) == []
