"""Events: what Paywalls sends to POST /v1/webhooks/paywalls (source "paywalls") and what the relay makes from its
own ledger (source "relay"), stored once per id in the events table. The fan-out (deliveries.py) turns each stored
event into one delivery per matching REST hook.

The event object is schemas/event.json: {id, type, version, createdAt, source, data{...}}. Paywalls documents two
bodies for a delivery, `{"delivery": {...}, "event": {...}}` and a bare event; normalize() takes either.
"""

import json
import re
import threading
import time
import weakref
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import select

from . import dates, messages
from .messages import field_error
from .models import Event, as_utc, utcnow

MAX_ID = 100  # the events.id column
MAX_TYPE = 100  # the events.type column
MAX_USER = 128  # the events.user column; Paywalls recommends user ids under 128 characters

# Set whenever an event is stored, so the delivery worker (deliveries.py) fans it out at once instead of at its next
# poll. store() sets it inside the caller's transaction, before the row is visible to others: callers that own the
# transaction set it again after their commit (a worker woken early finds nothing and waits for that second set).
wake = threading.Event()


# Printable ASCII without blanks: an id and a type travel on in HTTP headers (X-Relay-Event-Id, -Type) to hook targets.
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")


def _text(value, limit: int) -> str | None:
    return value if isinstance(value, str) and len(value) <= limit and _TOKEN_TEXT.fullmatch(value) else None


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
        errors.append(field_error(prefix + "id", f"{prefix}id must be the event id, 1-{MAX_ID} printable ASCII "
                                                 "characters without blanks, e.g. evt_123."))
    if _text(event.get("type"), MAX_TYPE) is None:
        errors.append(field_error(prefix + "type", f"{prefix}type must be the event type, 1-{MAX_TYPE} printable "
                                                   "ASCII characters, e.g. paywall.balance.deposit.created."))
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


def store(connection, event: dict, source: str, token_id: str | None = None, now: datetime | None = None,
          happened: datetime | None = None) -> bool:
    """Insert the event once per id, in the caller's transaction (a Session or a Core Connection): True if it is
    new, False if that id was stored before (a duplicate delivery: acknowledged, never fanned out twice).
    The event must come from normalize() or the relay itself: it has an id and a type. `happened`: its createdAt
    as a datetime, when the caller has it (the relay's own events), instead of reading it back from the text."""
    from . import db  # db imports Flask's app context helpers; events stays importable without them

    now = now or utcnow()
    user = user_of(event)
    values = {"id": event["id"], "type": event["type"], "source": source,
              # A user id too long for the column cannot be any relay token's user: the event is kept, unfiltered.
              "user": user if user is not None and len(user) <= MAX_USER else None,
              "payload": json.dumps(event, separators=(",", ":"), ensure_ascii=False),
              "token_id": token_id, "created_at": happened or created_at(event, now), "received_at": now, "fanned_out": False}
    inserted = db.insert_ignore_returning(connection, Event, values) is not None
    if inserted:
        wake.set()
    return inserted


# --- events the relay makes from its own ledger -------------------------------------------------------------------

# The ledger outcome of a deposit or charge -> the event it makes. Paywalls' own names where Paywalls has the event,
# so one trigger fires for a deposit made anywhere; relay.* for what only the relay knows.
FROM_LEDGER = {
    "credited": "paywall.balance.deposit.created",
    "charged": "paywall.balance.charge.completed",
    "declined": "paywall.balance.charge.failed",
    "ambiguous": "relay.operation.ambiguous",
}
DEPLETED = "paywall.balance.depleted"
RELAY_PREFIX = "evt_relay_"  # the ids of the relay's own events: evt_relay_<ledger id>[_depleted]
CONFIGURED_TTL = 30.0  # seconds the answer to "are Paywalls webhooks configured?" is reused, per process
_INSUFFICIENT = re.compile(r"insufficient|top.?up|not enough", re.IGNORECASE)


class _Configured:
    """Whether Paywalls webhooks are configured (PAYWALLS_WEBHOOK_SECRET, or an active subscription the relay
    registered), asked of the database at most every CONFIGURED_TTL seconds: never once per deposit."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answers = weakref.WeakKeyDictionary()  # engine -> (monotonic time, answer); gone with its engine

    def __call__(self, settings: dict, connection) -> bool:
        """`connection`: the caller's own (SQLite admits one writer: a second connection would wait on it)."""
        if settings.get("PAYWALLS_WEBHOOK_SECRET"):
            return True
        now = time.monotonic()
        with self.lock:
            cached = self.answers.get(connection.engine)
        if cached and now - cached[0] < CONFIGURED_TTL:
            return cached[1]
        from .models import WebhookSubscription
        query = select(WebhookSubscription.id).where(WebhookSubscription.deactivated_at.is_(None)).limit(1)
        answer = connection.execute(query).first() is not None
        with self.lock:
            self.answers[connection.engine] = (now, answer)
        return answer

    def forget(self):
        """After `webhooks subscribe|unsubscribe`, and in tests: the next question asks the database."""
        with self.lock:
            self.answers.clear()


webhooks_configured = _Configured()


def relay_makes(settings: dict, connection) -> tuple[bool, bool]:
    """(paywall.* events, relay.* events): which kinds the relay makes from its ledger under RELAY_EVENTS_FROM_RELAY.
    auto: when Paywalls sends webhooks it sends paywall.* for every source, the relay's deposits included, so the
    relay making them too would fire each trigger twice; relay.* ones only the relay can make."""
    mode = settings.get("RELAY_EVENTS_FROM_RELAY", "auto")
    if mode == "off":
        return False, False
    if mode == "on":
        return True, True
    return not webhooks_configured(settings, connection), True


def _zero(text) -> bool:
    """A balance shown as zero ("0", "0.00", "$0.00", "0 credits"); text with no number in it is not."""
    if not isinstance(text, str):
        return False
    number = re.sub(r"[^0-9.\-]", "", text)
    try:
        return bool(re.search(r"[0-9]", number)) and Decimal(number) == 0
    except InvalidOperation:
        return False


def depleted(operation: str, outcome: str, answer) -> bool:
    """A charge whose answer shows the balance at zero. Paywalls' documented charge answer ({success, message})
    shows no balance, so against Paywalls this event comes from its webhooks; an answer that does show one is used."""
    if operation != "charge" or outcome != "charged" or not isinstance(answer, dict):
        return False
    return _zero(answer.get("balanceFormatted")) or _zero(answer.get("balance"))


def iso_z(moment: datetime) -> str:
    return as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_ledger(connection, settings: dict, token, operation: str, outcome: str, ledger_id: int, entry: dict,
                answer, now: datetime) -> bool:
    """Store the events one ledger row makes, in the ledger row's own transaction: an event exists exactly when its
    row does. True if any was stored (the caller sets `wake` again after its commit)."""
    kind = FROM_LEDGER.get(outcome)
    if kind is None or settings.get("RELAY_EVENTS_FROM_RELAY") == "off":
        return False
    paywall, relay = relay_makes(settings, connection)
    made = [kind] if (paywall if kind.startswith("paywall.") else relay) else []
    if paywall and depleted(operation, outcome, answer):
        made.append(DEPLETED)
    if not made:
        return False
    data = {"externalUserId": entry.get("user"), "user": entry.get("user"), "amount": entry.get("amount"),
            "operation": operation, "idempotencyKey": entry.get("idempotency_key"), "ledgerId": f"led_{ledger_id}",
            "tokenId": token.id, "tokenLabel": token.label, "balanceFormatted": entry.get("balance_formatted"),
            "metadata": entry.get("metadata_") or {}}
    if outcome == "declined":
        message = answer.get("message") if isinstance(answer, dict) else None
        data["errorCode"] = "insufficient_funds" if isinstance(message, str) and _INSUFFICIENT.search(message) \
            else "charge_declined"
        data["message"] = message if isinstance(message, str) else None
    if outcome == "ambiguous":
        data["upstreamStatus"] = entry.get("upstream_status")
    stored = False
    for index, event_type in enumerate(made):
        event = {"id": f"{RELAY_PREFIX}{ledger_id}" + ("" if index == 0 else "_depleted"), "type": event_type,
                 "version": "1", "createdAt": iso_z(now), "source": "relay", "data": data}
        stored = store(connection, event, "relay", token_id=token.id, now=now, happened=now) or stored
    return stored


# --- reading recent events (GET /v1/relay/events) -------------------------------------------------------------------

TYPE_FILTER = re.compile(r"\*|[a-z0-9_]+(?:\.[a-z0-9_]+)*(?:\.\*)?", re.IGNORECASE)
MAX_TYPE_FILTERS = 50
SCAN_LIMIT = 2000  # rows read at most to find `limit` events a user-limited token may see


def _type_clause(types: list[str]):
    from sqlalchemy import or_
    if not types or "*" in types:
        return None
    exact = [name for name in types if not name.endswith(".*")]
    families = [name[:-1] for name in types if name.endswith(".*")]  # "paywall.balance." (no LIKE wildcards left)
    clauses = ([Event.type.in_(exact)] if exact else []) + [Event.type.startswith(prefix, autoescape=True)
                                                             for prefix in families]
    return or_(*clauses)


def recent(session, types: list[str], limit: int, allowed, limited: bool) -> list[dict]:
    """The newest events first (by when the relay received or made them), as their stored event objects. `limited`:
    the reader's token has a user pattern, so only events with a user that `allowed(user)` are returned."""
    query = select(Event.payload, Event.user).order_by(Event.received_at.desc(), Event.id.desc())
    clause = _type_clause(types)
    if clause is not None:
        query = query.where(clause)
    if limited:
        query = query.where(Event.user.is_not(None))
    found = []
    for row in session.execute(query.limit(SCAN_LIMIT if limited else limit)):
        if limited and not allowed(row.user):
            continue
        found.append(json.loads(row.payload))
        if len(found) == limit:
            break
    return found


def purge(connection, before: datetime) -> int:
    """Forget events received before `before` that were fanned out (`paywalls-relay idempotency purge`, after the
    retention period): their deliveries ended long ago (retries stop after 24 hours). One not fanned out yet stays."""
    from sqlalchemy import delete
    result = connection.execute(delete(Event).where(Event.fanned_out.is_(True), Event.received_at < before))
    return result.rowcount
