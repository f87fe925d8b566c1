"""The key contract: how an operation's identity is derived from its fields (schemas/idempotency.md).

Pure functions, no database. The derivation is shared byte for byte with the Zapier app and the
n8n node; schemas/idempotency-vectors.json is its test.

Three keys name one money operation:
- the **event key**: derived from the fields the token's `dedupe_on` names. It is what makes two
  requests the same event, whatever headers they carry (the rule (a) of schemas/idempotency.md);
- the **client key**: the request's `Idempotency-Key` header, if any. It is bound to the event it
  first named, so it can never name a second one (rule (b));
- the **upstream key**: what the relay sends to Paywalls, deterministic per stored event, so every
  retry of one event re-sends the same key.
"""

import hashlib
import math
import re
from decimal import Decimal

import rfc8785

from . import amounts, messages

DEFAULT_FIELDS = ("user", "amount", "metadata")
KEY_PREFIX = "pwk1_"
# The dedupe paths the derivation accepts: the token settings' rule (schemas/token-settings.json, dedupe_on).
PATH = re.compile(r"(?:user|amount|metadata(?:\.[^.\s]+)*)")
# An amount's text as the spec reads it: ASCII digits, an optional fraction. No sign, exponent, leading dot,
# blank or other digits (Decimal would take "１０" and " 10"; JavaScript's Number would not).
AMOUNT_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class Underivable(ValueError):
    """The fields cannot be turned into a key (schemas/idempotency.md, "Refusals"). `field` names the culprit:
    "amount", "user" or "path". The clients then send the body without an Idempotency-Key, and the relay's
    validation answers 422 naming the field."""

    def __init__(self, field: str, value):
        super().__init__(f"{field} cannot be part of an idempotency key: {value!r}")
        self.field = field


def value_at(body, path: str):
    value = body
    for segment in path.split("."):
        if not isinstance(value, dict) or segment not in value:
            return None
        value = value[segment]
    return value


def canonical_amount(value) -> str:
    """The amount's canonical text for a key, or Underivable: what every implementation must refuse alike."""
    if isinstance(value, str):
        if not AMOUNT_TEXT.fullmatch(value):
            raise Underivable("amount", value)
    elif isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise Underivable("amount", value)
    elif isinstance(value, float) and not (math.isfinite(value) and (value == 0 or 1e-6 <= abs(value) < 1e21)):
        # JavaScript's String(n) writes these with an exponent (1e-7, 1e+21): not a decimal text.
        raise Underivable("amount", value)
    elif isinstance(value, Decimal) and not value.is_finite():
        raise Underivable("amount", value)
    if not isinstance(value, str) and value < 0:
        raise Underivable("amount", value)  # a sign (canonical text has none)
    text = amounts.canonical(value)
    if text == "0":
        raise Underivable("amount", value)  # zero is no amount
    return text


def derive_key(op: str, body: dict, fields=DEFAULT_FIELDS) -> str:
    # A body whose amount or user no implementation can read alike has no key, whichever fields are picked.
    amount = canonical_amount(body["amount"]) if body.get("amount") is not None else None
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise Underivable("user", body["user"])
    picked = {}
    for path in fields:
        if not isinstance(path, str) or not PATH.fullmatch(path):
            raise Underivable("path", path)
        picked[path] = amount if path == "amount" else value_at(body, path)
    document = {"v": 1, "op": op, "fields": picked}
    return KEY_PREFIX + hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def fingerprint(op: str, body: dict) -> str:
    """The whole body's identity: two requests of one event must agree on it, or the second is refused."""
    return derive_key(op, body, DEFAULT_FIELDS)


def event_key(token, op: str, body: dict, body_fingerprint: str) -> str:
    if tuple(token.dedupe_on) == DEFAULT_FIELDS:
        return body_fingerprint  # the same derivation, computed once
    return derive_key(op, body, token.dedupe_on)


def scope_of(token) -> str:
    """Where a token's keys live: its own id, or the namespace it shares with other tokens."""
    return f"ns:{token.namespace}" if token.namespace else token.id


def header_key(value: str | None) -> str | None:
    """The client's Idempotency-Key, bare or as a structured-field string; None when absent."""
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not 1 <= len(value) <= 255 or not all(" " <= ch <= "~" for ch in value):
        raise messages.bad_idempotency_key()
    return value


def upstream_key(scope: str, key: str, generation: int, nonce: str | None = None) -> str:
    """Deterministic for one stored event, so a retry after a crash or an ambiguous answer re-sends the same
    key. The nonce is drawn when the event's row is created: once a purge has forgotten an event, the same
    fields make a genuinely new call, never one that Paywalls would answer from its own store as a replay
    of the old one (and that the ledger would then record as a second credit). Rows from before the nonce
    existed keep the key they were sent with."""
    seed = f"{scope}\n{key}\n{generation}" + (f"\n{nonce}" if nonce else "")
    return "pwr1_" + hashlib.sha256(seed.encode()).hexdigest()
