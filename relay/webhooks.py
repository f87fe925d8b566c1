"""Webhooks in: POST /v1/webhooks/paywalls takes Paywalls' signed deliveries, verifies them, and stores each event
once (events.py); the delivery worker fans it out afterwards, never inside this request.

What Paywalls signs: X-Paywalls-Signature is the hex HMAC-SHA256 of the raw request body, keyed with the
subscription secret's UTF-8 bytes as given, `whsec_` prefix included. Paywalls' docs stop short of saying so
exactly, so the whole rule is verify() below, with its own test vectors (tests/test_webhooks.py).

The secrets tried: PAYWALLS_WEBHOOK_SECRET (a subscription made in Paywalls' dashboard) and the secret of every
active subscription the relay registered itself (`paywalls-relay webhooks subscribe`), stored encrypted with Fernet
under a key derived (HKDF-SHA256) from RELAY_SECRET_KEY, or from PAYWALLS_API_KEY when that is unset.
"""

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from datetime import datetime, timedelta, timezone

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Blueprint, Response, current_app, request
from sqlalchemy import select

from . import clock, dates, db, events, messages, validation
from .models import WebhookSubscription

log = logging.getLogger("relay.webhooks")
bp = Blueprint("webhooks", __name__)

PATH = "/v1/webhooks/paywalls"
SIGNATURE_HEADER, TIMESTAMP_HEADER, EVENT_HEADER = "X-Paywalls-Signature", "X-Paywalls-Timestamp", "X-Paywalls-Event"
TOLERANCE = timedelta(minutes=5)  # a delivery older than this (or this far in the future) is refused: replays
_HEX_SHA256 = re.compile(r"(?:sha256=)?([0-9a-fA-F]{64})")


# --- the one rule ----------------------------------------------------------------------------------------------

def sign(secret: str, body: bytes) -> str:
    """The signature Paywalls sends (and the sandbox sends): lowercase hex HMAC-SHA256 of the raw body, keyed with
    the secret's UTF-8 bytes exactly as given."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether `signature` (the X-Paywalls-Signature header) signs `body` with `secret`. Hex is compared as the
    bytes it spells, so upper- and lowercase hex both pass; an optional `sha256=` prefix is allowed. A missing,
    truncated or non-hex signature, or an empty secret, fails. The comparison takes constant time."""
    if not secret or not isinstance(signature, str):
        return False
    match = _HEX_SHA256.fullmatch(signature.strip())
    if match is None:
        return False
    return hmac.compare_digest(bytes.fromhex(match.group(1)), hmac.new(secret.encode("utf-8"), body,
                                                                       hashlib.sha256).digest())


def parse_timestamp(text: str | None) -> datetime | None:
    """X-Paywalls-Timestamp: ISO 8601 (what Paywalls documents) or unix seconds (what many senders use; 13 digits
    are read as milliseconds). None when absent or unreadable."""
    if not text:
        return None
    text = text.strip()
    if re.fullmatch(r"[0-9]{1,13}(?:\.[0-9]{1,9})?", text):
        seconds = float(text)
        if len(text.split(".")[0]) == 13:
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        return dates.parse(text)
    except dates.DateError:
        return None


def _unique_keys(pairs):
    """An object with a key twice is refused: which one counts would be each reader's guess."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return obj


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python reads them, no receiver could


def fresh(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and abs(now - moment) <= TOLERANCE


# --- stored secrets: encrypted at rest --------------------------------------------------------------------------

_INFO = b"paywalls-relay webhook secrets v1"


def _fernet(material: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(material.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def _keys(settings: dict) -> MultiFernet:
    """RELAY_SECRET_KEY first, when set; the PAYWALLS_API_KEY-derived key too, so secrets sealed before
    RELAY_SECRET_KEY was set stay readable."""
    materials = [m for m in (settings.get("RELAY_SECRET_KEY"), settings.get("PAYWALLS_API_KEY")) if m]
    if not materials:
        raise RuntimeError("no key to encrypt webhook secrets with: set RELAY_SECRET_KEY")
    return MultiFernet([_fernet(m) for m in materials])


def seal(settings: dict, secret: str) -> str:
    return _keys(settings).encrypt(secret.encode("utf-8")).decode("ascii")


def unseal(settings: dict, sealed: str) -> str | None:
    """The secret, or None when no configured key opens it (the key it was sealed with was changed)."""
    try:
        return _keys(settings).decrypt(sealed.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        return None


def suffix(secret: str) -> str:
    """What `webhooks list` shows of a secret, as Paywalls shows its secretSuffix: the last 4 characters."""
    return secret[-4:]


def stored_secrets(session, settings: dict) -> list[str]:
    rows = session.execute(select(WebhookSubscription.id, WebhookSubscription.secret_encrypted)
                           .where(WebhookSubscription.deactivated_at.is_(None))).all()
    found = []
    for row in rows:
        secret = unseal(settings, row.secret_encrypted)
        if secret is None:
            # Never the secret itself: only which subscription cannot be read, and the fix.
            log.error("a stored webhook secret cannot be decrypted", extra={"fields": {
                "message": "webhook secret unreadable", "subscription": row.id,
                "fix": "restore RELAY_SECRET_KEY (or PAYWALLS_API_KEY) or run `paywalls-relay webhooks subscribe` again"}})
            continue
        found.append(secret)
    return found


# --- the intake --------------------------------------------------------------------------------------------------

@bp.post(PATH)
def intake():
    settings = current_app.config["RELAY"]
    raw = validation.read_body()  # 16 KiB at most, however it is framed (chunked too): 413
    with db.read() as session:
        keys = [s for s in [settings.get("PAYWALLS_WEBHOOK_SECRET")] if s] + stored_secrets(session, settings)
    if not keys:
        raise messages.webhooks_off()
    signature = request.headers.get(SIGNATURE_HEADER)
    # Refused signatures count against the sender's failed-authentication limit, as wrong tokens do; a valid one
    # always passes (Paywalls delivers from addresses it shares with everyone else it delivers for).
    limits = current_app.extensions["relay.ratelimits"]
    with limits.guarding_auth(request.remote_addr or "-", valid_always_pass=True):
        if not any(verify(secret, raw, signature) for secret in keys):
            raise messages.webhook_refused("signature" if signature else "signature_missing")
    now = clock.now()
    stamp = request.headers.get(TIMESTAMP_HEADER)
    if not fresh(parse_timestamp(stamp), now):
        raise messages.webhook_refused("timestamp" if stamp else "timestamp_missing")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise messages.malformed_body("The webhook body is not valid JSON.") from None
    event = events.normalize(body)
    if event["id"].startswith(events.RELAY_PREFIX):
        # The relay's own ids: taken from outside, one would silence the relay's own event of that id.
        raise messages.invalid_event([messages.field_error("id", messages.RESERVED_EVENT_ID)])
    with db.write() as connection:
        new = events.store(connection, event, "paywalls", now=now)
    if new:
        events.wake.set()  # committed: the delivery worker can see it now
    answer = {"received": True, "id": event["id"], "type": event["type"], "duplicate": not new}
    return Response(json.dumps(answer), 202 if new else 200, mimetype="application/json")



# --- registering with Paywalls (`paywalls-relay webhooks subscribe|list|unsubscribe`) --------------------------------

DEFAULT_EVENTS = ["paywall.balance.*"]  # every balance event: what the Zapier and n8n triggers listen for
MAX_EVENTS = 50


class RegistrationError(RuntimeError):
    """Paywalls refused or did not answer; the message says what to do, and never holds a secret."""


def _upstream():
    return current_app.extensions["relay.upstream"]


def _refused(what: str, outcome) -> RegistrationError:
    said = f" (Paywalls said: {outcome.message})" if outcome.message else ""
    status = f"HTTP {outcome.status}" if outcome.status else "no answer"
    return RegistrationError(f"Paywalls did not {what}: {status}{said}. Nothing was changed on the relay.")


def subscribe(session, settings: dict, url: str, event_types: list[str], description: str | None,
              now: datetime) -> dict:
    """Register `url` with Paywalls (POST /webhooks/subscriptions) and keep the whsec_ secret it returns, encrypted.
    What it returns, and what is printed, never holds the secret: only its last 4 characters."""
    body = {"url": url, "events": event_types}
    if description:
        body["description"] = description
    # One key per command run: its own retries are one subscription, while subscribing again after an unsubscribe
    # must make a new one, not replay the deactivated one.
    outcome = _upstream().call("POST", "/webhooks/subscriptions", json=body,
                               idempotency_key="whsub_" + secrets.token_hex(16))
    if outcome.kind != "ok":
        raise _refused("create the subscription", outcome)
    answer = outcome.body.get("data") if isinstance(outcome.body.get("data"), dict) else outcome.body
    subscription_id, secret = answer.get("id"), answer.get("secret")
    if not isinstance(subscription_id, str) or not subscription_id or len(subscription_id) > 100:
        raise RegistrationError("Paywalls created a subscription but its answer has no usable id: deactivate it in "
                                "Paywalls' dashboard, then run `paywalls-relay webhooks subscribe` again.")
    if not isinstance(secret, str) or not secret:
        raise RegistrationError(f"Paywalls created subscription {subscription_id} but its answer shows no secret, so "
                                "the relay could not verify its deliveries. Copy the secret from Paywalls' dashboard "
                                "into PAYWALLS_WEBHOOK_SECRET, or unsubscribe it and try again.")
    row = session.get(WebhookSubscription, subscription_id) or WebhookSubscription(id=subscription_id)
    row.url, row.events = answer.get("url") or url, answer.get("events") or event_types
    row.secret_encrypted, row.secret_suffix = seal(settings, secret), suffix(secret)
    row.created_at, row.deactivated_at = now, None
    session.add(row)
    events.webhooks_configured.forget()
    return describe_subscription(row)


def describe_subscription(row: WebhookSubscription, remote: dict | None = None) -> dict:
    described = {"id": row.id, "url": row.url, "events": row.events, "secret": f"…{row.secret_suffix}",
                 "active": row.deactivated_at is None,
                 "created_at": dates_iso(row.created_at), "deactivated_at": dates_iso(row.deactivated_at)}
    if remote is not None:
        described["paywalls_active"] = remote.get("active")
    return described


def dates_iso(moment: datetime | None) -> str | None:
    from .tokens import iso
    return iso(moment)


def list_subscriptions(session) -> tuple[list[dict], list[dict], str | None]:
    """(the relay's subscriptions, with Paywalls' active flag when it answers; Paywalls' other subscriptions,
    registered elsewhere; why Paywalls could not be asked, or None)."""
    outcome = _upstream().call("GET", "/webhooks/subscriptions")
    remote, problem = {}, None
    if outcome.kind == "ok":
        items = outcome.body.get("data") if isinstance(outcome.body.get("data"), list) else []
        remote = {item["id"]: item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)}
    else:
        problem = _refused("list subscriptions", outcome).args[0].replace(" Nothing was changed on the relay.", "")
    rows = list(session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.created_at)))
    ours = [describe_subscription(row, remote.get(row.id, {"active": None}) if remote or problem is None else None)
            for row in rows]
    known = {row.id for row in rows}
    others = [{"id": item["id"], "url": item.get("url"), "events": item.get("events"),
               "secret": f"…{item['secretSuffix']}" if item.get("secretSuffix") else None, "active": item.get("active")}
              for item in remote.values() if item["id"] not in known]
    return ours, others, problem


def unsubscribe(session, subscription_id: str, now: datetime) -> dict:
    """Deactivate the subscription at Paywalls (DELETE), then stop trusting its secret here. A subscription
    Paywalls no longer knows (404) is deactivated here all the same."""
    row = session.get(WebhookSubscription, subscription_id)
    if row is None:
        raise RegistrationError(f"No subscription {subscription_id} was registered by this relay; "
                                "`paywalls-relay webhooks list` shows them.")
    outcome = _upstream().call("DELETE", f"/webhooks/subscriptions/{subscription_id}")
    if outcome.kind != "ok" and outcome.status != 404:
        raise _refused("deactivate the subscription", outcome)
    row.deactivated_at = row.deactivated_at or now
    events.webhooks_configured.forget()
    return {**describe_subscription(row), "paywalls_answer": outcome.status}
