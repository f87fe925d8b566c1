"""REST hooks (issue 16): POST/GET/DELETE /v1/relay/hooks (relay/hooks.py), the target URL policy (relay/targets.py),
the fan-out and the delivery worker (relay/deliveries.py), against real HTTP receivers started by the tests."""

import ipaddress
import json
import pathlib
import random
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import select, update

from conftest import auth, create_token, manual_clock, wait_for
from hook_receiver import Receiver, certificates
from relay import clock, db, deliveries, targets, tokens
from relay.models import Delivery, DeliveryAttempt, Event, Hook, Token

HOOKS = "/v1/relay/hooks"
SCHEMAS = pathlib.Path(__file__).resolve().parents[1] / "schemas"
DEPLETED = "paywall.balance.depleted"
DEPOSIT = "paywall.balance.deposit.created"
FAILED = "paywall.balance.charge.failed"


def schema(name: str) -> Draft202012Validator:
    from relay.validation import registry
    return Draft202012Validator(json.loads((SCHEMAS / name).read_text()), registry=registry())


def events_token(app, operations=("events",), **spec) -> tuple[str, str]:
    """A token with the `events` operation (and whatever else the test names)."""
    return create_token(app, operations=list(operations), **spec)


def store_event(app, event_type=DEPOSIT, user="acme:u1", event_id=None, source="paywalls", received_at=None) -> dict:
    """An event as the intake or the money path stores it (relay/events.py): the payload is what a target receives."""
    event_id = event_id or "evt_" + uuid.uuid4().hex
    with app.app_context():
        now = received_at or clock.now()
        data = {"externalUserId": user, "user": user, "amount": "10", "currency": "USD"} if user else {"amount": "10"}
        event = {"id": event_id, "type": event_type, "version": "1", "createdAt": now.isoformat(), "source": source,
                 "data": data}
        with db.transaction() as session:
            session.add(Event(id=event_id, type=event_type, source=source, user=user, payload=json.dumps(event),
                              created_at=now, received_at=now, fanned_out=False))
    return event


def subscribe(client, token, target_url, **body):
    return client.post(HOOKS, json={"target_url": target_url, **body}, headers=auth(token))


def rows(app, model, *where):
    with app.app_context(), db.read() as session:
        return list(session.scalars(select(model).where(*where).order_by(model.id)))


def fan_out(app) -> int:
    with app.app_context(), db.write() as connection:
        return deliveries.fan_out(connection, clock.now())


def run_due(app, resolver=None) -> list[str]:
    """Claim and deliver every due delivery once, in this thread: the worker's steps without its thread."""
    with app.app_context():
        with db.write() as connection:
            held = deliveries.claim(connection, "test", clock.now(), 30, 100)
        return [deliveries.deliver(one, app.config["RELAY"], resolver) for one in held]


@pytest.fixture
def worker(app):
    running = []

    def start(target_app=None):
        one = deliveries.Worker(target_app or app, poll=0.05).start()
        running.append(one)
        return one

    yield start
    for one in running:
        one.stop(10)


# --- the API ---------------------------------------------------------------------------------------------------------

def test_subscribe_list_show_and_unsubscribe(app, client):
    _, token = events_token(app)
    made = subscribe(client, token, "https://hooks.example.com/zap/1?sig=abc", event_types=[DEPLETED],
                     filter={"user": "acme:u1"})
    assert made.status_code == 201, made.get_json()
    hook = made.get_json()
    schema("hook.json").validate(hook)
    assert made.headers["Location"] == f"{HOOKS}/{hook['id']}"
    assert (hook["target_url"], hook["event_types"], hook["filter"], hook["status"]) == \
        ("https://hooks.example.com/zap/1?sig=abc", [DEPLETED], {"user": "acme:u1"}, "active")
    # Sent again (a retried subscribe): the same hook, not a second one that would deliver every event twice.
    again = subscribe(client, token, "https://hooks.example.com/zap/1?sig=abc", event_types=[DEPLETED],
                      filter={"user": "acme:u1"})
    assert (again.status_code, again.get_json()["id"]) == (200, hook["id"])
    other = subscribe(client, token, "https://hooks.example.com/zap/2").get_json()
    assert other["event_types"] == ["*"] and other["filter"] == {"user": None}
    listed = client.get(HOOKS, headers=auth(token)).get_json()
    schema("hooks-response.json").validate(listed)
    assert [h["id"] for h in listed["data"]] == [hook["id"], other["id"]]
    narrowed = client.get(HOOKS, query_string={"target_url": "https://hooks.example.com/zap/2"}, headers=auth(token))
    assert [h["id"] for h in narrowed.get_json()["data"]] == [other["id"]]
    assert client.get(f"{HOOKS}/{hook['id']}", headers=auth(token)).get_json() == hook
    gone = client.delete(f"{HOOKS}/{hook['id']}", headers=auth(token))
    assert gone.status_code == 200
    assert (gone.get_json()["status"], gone.get_json()["deleted_reason"]) == ("deleted", "unsubscribed")
    # Deleting it again (Zapier unsubscribes on every Zap off) is not an error.
    assert client.delete(f"{HOOKS}/{hook['id']}", headers=auth(token)).status_code == 200
    assert [h["id"] for h in client.get(HOOKS, headers=auth(token)).get_json()["data"]] == [other["id"]]


def test_a_token_sees_only_its_own_hooks(app, client):
    _, mine = events_token(app)
    _, theirs = events_token(app)
    hook = subscribe(client, mine, "https://hooks.example.com/a").get_json()
    for method, path in (("GET", f"{HOOKS}/{hook['id']}"), ("DELETE", f"{HOOKS}/{hook['id']}"),
                         ("GET", f"{HOOKS}/{hook['id']}/deliveries")):
        answer = client.open(path, method=method, headers=auth(theirs))
        assert answer.status_code == 404, (method, path)
        assert answer.get_json()["type"].endswith(":not-found")
    assert client.get(HOOKS, headers=auth(theirs)).get_json()["data"] == []
    assert rows(app, Hook)[0].deleted_at is None  # their DELETE changed nothing


def test_the_events_operation_is_required(app, client):
    _, token = create_token(app, operations=["deposit"])
    answer = subscribe(client, token, "https://hooks.example.com/a")
    assert answer.status_code == 403 and answer.get_json()["limit"] == "operation"
    assert client.get(HOOKS, headers=auth(token)).status_code == 403
    assert client.get(HOOKS).status_code == 401
    assert rows(app, Hook) == []


@pytest.mark.parametrize("body, field", [
    ({}, "target_url"),
    ({"target_url": ""}, "target_url"),
    ({"target_url": 7}, "target_url"),
    ({"target_url": "ftp://example.com/x"}, "target_url"),
    ({"target_url": "https://user:pw@example.com/x"}, "target_url"),
    ({"target_url": "https://exa mple.com/x"}, "target_url"),
    ({"target_url": "https://example.com/\u00e9"}, "target_url"),
    ({"target_url": "https:///nohost"}, "target_url"),
    ({"target_url": "https://example.com:99999/"}, "target_url"),
    ({"target_url": "https://example.com/" + "a" * 2100}, "target_url"),
    ({"target_url": "https://example.com/", "event_types": []}, "event_types"),
    ({"target_url": "https://example.com/", "event_types": ["*", DEPLETED]}, "event_types"),
    ({"target_url": "https://example.com/", "event_types": ["Paywall.Balance"]}, "event_types"),
    ({"target_url": "https://example.com/", "event_types": [DEPLETED, DEPLETED]}, "event_types"),
    ({"target_url": "https://example.com/", "event_types": "paywall.balance.depleted"}, "event_types"),
    ({"target_url": "https://example.com/", "filter": {"user": "bob@example.com"}}, "filter"),
    ({"target_url": "https://example.com/", "filter": {"users": "acme:u1"}}, "filter"),
    ({"target_url": "https://example.com/", "filter": "acme:u1"}, "filter"),
    ({"target_url": "https://example.com/", "events": [DEPLETED]}, "events"),
])
def test_bad_subscriptions_name_the_field_and_store_nothing(app, client, body, field):
    _, token = events_token(app)
    answer = client.post(HOOKS, json=body, headers=auth(token))
    assert answer.status_code == 422, answer.get_json()
    problem = answer.get_json()
    assert problem["type"].endswith(":validation")
    assert [e["field"].split(".")[0] for e in problem["errors"]] == [field]
    assert all(e["message"] for e in problem["errors"])
    assert rows(app, Hook) == []


def test_a_body_that_is_not_json_is_refused(app, client):
    _, token = events_token(app)
    assert client.post(HOOKS, data="target_url=x", headers={**auth(token), "Content-Type": "application/x-www-form-"
                                                                                           "urlencoded"}).status_code == 415
    assert client.post(HOOKS, data=b"{", headers={**auth(token), "Content-Type": "application/json"}).status_code == 400
    assert client.post(HOOKS, data=b"\xff\xfe", headers={**auth(token), "Content-Type": "application/json"}
                       ).status_code == 400


def test_a_user_pattern_limits_what_a_token_may_subscribe_to(app, client):
    _, token = events_token(app, user_pattern="acme:[a-z0-9]+")
    refused = subscribe(client, token, "https://hooks.example.com/a", filter={"user": "other:u1"})
    assert refused.status_code == 403 and refused.get_json()["limit"] == "user_pattern"
    assert subscribe(client, token, "https://hooks.example.com/a", filter={"user": "acme:u1"}).status_code == 201
    assert subscribe(client, token, "https://hooks.example.com/b").status_code == 201  # its events only (fan-out)


def test_at_most_100_active_hooks_per_token(app, client):
    _, token = events_token(app)
    for n in range(100):
        assert subscribe(client, token, f"https://hooks.example.com/{n}").status_code == 201
    refused = subscribe(client, token, "https://hooks.example.com/one-too-many")
    assert refused.status_code == 422 and "100 active hooks" in refused.get_json()["errors"][0]["message"]
    first = client.get(HOOKS, headers=auth(token)).get_json()["data"][0]["id"]
    client.delete(f"{HOOKS}/{first}", headers=auth(token))
    assert subscribe(client, token, "https://hooks.example.com/one-too-many").status_code == 201


def test_query_parameters_are_checked(app, client):
    _, token = events_token(app)
    hook = subscribe(client, token, "https://hooks.example.com/a").get_json()
    assert client.get(HOOKS + "?user=x", headers=auth(token)).status_code == 422
    for query in ("limit=0", "limit=101", "limit=x", "cursor=led_1", "cursor=att_x", "other=1"):
        answer = client.get(f"{HOOKS}/{hook['id']}/deliveries?{query}", headers=auth(token))
        assert answer.status_code == 422, query
    assert client.get(f"{HOOKS}/{'x' * 5000}", headers=auth(token)).status_code == 404


# --- the target URL policy ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address, public", [
    ("93.184.215.14", True), ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("255.255.255.255", False),
    ("224.0.0.1", False), ("192.0.2.1", False), ("::1", False), ("::", False), ("fe80::1", False),
    ("fd00:ec2::254", False), ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False),
    ("::ffff:93.184.215.14", True), ("64:ff9b::a00:1", False), ("2002:7f00:1::", False),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False), ("ff02::1", False),
])
def test_which_addresses_are_public(address, public):
    assert targets.public(ipaddress.ip_address(address)) is public


@pytest.fixture
def production_app(make_app, database_url):
    return make_app(database_url, RELAY_ENV="production")


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/a", "https://127.0.0.1/a", "https://10.0.0.5/a", "https://169.254.169.254/latest",
    "https://[::1]/a", "https://[::ffff:127.0.0.1]/a", "https://localhost/a", "https://api.localhost/a",
    "https://0.0.0.0/a", "https://2130706433/a", "https://internal.example/a",
])
def test_production_refuses_clear_text_and_internal_targets(production_app, monkeypatch, url):
    # internal.example (and 2130706433, which resolvers read as 127.0.0.1) resolve to loopback here.
    monkeypatch.setattr(targets, "getaddrinfo", lambda host, port: [ipaddress.ip_address("127.0.0.1")])
    _, token = events_token(production_app)
    answer = subscribe(production_app.test_client(), token, url)
    assert answer.status_code == 422, url
    assert answer.get_json()["errors"][0]["field"] == "target_url"
    assert rows(production_app, Hook) == []


def test_production_accepts_https_to_a_public_address_and_development_accepts_loopback(production_app, app,
                                                                                       monkeypatch):
    monkeypatch.setattr(targets, "getaddrinfo", lambda host, port: [ipaddress.ip_address("93.184.215.14")])
    _, token = events_token(production_app)
    assert subscribe(production_app.test_client(), token, "https://hooks.example.com/a").status_code == 201
    _, dev = events_token(app)
    assert subscribe(app.test_client(), dev, "http://127.0.0.1:9/a").status_code == 201
    assert subscribe(app.test_client(), dev, "http://localhost:9/b").status_code == 201


def test_a_name_that_also_resolves_to_an_internal_address_is_refused(production_app, monkeypatch):
    monkeypatch.setattr(targets, "getaddrinfo", lambda host, port: [ipaddress.ip_address("93.184.215.14"),
                                                                     ipaddress.ip_address("10.0.0.7")])
    _, token = events_token(production_app)
    answer = subscribe(production_app.test_client(), token, "https://hooks.example.com/a")
    assert answer.status_code == 422 and "10.0.0.7" in answer.get_json()["errors"][0]["message"]


def test_delivery_connects_to_the_address_it_checked_not_a_second_lookup(monkeypatch):
    """DNS rebinding: the name answers a public address to the check and 127.0.0.1 to any later lookup. The relay
    looks it up once and opens the connection to the checked address itself."""
    answers = [[ipaddress.ip_address("93.184.215.14")]]
    lookups, connections = [], []

    def resolver(host, port):
        lookups.append(host)
        return answers.pop(0) if answers else [ipaddress.ip_address("127.0.0.1")]

    def create_connection(address, *args, **kwargs):
        connections.append(address)
        raise ConnectionRefusedError(111, "refused (test)")

    import urllib3.util.connection
    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    target = targets.parse("https://rebind.example/hook?secret=s3cr3t", production=True)
    answer = targets.post(target, b"{}", {}, production=True, budget=2, resolver=resolver)
    assert answer.status is None and "could not connect" in answer.error and "s3cr3t" not in answer.error
    assert lookups == ["rebind.example"]
    assert connections == [("93.184.215.14", 443)]


def test_delivery_time_check_refuses_a_name_that_now_resolves_inside(app, production_app, monkeypatch):
    public = [ipaddress.ip_address("93.184.215.14")]
    monkeypatch.setattr(targets, "getaddrinfo", lambda host, port: public)
    token_id, token = events_token(production_app)
    subscribe(production_app.test_client(), token, "https://hooks.example.com/a")
    store_event(production_app)
    fan_out(production_app)
    connections = []
    import urllib3.util.connection
    monkeypatch.setattr(urllib3.util.connection, "create_connection",
                        lambda address, *a, **k: connections.append(address))
    assert run_due(production_app, resolver=lambda host, port: [ipaddress.ip_address("169.254.169.254")]) == ["pending"]
    attempt = rows(production_app, DeliveryAttempt)[0]
    assert attempt.status is None and "169.254.169.254" in attempt.error
    assert connections == []  # refused before any connection


# --- the fan-out -------------------------------------------------------------------------------------------------------

def hook_row(app, token_id, event_types=("*",), filter_user=None, created_at=None) -> str:
    hook_id = "hook_" + tokens._random(20)
    with app.app_context(), db.transaction() as session:
        session.add(Hook(id=hook_id, token_id=token_id, target_url="http://127.0.0.1:9/x", event_types=list(event_types),
                         filter_user=filter_user, created_at=created_at or clock.now() - timedelta(seconds=1)))
    return hook_id


def delivered_pairs(app) -> set:
    return {(d.hook_id, d.event_id) for d in rows(app, Delivery)}


def test_fan_out_matches_types_families_and_everything(app):
    token_id, _ = events_token(app)
    exact, family, everything, other = (hook_row(app, token_id, [DEPLETED]), hook_row(app, token_id, ["paywall.balance.*"]),
                                        hook_row(app, token_id, ["*"]), hook_row(app, token_id, [FAILED]))
    prefix_only = hook_row(app, token_id, ["paywall.bal.*"])
    event = store_event(app, DEPLETED)
    assert fan_out(app) == 1
    assert delivered_pairs(app) == {(exact, event["id"]), (family, event["id"]), (everything, event["id"])}
    assert other and prefix_only
    assert all(e.fanned_out for e in rows(app, Event))
    assert fan_out(app) == 0


def test_fan_out_respects_filter_user_and_the_token_user_pattern(app):
    plain, _ = events_token(app)
    limited, _ = events_token(app, user_pattern="acme:[a-z0-9]+")
    only_u1 = hook_row(app, plain, filter_user="acme:u1")
    limited_hook = hook_row(app, limited)
    e_u1, e_u2 = store_event(app, user="acme:u1"), store_event(app, user="acme:u2")
    e_other, e_none = store_event(app, user="other:u1"), store_event(app, user=None)
    fan_out(app)
    assert delivered_pairs(app) == {(only_u1, e_u1["id"]), (limited_hook, e_u1["id"]), (limited_hook, e_u2["id"])}
    assert e_other and e_none  # another user's and a user-less event reach neither


def test_revoked_disabled_expired_or_narrowed_tokens_receive_nothing(app):
    hooks_by_token = {}
    for name in ("revoked", "disabled", "expired", "no_events", "active"):
        token_id, _ = events_token(app)
        hooks_by_token[name] = (token_id, hook_row(app, token_id))
    with app.app_context(), db.transaction() as session:
        session.execute(update(Token).where(Token.id == hooks_by_token["revoked"][0]).values(revoked_at=clock.now()))
        session.execute(update(Token).where(Token.id == hooks_by_token["disabled"][0]).values(disabled=True))
        session.execute(update(Token).where(Token.id == hooks_by_token["expired"][0])
                        .values(expires_at=clock.now() - timedelta(seconds=1)))
        session.execute(update(Token).where(Token.id == hooks_by_token["no_events"][0]).values(operations=["deposit"]))
    event = store_event(app)
    fan_out(app)
    assert delivered_pairs(app) == {(hooks_by_token["active"][1], event["id"])}


def test_a_hook_does_not_receive_events_stored_before_it_existed(app):
    token_id, _ = events_token(app)
    now = datetime.now(timezone.utc)
    old = store_event(app, received_at=now - timedelta(minutes=5))
    hook = hook_row(app, token_id, created_at=now - timedelta(minutes=1))
    new = store_event(app)
    fan_out(app)
    assert delivered_pairs(app) == {(hook, new["id"])}
    assert old


def test_an_event_fanned_out_twice_is_delivered_once(app):
    """A crash between inserting the deliveries and marking the event (or a duplicate intake that reset the flag):
    the unique (hook, event) pair keeps one delivery."""
    token_id, _ = events_token(app)
    with Receiver() as receiver:
        with app.app_context(), db.transaction() as session:
            session.add(Hook(id="hook_" + tokens._random(20), token_id=token_id, target_url=receiver.url + "/h",
                             event_types=["*"], created_at=clock.now() - timedelta(seconds=1)))
        event = store_event(app)
        fan_out(app)
        with app.app_context(), db.transaction() as session:
            session.execute(update(Event).values(fanned_out=False))
        fan_out(app)
        assert len(rows(app, Delivery)) == 1
        assert run_due(app) == ["delivered"] and run_due(app) == []
        assert [e["id"] for e in receiver.events()] == [event["id"]]


def counting_passes(monkeypatch) -> list:
    """(when, events handled) of every fan-out pass from here on."""
    passes, real = [], deliveries.fan_out

    def counted(connection, now, limit=deliveries.FAN_OUT_BATCH):
        passes.append((time.monotonic(), real(connection, now, limit)))
        return passes[-1][1]
    monkeypatch.setattr(deliveries, "fan_out", counted)
    return passes


def events_while_running(app, passes, count: int, every: float, **worker):
    """A worker driven only by wakes, and `count` events stored `every` seconds apart, each waking it as events.store
    does; returns once they are all fanned out. The number of passes that handled any."""
    from relay import events
    one = deliveries.Worker(app, poll=30, **worker).start()
    try:
        for _ in range(count):
            store_event(app)
            events.wake.set()
            threading.Event().wait(every)
        wait_for(lambda: sum(handled for _, handled in passes) == count)
    finally:
        one.stop(10)
    return len([handled for _, handled in passes if handled])


def test_a_burst_of_events_is_fanned_out_in_a_few_passes_not_one_per_event(app, monkeypatch):
    """Each stored event wakes the worker; waking it into a pass per event cost a third of a busy relay's CPU (four
    reads and a write transaction per deposit). A woken worker waits COALESCE_SECONDS, so a burst is one pass."""
    passes = counting_passes(monkeypatch)
    assert events_while_running(app, passes, 20, 0.01) <= 3, passes  # 20 deposits' events, 10 ms apart


def test_events_stored_during_a_pass_wait_for_the_next_coalesced_one(app, monkeypatch):
    """Under steady load an event is stored while each pass runs. The worker went from pass to pass at once, a few
    events each, never waiting: a tenth of the relay's CPU on PostgreSQL. Only a full batch goes on at once now."""
    passes, real_pending_work = counting_passes(monkeypatch), deliveries.pending_work

    def slow(connection, now):
        threading.Event().wait(0.03)  # a pass long enough for the next events to arrive during it (outside its
        return real_pending_work(connection, now)  # write transaction: on SQLite it would hold the events back)
    monkeypatch.setattr(deliveries, "pending_work", slow)
    # 1.5 s of events, one every 15 ms: the old loop made 27 passes of 3 or 4.
    assert events_while_running(app, passes, 100, 0.015, coalesce=0.3) <= 8, passes


def test_a_backlog_bigger_than_a_batch_is_fanned_out_without_waiting(app, monkeypatch):
    from relay import events
    monkeypatch.setattr(deliveries, "FAN_OUT_BATCH", 5)
    for _ in range(23):
        store_event(app)
    passes = counting_passes(monkeypatch)
    one = deliveries.Worker(app, poll=30, coalesce=5).start()
    try:
        events.wake.set()
        wait_for(lambda: sum(handled for _, handled in passes) == 23, seconds=20)
    finally:
        one.stop(10)
    assert [handled for _, handled in passes] == [5, 5, 5, 5, 3]
    assert passes[-1][0] - passes[0][0] < 2  # one after another, not a coalescing wait (5 s) between them


# --- delivering ---------------------------------------------------------------------------------------------------------

def test_an_event_reaches_the_receiver_exactly_once_after_a_500(app, client, worker):
    token_id, token = events_token(app)
    with Receiver(statuses=[500, 200]) as receiver:
        hook = subscribe(client, token, receiver.url + "/zap?secret=xyz", event_types=[DEPOSIT]).get_json()
        worker()
        event = store_event(app)
        deliveries.wake()
        wait_for(lambda: rows(app, Delivery) and rows(app, Delivery)[0].state == "delivered", 20)
        assert [item["status"] for item in receiver.received] == [500, 200]
        assert receiver.accepted() == [event]  # the body is the stored event object, as Zapier's perform returns it
        headers = receiver.received[-1]["headers"]
        assert headers["X-Relay-Event-Id"] == event["id"] and headers["X-Relay-Event-Type"] == DEPOSIT
        assert headers["X-Relay-Hook-Id"] == hook["id"] and headers["X-Relay-Delivery-Attempt"] == "2"
        assert headers["User-Agent"].startswith("paywalls-relay/") and headers["Content-Type"] == "application/json"
        assert receiver.received[-1]["path"] == "/zap?secret=xyz"
        delivery = rows(app, Delivery)[0]
        assert (delivery.attempts, delivery.last_status, delivery.lease_until) == (2, 200, None)
        log = client.get(hook["deliveries_url"], headers=auth(token)).get_json()
        schema("hook-deliveries-response.json").validate(log)
        assert [(a["attempt"], a["status"], a["state"]) for a in log["data"]] == [(2, 200, "delivered"),
                                                                                  (1, 500, "delivered")]
        with app.app_context(), db.read_connection() as connection:
            assert deliveries.pending_work(connection, clock.now()) == (False, None)  # nothing left to send
    assert token_id


def test_410_deletes_the_hook_and_cancels_its_pending_deliveries(app, client):
    _, token = events_token(app)
    with Receiver(statuses=[410]) as receiver:
        hook = subscribe(client, token, receiver.url + "/gone").get_json()
        first, second = store_event(app), store_event(app)
        fan_out(app)
        with app.app_context(), db.write() as connection:
            held = deliveries.claim(connection, "test", clock.now(), 30, 1)
        with app.app_context():
            assert deliveries.deliver(held[0], app.config["RELAY"]) == "failed"
        shown = client.get(f"{HOOKS}/{hook['id']}", headers=auth(token)).get_json()
        assert (shown["status"], shown["deleted_reason"]) == ("deleted", "gone")
        assert {d.state for d in rows(app, Delivery)} == {"failed", "cancelled"}
        assert run_due(app) == []
        store_event(app)
        fan_out(app)
        assert len(rows(app, Delivery)) == 2  # a deleted hook gets no new deliveries
        assert len(receiver.received) == 1
        assert client.get(HOOKS, headers=auth(token)).get_json()["data"] == []
        assert first and second


def test_retries_back_off_with_jitter_and_give_up_after_24_hours(app):
    clock_ = manual_clock(app)
    token_id, _ = events_token(app)
    with Receiver(statuses=[503]) as receiver:
        with app.app_context(), db.transaction() as session:
            session.add(Hook(id="hook_" + tokens._random(20), token_id=token_id, target_url=receiver.url,
                             event_types=["*"], created_at=clock_.now() - timedelta(seconds=1)))
        store_event(app)
        fan_out(app)
        waits, states = [], []
        while True:
            before = clock_.now()
            states += run_due(app)
            delivery = rows(app, Delivery)[0]
            if delivery.state != "pending":
                break
            wait = (delivery.next_attempt_at.replace(tzinfo=before.tzinfo) - before).total_seconds()
            waits.append(wait)
            assert run_due(app) == []  # not due before its time
            clock_.advance(wait)
        for wait, base in zip(waits, deliveries.BACKOFF):
            assert base * 0.8 <= wait <= base * 1.2
        assert all(2880 <= wait <= 4320 for wait in waits[len(deliveries.BACKOFF):])
        assert sum(waits) <= 24 * 3600 < sum(waits) + 4320
        assert delivery.state == "failed" and "24 hours" in delivery.last_error
        assert len(receiver.received) == len(waits) + 1 == delivery.attempts
        assert len(rows(app, DeliveryAttempt)) == delivery.attempts


def test_jitter_spreads_retries():
    rng = random.Random(7)
    assert len({round(deliveries.backoff(3, rng), 3) for _ in range(20)}) > 10


def test_redirects_are_not_followed(app, client, worker):
    _, token = events_token(app)
    with Receiver() as elsewhere, Receiver(statuses=[302]) as redirecting:
        redirecting.location = elsewhere.url
        subscribe(client, token, redirecting.url + "/r")
        store_event(app)
        fan_out(app)
        assert run_due(app) == ["pending"]
        assert elsewhere.received == [] and rows(app, DeliveryAttempt)[0].status == 302


def test_a_slow_receiver_times_out_and_is_retried(make_app, database_url):
    app = make_app(database_url, RELAY_HOOKS_TIMEOUT=0.5, RELAY_HOOKS_LEASE=6)
    _, token = events_token(app)
    with Receiver(delay=3) as slow:
        subscribe(app.test_client(), token, slow.url + "/slow")
        store_event(app)
        fan_out(app)
        assert run_due(app) == ["pending"]
        attempt = rows(app, DeliveryAttempt)[0]
        assert attempt.status is None and "timed out" in attempt.error


def test_a_token_revoked_after_subscribing_gets_nothing_more(app, client):
    token_id, token = events_token(app)
    with Receiver() as receiver:
        subscribe(client, token, receiver.url + "/r")
        store_event(app)
        fan_out(app)  # fanned out while the token was active
        with app.app_context(), db.transaction() as session:
            session.execute(update(Token).where(Token.id == token_id).values(revoked_at=clock.now()))
        assert run_due(app) == ["cancelled"]
        store_event(app)
        fan_out(app)
        assert receiver.received == [] and len(rows(app, Delivery)) == 1
        assert "revoked" in rows(app, Delivery)[0].last_error


def test_the_target_query_string_never_reaches_the_log(app, client, relay_log, worker):
    _, token = events_token(app)
    with Receiver(statuses=[500, 200]) as receiver:
        subscribe(client, token, receiver.url + "/hooks/catch/123/s3cretpath?token=qu3rysecret")
        worker()
        store_event(app)
        wait_for(lambda: rows(app, Delivery) and rows(app, Delivery)[0].state == "delivered", 20)
    text = relay_log.text + "".join(str(getattr(r, "fields", "")) for r in relay_log.records)
    assert "hook delivery" in text
    assert "qu3rysecret" not in text and "s3cretpath" not in text


# --- end to end: a signed Paywalls event, and the relay's own events, to a real receiver ----------------------------

WEBHOOK_SECRET = "whsec_" + uuid.uuid4().hex


@pytest.fixture
def intake_app(make_app, database_url):
    return make_app(database_url, PAYWALLS_WEBHOOK_SECRET=WEBHOOK_SECRET)


def post_signed(client, event: dict, secret=WEBHOOK_SECRET):
    from relay import webhooks
    raw = json.dumps({"delivery": {"id": "dlv_" + uuid.uuid4().hex, "attempt": 1}, "event": event}).encode()
    return client.post("/v1/webhooks/paywalls", data=raw, headers={
        "Content-Type": "application/json", "X-Paywalls-Signature": webhooks.sign(secret, raw),
        "X-Paywalls-Timestamp": str(int(datetime.now(timezone.utc).timestamp())),
        "X-Paywalls-Event": f"{event['type']}@1"})


def paywalls_event(event_type=DEPLETED, user="acme:u7") -> dict:
    return {"id": "evt_" + uuid.uuid4().hex, "paywallId": "pw_1", "type": event_type, "version": "1",
            "createdAt": datetime.now(timezone.utc).isoformat(), "status": "pending", "attempts": 1,
            "data": {"externalUserId": user, "walletUserId": "w_1", "balance": "0"}}


def test_a_signed_paywalls_event_reaches_the_receiver_once_after_a_500_and_a_duplicate(intake_app, worker):
    app, client = intake_app, intake_app.test_client()
    _, token = events_token(app)
    with Receiver(statuses=[500, 200]) as receiver:
        subscribe(client, token, receiver.url + "/zap", event_types=[DEPLETED], filter={"user": "acme:u7"})
        worker(app)
        event = paywalls_event()
        assert post_signed(client, event).status_code == 202
        assert post_signed(client, event).status_code == 200  # Paywalls delivered it twice: stored and fanned out once
        wait_for(lambda: rows(app, Delivery) and rows(app, Delivery)[0].state == "delivered", 20)
        assert post_signed(client, event).status_code == 200  # and again after it was delivered
        assert receiver.accepted() == [event] and len(receiver.received) == 2
        assert len(rows(app, Delivery)) == 1
        # A forged one (wrong secret) is refused and never reaches anyone.
        assert post_signed(client, paywalls_event(), secret="whsec_wrong").status_code == 401
        with app.app_context(), db.read_connection() as connection:
            assert deliveries.pending_work(connection, clock.now()) == (False, None)
        assert len(receiver.received) == 2


def test_a_deposit_through_the_relay_reaches_a_deposit_hook(make_app, database_url, sandbox, worker):
    app = make_app(database_url, RELAY_EVENTS_FROM_RELAY="on")
    client = app.test_client()
    _, token = events_token(app, operations=("events", "deposit"))
    with Receiver() as receiver:
        subscribe(client, token, receiver.url + "/n8n", event_types=[DEPOSIT])
        worker(app)
        answer = client.post("/v1/user/balance/deposit", json={"user": "acme:u9", "amount": "5"}, headers=auth(token))
        assert answer.status_code == 200
        wait_for(lambda: len(receiver.accepted()) == 1, 20)
        (event,) = receiver.accepted()
        assert (event["type"], event["source"], event["data"]["externalUserId"], event["data"]["amount"]) == \
            (DEPOSIT, "relay", "acme:u9", "5")


def test_odd_bytes_in_an_event_id_or_type_cannot_break_the_headers(app, client):
    _, token = events_token(app)
    with Receiver() as receiver:
        subscribe(client, token, receiver.url + "/h")
        event = store_event(app, event_type="paywall.balance.deposit.created\r\nX-Injected: 1", event_id="evt_é\n1")
        fan_out(app)
        assert run_due(app) == ["delivered"]
        (item,) = receiver.received
        assert "X-Injected" not in item["headers"]
        assert item["headers"]["X-Relay-Event-Id"] == "evt_%C3%A9%0A1"
        assert json.loads(item["body"]) == event  # the body carries them exactly


@pytest.mark.parametrize("event_types", [None, 7, {"*": 1}, [None], [["*"]]])
def test_event_types_of_the_wrong_shape_are_a_422_not_a_500(app, client, event_types):
    _, token = events_token(app)
    answer = subscribe(client, token, "https://hooks.example.com/a", event_types=event_types)
    assert answer.status_code == 422 and answer.get_json()["errors"][0]["field"].startswith("event_types")


# --- hostile receivers and failures ------------------------------------------------------------------------------------

class RawServer:
    """A TCP server that misbehaves on purpose: `behaviour(connection)` runs for each connection."""

    def __init__(self, behaviour):
        import socket
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.behaviour, self.stopped = behaviour, threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopped.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            try:
                self.behaviour(connection)
            except OSError:
                pass
            finally:
                connection.close()

    def close(self):
        self.stopped.set()
        self.sock.close()


def _hang_up(connection):
    connection.recv(65536)


def _trickle(connection):
    connection.recv(65536)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
        if connection.send(bytes([byte])) != 1:
            return
        threading.Event().wait(0.2)


def _garbage(connection):
    connection.recv(65536)
    connection.sendall(b"\x00\xff not http at all\r\n\r\n")


@pytest.mark.parametrize("behaviour, error", [(_hang_up, "dropped"), (_trickle, "timed out"), (_garbage, "")],
                         ids=["hang-up", "trickle", "garbage"])
def test_a_misbehaving_receiver_is_a_failed_attempt_retried_later(make_app, database_url, behaviour, error):
    app = make_app(database_url, RELAY_HOOKS_TIMEOUT=1, RELAY_HOOKS_LEASE=6)
    _, token = events_token(app)
    server = RawServer(behaviour)
    try:
        subscribe(app.test_client(), token, server.url + "/h")
        store_event(app)
        fan_out(app)
        assert run_due(app) == ["pending"]
    finally:
        server.close()
    attempt = rows(app, DeliveryAttempt)[0]
    assert attempt.status is None and error in attempt.error
    assert rows(app, Delivery)[0].next_attempt_at is not None


def test_the_worker_survives_a_database_failure_and_delivers_after_it(app, client, worker, monkeypatch):
    _, token = events_token(app)
    real, failures = deliveries.fan_out, []

    def failing_once(connection, now, limit=deliveries.FAN_OUT_BATCH):
        if not failures:
            failures.append(1)
            from sqlalchemy.exc import OperationalError
            raise OperationalError("SELECT", {}, Exception("database is gone (test)"))
        return real(connection, now, limit)

    monkeypatch.setattr(deliveries, "fan_out", failing_once)
    with Receiver() as receiver:
        subscribe(client, token, receiver.url + "/h")
        worker()
        event = store_event(app)
        wait_for(lambda: receiver.accepted() == [event], 20)
    assert failures == [1]


def test_the_host_header_names_the_target_as_written():
    target = targets.parse("http://[::1]:8080/x?y=1", production=False)
    assert (target.host, target.port, target.path, targets.host_header(target)) == ("::1", 8080, "/x?y=1", "[::1]:8080")
    assert targets.host_header(targets.parse("https://Hooks.Example.com./a", production=True)) == "hooks.example.com"
    assert targets.host_header(targets.parse("https://hooks.example.com:8443/a", production=True)) == \
        "hooks.example.com:8443"


def test_a_name_whose_first_address_refuses_is_tried_at_its_next_checked_address():
    with Receiver() as receiver:
        port = int(receiver.url.rsplit(":", 1)[1])
        target = targets.parse(f"http://receiver.test:{port}/h", production=False)
        # 127.0.0.2 refuses (the receiver listens on 127.0.0.1 only), as an unreachable IPv6 address would.
        resolver = lambda host, port: [ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1")]  # noqa
        assert targets.post(target, b"{}", {}, production=False, budget=5, resolver=resolver).status == 200
        assert receiver.received[0]["headers"]["Host"] == f"receiver.test:{port}"


def test_purge_forgets_finished_deliveries_and_their_log_but_never_pending_ones(app, client):
    _, token = events_token(app)
    with Receiver(statuses=[200, 500]) as receiver:
        subscribe(client, token, receiver.url + "/h")
        store_event(app)
        fan_out(app)
        assert run_due(app) == ["delivered"]
        store_event(app)
        fan_out(app)
        assert run_due(app) == ["pending"]
    with app.app_context(), db.write() as connection:
        assert deliveries.purge(connection, clock.now() - timedelta(days=1)) == 0  # not old enough
        assert deliveries.purge(connection, clock.now() + timedelta(seconds=1)) == 1
    assert [d.state for d in rows(app, Delivery)] == ["pending"]
    assert [a.delivery_id for a in rows(app, DeliveryAttempt)] == [rows(app, Delivery)[0].id]


# --- https: the connection goes to the checked address, TLS still verifies the certificate for the name ---------------

@pytest.mark.parametrize("name, delivered", [("receiver.test", True), ("someone-else.test", False)])
def test_https_connects_to_the_checked_address_and_verifies_the_certificate_for_the_name(tmp_path, name, delivered):
    ca, cert, key = certificates(tmp_path, "receiver.test")
    with Receiver(tls=(cert, key)) as receiver:
        port = int(receiver.url.rsplit(":", 1)[1])
        target = targets.parse(f"https://{name}:{port}/hook?k=v", production=False)
        answer = targets.post(target, b"{}", {}, production=False, budget=5, ca_certs=ca,
                              resolver=lambda host, port: [ipaddress.ip_address("127.0.0.1")])
        if delivered:
            assert answer == targets.Answer(200, None)
            assert receiver.received[0]["headers"]["Host"] == f"receiver.test:{port}"
            assert receiver.received[0]["path"] == "/hook?k=v"
        else:  # the address answers, but its certificate is not for the name the hook gave: nothing is sent
            assert answer.status is None and answer.error.startswith("TLS failed")
            assert receiver.received == []


def test_the_idle_poll_reads_events_through_the_partial_index(app):
    """Every worker looks for events not fanned out about once a second; the events table grows with every deposit,
    so that read must use ix_events_pending_fanout, never scan the table."""
    with app.app_context(), db.read_connection() as connection:
        statement = deliveries.unfanned(1).compile(connection, compile_kwargs={"literal_binds": True})
        if connection.dialect.name == "postgresql":
            with connection.begin():
                connection.exec_driver_sql("SET LOCAL enable_seqscan = off")  # any usable index is taken
                plan = " ".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {statement}"))
        else:
            plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}"))
    assert "ix_events_pending_fanout" in plan, plan


def test_one_slow_hook_holds_one_sender_and_others_go_first(app):
    """Ten events due for a hook whose target is slow (or down), one for another hook: a claim of two takes one of
    each, and while the first hook's delivery is being sent none of its others is claimed."""
    token_id, _ = events_token(app)
    slow, other = hook_row(app, token_id), hook_row(app, token_id)
    for _ in range(10):
        store_event(app)
    fan_out(app)  # both hooks get all ten; make the other hook's due only after all of the slow one's
    with app.app_context(), db.transaction() as session:
        session.execute(update(Delivery).where(Delivery.hook_id == other).values(state="cancelled"))
        first_other = session.scalars(select(Delivery.id).where(Delivery.hook_id == other).order_by(Delivery.id)).first()
        session.execute(update(Delivery).where(Delivery.id == first_other)
                        .values(state="pending", next_attempt_at=clock.now() + timedelta(seconds=0.5)))
    with app.app_context(), db.write() as connection:
        later = clock.now() + timedelta(seconds=1)
        held = deliveries.claim(connection, "test", later, 30, 2)
        assert {rows_by_id(app, one.delivery_id).hook_id for one in held} == {slow, other}
        assert deliveries.claim(connection, "test", later, 30, 4) == []  # the slow hook is busy; the other has no more


def rows_by_id(app, delivery_id):
    with app.app_context(), db.read() as session:
        return session.get(Delivery, delivery_id)
