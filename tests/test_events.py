"""relay/events.py: the event object from either delivery body, its user, and storing it once per id."""

import json

import pytest
from sqlalchemy import select

from relay import db, events, messages
from relay.models import Event, utcnow

EVENT = {"id": "evt_1", "type": "paywall.balance.deposit.created", "version": "1",
         "createdAt": "2026-11-30T12:00:00Z", "data": {"externalUserId": "acme:u1", "amount": "5"}}


def test_normalize_takes_the_wrapped_and_the_bare_body_alike():
    wrapped = {"delivery": {"id": "dlv_1", "attempt": 1}, "event": EVENT}
    assert events.normalize(wrapped) == EVENT
    assert events.normalize(dict(EVENT)) == EVENT


def test_normalize_keeps_what_paywalls_adds():
    event = {**EVENT, "paywallId": "pw_1", "status": "sent", "metadata": {"a": 1}}
    assert events.normalize({"delivery": {}, "event": event})["paywallId"] == "pw_1"


@pytest.mark.parametrize("body, fields", [
    ({"type": "x"}, ["id"]),
    ({"id": "evt_1"}, ["type"]),
    ({"delivery": {}, "event": {"type": "x"}}, ["event.id"]),
    ({"delivery": {}, "event": {"id": 5, "type": ""}}, ["event.id", "event.type"]),
    ({"id": " evt_1", "type": "x"}, ["id"]),
    ({"id": "e" * 101, "type": "x"}, ["id"]),
    ({"id": "evt_1", "type": "x", "data": [1]}, ["data"]),
    ({"id": "evt_1\r\nX-Injected: 1", "type": "x"}, ["id"]),
    ({"id": "evt_é", "type": "paywall.balance\n"}, ["id", "type"]),
    ({"id": "evt 1", "type": "x"}, ["id"]),
    ({}, ["id", "type"]),
])
def test_normalize_refuses_an_event_without_usable_id_or_type_naming_the_field(body, fields):
    with pytest.raises(messages.Problem) as refused:
        events.normalize(body)
    assert refused.value.status == 422
    assert [error["field"] for error in refused.value.extra["errors"]] == fields


@pytest.mark.parametrize("body", [[], "evt", None, 3])
def test_normalize_refuses_what_is_not_an_object(body):
    with pytest.raises(messages.Problem) as refused:
        events.normalize(body)
    assert refused.value.status == 422


@pytest.mark.parametrize("data, user", [
    ({"externalUserId": "acme:a", "user": "acme:b"}, "acme:a"),
    ({"user": "acme:b"}, "acme:b"),
    ({"externalUserId": "", "user": "acme:b"}, "acme:b"),
    ({"externalUserId": 7, "user": "acme:b"}, "acme:b"),
    ({"walletUserId": "w_1"}, None),
    ({}, None),
])
def test_user_of_prefers_paywalls_field_then_the_relays(data, user):
    assert events.user_of({"id": "e", "type": "t", "data": data}) == user


def test_user_of_an_event_without_data():
    assert events.user_of({"id": "e", "type": "t"}) is None
    assert events.user_of({"id": "e", "type": "t", "data": "x"}) is None


def stored(app) -> list[Event]:
    with app.app_context(), db.read() as session:
        return list(session.scalars(select(Event).order_by(Event.received_at, Event.id)))


def test_store_inserts_once_per_id_and_wakes_the_worker(app):
    events.wake.clear()
    with app.app_context():
        with db.write() as connection:
            assert events.store(connection, EVENT, "paywalls") is True
        assert events.wake.is_set()
        events.wake.clear()
        with db.write() as connection:
            # The same id again, even with another body: the first one stands, nobody is woken.
            assert events.store(connection, {**EVENT, "type": "other"}, "paywalls") is False
        assert not events.wake.is_set()
    [row] = stored(app)
    assert (row.id, row.type, row.source, row.user, row.fanned_out) == \
        ("evt_1", "paywall.balance.deposit.created", "paywalls", "acme:u1", False)
    assert json.loads(row.payload) == EVENT
    assert row.created_at.isoformat().startswith("2026-11-30T12:00:00")


def test_store_in_an_orm_session_too(app):
    with app.app_context(), db.transaction() as session:
        assert events.store(session, {**EVENT, "id": "evt_s"}, "relay", token_id="tok") is True
    [row] = stored(app)
    assert (row.source, row.token_id) == ("relay", "tok")


def test_store_rolled_back_leaves_nothing(app):
    with app.app_context():
        with pytest.raises(RuntimeError):
            with db.write() as connection:
                events.store(connection, EVENT, "paywalls")
                raise RuntimeError("the surrounding transaction fails")
    assert stored(app) == []


def test_store_keeps_an_event_whose_user_is_too_long_for_any_token_without_a_user(app):
    event = {**EVENT, "data": {"externalUserId": "u" * 500}}
    with app.app_context(), db.write() as connection:
        assert events.store(connection, event, "paywalls")
    [row] = stored(app)
    assert row.user is None
    assert json.loads(row.payload)["data"]["externalUserId"] == "u" * 500


def test_store_an_unreadable_created_at_dates_it_when_received(app):
    from datetime import datetime, timezone
    now = datetime(2026, 11, 30, 15, 0, tzinfo=timezone.utc)
    with app.app_context(), db.write() as connection:
        events.store(connection, {**EVENT, "createdAt": "yesterday"}, "paywalls", now=now)
    [row] = stored(app)
    assert row.created_at.replace(tzinfo=timezone.utc) == now


# --- events the relay makes from its ledger -------------------------------------------------------------------------

from conftest import auth, create_token, deposit, ledger_rows  # noqa: E402


def charge(client, token_text, **body):
    return client.post("/v1/user/charge", json={"user": "acme:user_1", "amount": "1", **body}, headers=auth(token_text))


def fault(sandbox, **spec):
    with sandbox.state.lock:
        sandbox.state.faults.append({"count": 1, **spec})


def relay_events(app) -> list[dict]:
    return [json.loads(row.payload) for row in stored(app) if row.source == "relay"]


@pytest.fixture
def relay_app(make_app, database_url):
    events.webhooks_configured.forget()
    yield make_app(database_url, RELAY_EVENTS_FROM_RELAY="auto")
    events.webhooks_configured.forget()


def test_a_credit_makes_a_deposit_created_event_shaped_like_paywalls(relay_app, sandbox):
    token_id, text = create_token(relay_app, label="Zap: renewals")
    client = relay_app.test_client()
    answer = deposit(client, text, metadata={"invoice": "in_1"})
    assert answer.status_code == 200
    [event] = relay_events(relay_app)
    with relay_app.app_context(), db.read() as session:
        [row] = [r for r in ledger_rows(session) if r.outcome == "credited"]
    assert event["id"] == f"evt_relay_{row.id}"
    assert (event["type"], event["version"], event["source"]) == ("paywall.balance.deposit.created", "1", "relay")
    assert event["data"] == {
        "externalUserId": "acme:user_1", "user": "acme:user_1", "amount": "10", "operation": "deposit",
        "idempotencyKey": answer.headers["Idempotency-Key"], "ledgerId": f"led_{row.id}", "tokenId": token_id,
        "tokenLabel": "Zap: renewals", "balanceFormatted": "10.00", "metadata": {"invoice": "in_1"}}
    assert event["createdAt"].endswith("Z")
    # A replay is no new credit: no new event.
    assert deposit(client, text, metadata={"invoice": "in_1"}).headers["Idempotent-Replayed"] == "true"
    assert len(relay_events(relay_app)) == 1


def test_a_charge_a_decline_and_an_ambiguous_call_each_make_their_event(relay_app, sandbox):
    _, text = create_token(relay_app)
    client = relay_app.test_client()
    assert charge(client, text, amount="3").get_json()["success"] is False  # balance 0: declined
    deposit(client, text, amount="5")
    assert charge(client, text, amount="2").get_json()["success"] is True
    fault(sandbox, kind="respond", status=200, body="{\"odd\": true}", apply=True, endpoint="charge")
    assert charge(client, text, amount="1").status_code == 502
    made = relay_events(relay_app)
    assert [e["type"] for e in made] == ["paywall.balance.charge.failed", "paywall.balance.deposit.created",
                                         "paywall.balance.charge.completed", "relay.operation.ambiguous"]
    failed, _, completed, ambiguous = made
    assert failed["data"]["errorCode"] == "insufficient_funds"
    assert "top up" in failed["data"]["message"]
    assert completed["data"]["amount"] == "2" and completed["data"]["operation"] == "charge"
    assert ambiguous["data"]["operation"] == "charge" and ambiguous["data"]["upstreamStatus"] == 200


def test_a_decline_for_another_reason_says_so(relay_app, sandbox):
    _, text = create_token(relay_app)
    fault(sandbox, kind="respond", status=200, body="{\"success\": false, \"message\": \"Card blocked\"}",
          endpoint="charge")
    charge(relay_app.test_client(), text)
    [event] = relay_events(relay_app)
    assert event["data"]["errorCode"] == "charge_declined"


@pytest.mark.parametrize("shown, depleted", [("0.00", True), ("$0.00", True), ("0", True), ("0.01", False),
                                              ("", False), ("n/a", False)])
def test_a_charge_answer_showing_a_zero_balance_also_makes_depleted(relay_app, sandbox, shown, depleted):
    _, text = create_token(relay_app)
    answer = json.dumps({"success": True, "message": "Charged", "balanceFormatted": shown})
    fault(sandbox, kind="respond", status=200, body=answer, endpoint="charge")
    assert charge(relay_app.test_client(), text).status_code == 200
    made = relay_events(relay_app)
    assert [e["type"] for e in made] == ["paywall.balance.charge.completed"] + \
        (["paywall.balance.depleted"] if depleted else [])
    if depleted:
        assert made[1]["id"] == made[0]["id"] + "_depleted"
        assert made[1]["data"]["externalUserId"] == "acme:user_1"


def test_auto_makes_only_relay_events_once_paywalls_webhooks_are_configured(make_app, database_url, sandbox):
    events.webhooks_configured.forget()
    app = make_app(database_url, PAYWALLS_WEBHOOK_SECRET="whsec_test")
    _, text = create_token(app)
    client = app.test_client()
    deposit(client, text)
    fault(sandbox, kind="respond", status=200, body="{\"odd\": true}", apply=True, endpoint="deposit")
    deposit(client, text, amount="2")
    # Paywalls sends deposit.created for the credit itself; only the relay knows the call was ambiguous.
    assert [e["type"] for e in relay_events(app)] == ["relay.operation.ambiguous"]


def test_auto_counts_an_active_stored_subscription_as_configured(relay_app, sandbox):
    from relay.models import WebhookSubscription
    with relay_app.app_context(), db.transaction() as session:
        session.add(WebhookSubscription(id="sub_1", url="https://r.example/v1/webhooks/paywalls", events=["*"],
                                        secret_encrypted="x", secret_suffix="abcd"))
    events.webhooks_configured.forget()
    _, text = create_token(relay_app)
    deposit(relay_app.test_client(), text)
    assert relay_events(relay_app) == []
    with relay_app.app_context(), db.transaction() as session:
        session.get(WebhookSubscription, "sub_1").deactivated_at = utcnow()
    events.webhooks_configured.forget()
    deposit(relay_app.test_client(), text, amount="3")
    assert [e["type"] for e in relay_events(relay_app)] == ["paywall.balance.deposit.created"]


def test_the_configured_answer_is_cached_not_asked_per_deposit(relay_app, sandbox, monkeypatch):
    _, text = create_token(relay_app)
    client = relay_app.test_client()
    events.webhooks_configured.forget()
    deposit(client, text)
    asked = []
    from sqlalchemy import event as sa_event

    def count(_conn, _cursor, statement, *_):
        if "webhook_subscriptions" in statement:
            asked.append(statement)

    engine = relay_app.extensions["relay.engine"]
    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        for n in range(3):
            deposit(client, text, amount=str(n + 2))
        assert len(relay_events(relay_app)) == 4 and asked == []
        monkeypatch.setattr(events, "CONFIGURED_TTL", 0.0)
        deposit(client, text, amount="9")
        assert len(asked) == 1  # once the answer is stale, it is asked again
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)


@pytest.mark.parametrize("mode, types", [("on", ["paywall.balance.deposit.created", "relay.operation.ambiguous"]),
                                         ("off", [])])
def test_on_makes_everything_even_with_webhooks_and_off_makes_nothing(make_app, database_url, sandbox, mode, types):
    app = make_app(database_url, RELAY_EVENTS_FROM_RELAY=mode, PAYWALLS_WEBHOOK_SECRET="whsec_test")
    _, text = create_token(app)
    client = app.test_client()
    deposit(client, text)
    fault(sandbox, kind="respond", status=200, body="{\"odd\": true}", apply=True, endpoint="deposit")
    deposit(client, text, amount="2")
    assert [e["type"] for e in relay_events(app)] == types


def test_no_event_when_the_money_transaction_rolls_back(relay_app, sandbox, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from relay import caps
    _, text = create_token(relay_app, daily_cap="100")
    relay_app.config["RELAY"]["RELAY_RECORD_BUDGET"] = 0.0

    def down(*args, **kwargs):  # the last statement of the record transaction: the event insert came before it
        raise OperationalError("UPDATE usage", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(caps, "settle", down)
    answer = deposit(relay_app.test_client(), text)
    assert answer.status_code == 503
    assert relay_events(relay_app) == []
    with relay_app.app_context(), db.read() as session:
        assert [r.outcome for r in ledger_rows(session)] == []


def test_the_config_refuses_an_unknown_mode(make_app):
    from relay.config import ConfigError
    with pytest.raises(ConfigError, match="RELAY_EVENTS_FROM_RELAY"):
        make_app(RELAY_EVENTS_FROM_RELAY="sometimes")


# --- GET /v1/relay/events: recent events, for Zapier's performList and samples ---------------------------------------

def put_events(app, *specs):
    from datetime import datetime, timedelta, timezone
    start = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    with app.app_context(), db.write() as connection:
        for n, (event_id, event_type, data) in enumerate(specs):
            events.store(connection, {"id": event_id, "type": event_type, "version": "1", "data": data}, "paywalls",
                         now=start + timedelta(seconds=n))


def listed(client, token_text, query=""):
    answer = client.get("/v1/relay/events" + query, headers=auth(token_text))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return [event["id"] for event in answer.get_json()["data"]]


def test_recent_events_newest_first_filtered_by_type(app):
    put_events(app, ("e1", "paywall.balance.deposit.created", {"externalUserId": "acme:a"}),
               ("e2", "paywall.balance.depleted", {"externalUserId": "acme:a"}),
               ("e3", "paywall.balance.charge.failed", {"externalUserId": "acme:b"}),
               ("e4", "paywall.balance.deposit.created", {"user": "acme:c"}),
               ("e5", "relay.operation.ambiguous", {"user": "acme:c"}))
    _, text = create_token(app, operations=["events"])
    client = app.test_client()
    assert listed(client, text) == ["e5", "e4", "e3", "e2", "e1"]
    assert listed(client, text, "?type=paywall.balance.deposit.created") == ["e4", "e1"]
    assert listed(client, text, "?type=paywall.balance.depleted&type=paywall.balance.charge.failed") == ["e3", "e2"]
    assert listed(client, text, "?type=paywall.balance.depleted,%20paywall.balance.charge.failed") == ["e3", "e2"]
    assert listed(client, text, "?type=paywall.balance.*") == ["e4", "e3", "e2", "e1"]
    assert listed(client, text, "?type=*&limit=2") == ["e5", "e4"]
    assert listed(client, text, "?type=paywall.balance.nothing") == []
    body = client.get("/v1/relay/events?limit=1", headers=auth(text)).get_json()
    assert body == {"data": [{"id": "e5", "type": "relay.operation.ambiguous", "version": "1",
                              "data": {"user": "acme:c"}}]}


def test_a_family_filter_is_not_a_like_pattern(app):
    put_events(app, ("e1", "paywall_balance_x", {}), ("e2", "paywall.balance.x", {}))
    _, text = create_token(app, operations=["events"])
    # "_" would match any one character in SQL LIKE: here it is only itself.
    assert listed(app.test_client(), text, "?type=paywall_balance.*") == []


def test_a_user_pattern_token_sees_only_its_users_and_never_user_less_events(app):
    put_events(app, ("e1", "paywall.balance.deposit.created", {"externalUserId": "acme:a"}),
               ("e2", "paywall.balance.deposit.created", {"externalUserId": "other:b"}),
               ("e3", "paywall.balance.deposit.created", {}),
               ("e4", "paywall.balance.deposit.created", {"externalUserId": "acme:" + "x" * 300}),
               ("e5", "paywall.balance.deposit.created", {"user": "acme:c"}))
    _, limited = create_token(app, operations=["events"], user_pattern="acme:.*")
    _, everyone = create_token(app, operations=["events"])
    client = app.test_client()
    assert listed(client, limited) == ["e5", "e1"]
    assert listed(client, limited, "?limit=1") == ["e5"]
    assert listed(client, everyone) == ["e5", "e4", "e3", "e2", "e1"]


def test_events_needs_the_events_operation(app):
    _, text = create_token(app, operations=["deposit", "ledger", "topup"])
    answer = app.test_client().get("/v1/relay/events", headers=auth(text))
    assert answer.status_code == 403 and answer.get_json()["limit"] == "operation"
    assert app.test_client().get("/v1/relay/events").status_code == 401


@pytest.mark.parametrize("query, field", [("?limit=0", "limit"), ("?limit=101", "limit"), ("?limit=x", "limit"),
                                          ("?type=a%20b", "type"), ("?type=paywall.*.x", "type"),
                                          ("?type=%27%3B--", "type"), ("?since=2026-01-01", "since"),
                                          ("?type=" + ",".join(f"t{n}" for n in range(51)), "type")])
def test_bad_queries_name_the_field(app, query, field):
    _, text = create_token(app, operations=["events"])
    answer = app.test_client().get("/v1/relay/events" + query, headers=auth(text))
    assert answer.status_code == 422
    assert [e["field"] for e in answer.get_json()["errors"]] == [field]


def test_every_event_the_relay_makes_or_stores_validates_against_schemas_event_json(relay_app, sandbox):
    from jsonschema import Draft202012Validator

    from relay.validation import load_schema
    validator = Draft202012Validator(load_schema("event.json"))
    _, text = create_token(relay_app)
    client = relay_app.test_client()
    charge(client, text, amount="3")
    deposit(client, text)
    charge(client, text, amount="2")
    fault(sandbox, kind="respond", status=200, body="{\"odd\": true}", apply=True, endpoint="charge")
    charge(client, text)
    fault(sandbox, kind="respond", status=200, body=json.dumps({"success": True, "balanceFormatted": "0"}),
          endpoint="charge")
    charge(client, text)
    made = relay_events(relay_app)
    assert len({e["type"] for e in made}) == 5
    for event in made + [EVENT]:
        validator.validate(event)


def test_purge_forgets_old_fanned_out_events_only(app):
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import update
    old = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with app.app_context():
        with db.write() as connection:
            for event_id, when in (("old_done", old), ("old_pending", old), ("new_done", old + timedelta(days=60))):
                events.store(connection, {"id": event_id, "type": "t"}, "paywalls", now=when)
            connection.execute(update(Event).where(Event.id.in_(["old_done", "new_done"])).values(fanned_out=True))
        with db.write() as connection:
            assert events.purge(connection, old + timedelta(days=30)) == 1
    assert sorted(row.id for row in stored(app)) == ["new_done", "old_pending"]
