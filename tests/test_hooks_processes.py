"""REST-hook deliveries across real relay processes (gunicorn): several processes on one PostgreSQL database deliver
each event once, and a relay killed mid-delivery still delivers after a restart (relay/deliveries.py)."""

import requests
from sqlalchemy import create_engine, select

from conftest import PG_URL, auth, base_settings, gunicorn_relay, migrated_token, needs_postgres, postgres_database, \
    wait_for
from hook_receiver import Receiver
from relay import db
from relay.models import Delivery, DeliveryAttempt
from test_bulk_http import _kill_tree

DEPOSIT = "paywall.balance.deposit.created"


def table(url: str, model) -> list:
    engine = create_engine(db.normalize_url(url))
    try:
        with engine.connect() as connection:
            return connection.execute(select(model.__table__).order_by(model.__table__.c.id)).all()
    finally:
        engine.dispose()


def hooked_settings(url: str, sandbox_url: str) -> dict:
    return base_settings(url, sandbox_url, RELAY_HOOKS_TIMEOUT=3, RELAY_HOOKS_LEASE=8, RELAY_EVENTS_FROM_RELAY="on")


def deposit(relay_url: str, token: str, n: int):
    answer = requests.post(relay_url + "/v1/user/balance/deposit", timeout=20, headers=auth(token),
                           json={"user": f"acme:u{n}", "amount": "1", "metadata": {"reference": f"ref-{n}"}})
    assert answer.status_code == 200, answer.text


@needs_postgres
def test_two_relay_processes_on_postgres_deliver_each_event_once(tmp_path, sandbox):
    with postgres_database() as url:
        token = migrated_token(url, operations=["deposit", "events"])
        settings = hooked_settings(url, sandbox.url)
        with Receiver(delay=0.05) as receiver, \
                gunicorn_relay(settings, workers=2, log_path=tmp_path / "a.log") as (relay_a, _a), \
                gunicorn_relay(settings, workers=2, log_path=tmp_path / "b.log") as (relay_b, _b):
            made = requests.post(relay_a + "/v1/relay/hooks", json={"target_url": receiver.url + "/hook",
                                                                    "event_types": [DEPOSIT]},
                                 headers=auth(token), timeout=10)
            assert made.status_code == 201, made.text
            for n in range(40):
                deposit(relay_a if n % 2 else relay_b, token, n)
            wait_for(lambda: len(receiver.accepted()) >= 40 and
                     all(d.state == "delivered" for d in table(url, Delivery)), 60)
            received = [event["id"] for event in receiver.events()]
        assert len(received) == len(set(received)) == 40  # each event once, by whichever process claimed it
        assert {event["data"]["user"] for event in receiver.events()} == {f"acme:u{n}" for n in range(40)}
        assert len(table(url, Delivery)) == 40 and len(table(url, DeliveryAttempt)) == 40


def test_a_relay_killed_mid_delivery_delivers_after_a_restart(tmp_path, sandbox, database_url):
    token = migrated_token(database_url, operations=["deposit", "events"])
    settings = hooked_settings(database_url, sandbox.url)
    with Receiver(hold_first=True) as receiver:
        with gunicorn_relay(settings, log_path=tmp_path / "first.log") as (relay_url, process):
            made = requests.post(relay_url + "/v1/relay/hooks", json={"target_url": receiver.url + "/hook"},
                                 headers=auth(token), timeout=10)
            assert made.status_code == 201, made.text
            deposit(relay_url, token, 1)
            assert receiver.arrived.wait(30)  # the POST is in flight: the receiver holds its answer
            _kill_tree(process.pid)  # no answer read, nothing recorded, no worker_exit hook
            process.wait(10)
        receiver.release()
        (delivery,) = table(database_url, Delivery)
        assert (delivery.state, delivery.attempts, delivery.lease_until is not None) == ("pending", 0, True)
        assert table(database_url, DeliveryAttempt) == []
        with gunicorn_relay(settings, log_path=tmp_path / "second.log"):
            wait_for(lambda: table(database_url, Delivery)[0].state == "delivered", 40)
        first, second = receiver.events()
        assert first == second and first["type"] == DEPOSIT and first["data"]["user"] == "acme:u1"
        assert [item["headers"]["X-Relay-Event-Id"] for item in receiver.received] == [first["id"]] * 2
        assert [a.status for a in table(database_url, DeliveryAttempt)] == [200]


def test_a_signed_sandbox_event_reaches_a_receiver_once_through_dev_stack(dev_stack):
    """The whole flow with no Paywalls account: the sandbox signs and delivers an event to the relay's intake twice
    (a duplicate delivery), the relay stores it once and POSTs it to the hook's receiver, which answers 500 and then
    200: it ran once. A forged delivery (bad signature) reaches nobody."""
    import uuid

    user = f"acme:hk_{uuid.uuid4().hex[:8]}"
    token = dev_stack.token(operations=["events"])
    with Receiver(statuses=[500, 200]) as receiver:
        made = requests.post(dev_stack.relay_url + "/v1/relay/hooks", headers=auth(token), timeout=10,
                             json={"target_url": receiver.url + "/zap", "event_types": ["paywall.balance.*"],
                                   "filter": {"user": user}})
        assert made.status_code == 201, made.text
        hook = made.json()

        def emit(mode, event_id):
            answer = dev_stack.sandbox("POST", "webhooks/emit", json={
                "type": DEPOSIT, "id": event_id, "data": {"externalUserId": user, "amount": "3"}, "mode": mode})
            assert answer.status_code == 202, answer.text

        def log():
            return requests.get(dev_stack.relay_url + hook["deliveries_url"], headers=auth(token), timeout=10).json()

        forged, real = f"evt_forged_{uuid.uuid4().hex[:8]}", f"evt_real_{uuid.uuid4().hex[:8]}"
        emit("bad_signature", forged)
        emit("duplicate", real)
        wait_for(lambda: [(a["attempt"], a["status"]) for a in log()["data"]] == [(2, 200), (1, 500)], 30)
        sandbox_sent = lambda: [d for d in dev_stack.sandbox("GET", "webhooks/deliveries").json()["data"]  # noqa: E731
                                if d.get("event_id") in (forged, real) and d["status"] is not None]
        wait_for(lambda: len(sandbox_sent()) == 3, 30)  # the forged one, and the real one twice
        assert sorted(d["status"] for d in sandbox_sent()) == [200, 202, 401]
        assert [event["id"] for event in receiver.accepted()] == [real]
        assert [item["headers"]["X-Relay-Event-Id"] for item in receiver.received] == [real, real]
        assert receiver.accepted()[0]["data"]["externalUserId"] == user
