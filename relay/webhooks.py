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
from datetime import datetime, timedelta, timezone

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Blueprint, Response, current_app, request
from sqlalchemy import select

from . import clock, dates, db, events, messages
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
    raw = request.get_data(cache=False)
    with db.read() as session:
        secrets_ = [s for s in [settings.get("PAYWALLS_WEBHOOK_SECRET")] if s] + stored_secrets(session, settings)
    if not secrets_:
        raise messages.webhooks_off()
    signature = request.headers.get(SIGNATURE_HEADER)
    if not any(verify(secret, raw, signature) for secret in secrets_):
        raise messages.webhook_refused("signature" if signature else "signature_missing")
    now = clock.now()
    stamp = request.headers.get(TIMESTAMP_HEADER)
    if not fresh(parse_timestamp(stamp), now):
        raise messages.webhook_refused("timestamp" if stamp else "timestamp_missing")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise messages.malformed_body("The webhook body is not valid JSON.") from None
    event = events.normalize(body)
    with db.write() as connection:
        new = events.store(connection, event, "paywalls", now=now)
    if new:
        events.wake.set()  # committed: the delivery worker can see it now
    answer = {"received": True, "id": event["id"], "type": event["type"], "duplicate": not new}
    return Response(json.dumps(answer), 202 if new else 200, mimetype="application/json")

