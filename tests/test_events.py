"""relay/events.py: the event object from either delivery body, its user, and storing it once per id."""

import json

import pytest
from sqlalchemy import select

from relay import db, events, messages
from relay.models import Event

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
