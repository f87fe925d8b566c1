"""Events: what Paywalls sends to POST /v1/webhooks/paywalls (source "paywalls") and what the relay makes from its
own ledger (source "relay"), stored once per id in the events table. The fan-out (deliveries.py) turns each stored
event into one delivery per matching REST hook.

The event object is schemas/event.json: {id, type, version, createdAt, source, data{...}}. Paywalls documents two
bodies for a delivery, `{"delivery": {...}, "event": {...}}` and a bare event; normalize() takes either.
"""

import json
import threading
from datetime import datetime

from . import dates, messages
from .messages import field_error
from .models import Event, utcnow

MAX_ID = 100  # the events.id column
MAX_TYPE = 100  # the events.type column
MAX_USER = 128  # the events.user column; Paywalls recommends user ids under 128 characters

# Set whenever an event is stored, so the delivery worker (deliveries.py) fans it out at once instead of at its next
# poll. store() sets it inside the caller's transaction, before the row is visible to others: callers that own the
# transaction set it again after their commit (a worker woken early finds nothing and waits for that second set).
wake = threading.Event()


def _text(value, limit: int) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit and value.strip() == value else None


def normalize(body) -> dict:
    """The event object from a delivery body: `{"delivery": {...}, "event": {...}}` or a bare event. A 422 Problem
    naming the field when there is no usable id or type; anything else Paywalls adds is kept as sent."""
    if not isinstance(body, dict):
        raise messages.invalid_event([field_error("", "Send the event as a JSON object: {\"id\": \"evt_...\", "
                                                      "\"type\": \"paywall.balance.deposit.created\", ...}, or "
                                                      "Paywalls' {\"delivery\": {...}, \"event\": {...}}.")])
    wrapped = "event" in body and isinstance(body.get("event"), dict) and "type" not in body
    event = body["event"] if wrapped else body
    prefix = "event." if wrapped else ""
    errors = []
    if _text(event.get("id"), MAX_ID) is None:
        errors.append(field_error(prefix + "id", f"{prefix}id must be the event id, text of 1-{MAX_ID} characters "
                                                 "without surrounding blanks, e.g. evt_123."))
    if _text(event.get("type"), MAX_TYPE) is None:
        errors.append(field_error(prefix + "type", f"{prefix}type must be the event type, text of 1-{MAX_TYPE} "
                                                   "characters, e.g. paywall.balance.deposit.created."))
    if "data" in event and not isinstance(event["data"], dict):
        errors.append(field_error(prefix + "data", f"{prefix}data must be a JSON object (or left out)."))
    if errors:
        raise messages.invalid_event(errors)
    return event


def user_of(event: dict) -> str | None:
    """The Paywalls user an event is about: data.externalUserId (Paywalls' field), else data.user (the relay's)."""
    data = event.get("data")
    if not isinstance(data, dict):
        return None
    for field in ("externalUserId", "user"):
        value = data.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def created_at(event: dict, default: datetime) -> datetime:
    """The event's createdAt as an aware datetime; the moment it was received when absent or unreadable."""
    try:
        return dates.parse(event.get("createdAt"))
    except dates.DateError:
        return default


def store(connection, event: dict, source: str, token_id: str | None = None, now: datetime | None = None) -> bool:
    """Insert the event once per id, in the caller's transaction (a Session or a Core Connection): True if it is
    new, False if that id was stored before (a duplicate delivery: acknowledged, never fanned out twice).
    The event must come from normalize() or the relay itself: it has an id and a type."""
    from . import db  # db imports Flask's app context helpers; events stays importable without them

    now = now or utcnow()
    user = user_of(event)
    values = {"id": event["id"], "type": event["type"], "source": source,
              # A user id too long for the column cannot be any relay token's user: the event is kept, unfiltered.
              "user": user if user is not None and len(user) <= MAX_USER else None,
              "payload": json.dumps(event, separators=(",", ":"), ensure_ascii=False),
              "token_id": token_id, "created_at": created_at(event, now), "received_at": now, "fanned_out": False}
    inserted = db.insert_ignore_returning(connection, Event, values) is not None
    if inserted:
        wake.set()
    return inserted
