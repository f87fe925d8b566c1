"""Idempotency: the field-derived key (schemas/idempotency.md) and the claim on it.

The derivation is a product contract shared byte for byte with the Zapier app and the
n8n node; schemas/idempotency-vectors.json is its test.
"""

import hashlib

import rfc8785

from . import amounts

DEFAULT_FIELDS = ("user", "amount", "metadata")
KEY_PREFIX = "pwk1_"


def value_at(body, path: str):
    value = body
    for segment in path.split("."):
        if not isinstance(value, dict) or segment not in value:
            return None
        value = value[segment]
    return value


def derive_key(op: str, body: dict, fields=DEFAULT_FIELDS) -> str:
    picked = {}
    for path in fields:
        value = value_at(body, path)
        if path == "amount" and value is not None:
            value = amounts.canonical(value)
        picked[path] = value
    document = {"v": 1, "op": op, "fields": picked}
    return KEY_PREFIX + hashlib.sha256(rfc8785.dumps(document)).hexdigest()
