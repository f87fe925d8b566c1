"""Write schemas/idempotency-vectors.json from the cases below and the Python derivation.

The Zapier and n8n implementations are tested against the file, so any drift between the
three languages shows up as a failing vector. tests/test_idempotency_vectors.py checks
that the committed file is exactly what this script writes.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from relay.keys import derive_key  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "schemas" / "idempotency-vectors.json"

INV = {"reason": "subscription_renewal", "invoice_id": "in_1Q2w3E4r"}
CASES = [
    ("basic deposit", "deposit", {"user": "acme:user_123", "amount": "10"}),
    ("amount 10.0 equals 10", "deposit", {"user": "acme:user_123", "amount": "10.0"}),
    ("amount 10.00 equals 10", "deposit", {"user": "acme:user_123", "amount": "10.00"}),
    ("amount as JSON integer", "deposit", {"user": "acme:user_123", "amount": 10}),
    ("amount as JSON decimal 10.5", "deposit", {"user": "acme:user_123", "amount": 10.5}),
    ("amount 10.50 string", "deposit", {"user": "acme:user_123", "amount": "10.50"}),
    ("amount 0.50", "deposit", {"user": "u1", "amount": "0.50"}),
    ("amount 0.5", "deposit", {"user": "u1", "amount": "0.5"}),
    ("amount 0.25 number", "deposit", {"user": "u1", "amount": 0.25}),
    ("amount 7 number", "deposit", {"user": "u1", "amount": 7}),
    ("amount 7.5", "deposit", {"user": "u1", "amount": "7.5"}),
    ("amount 7.50", "deposit", {"user": "u1", "amount": "7.50"}),
    ("amount leading zeros", "deposit", {"user": "u1", "amount": "007.50"}),
    ("amount six decimals", "deposit", {"user": "u1", "amount": "0.000001"}),
    ("amount large", "deposit", {"user": "u1", "amount": "999999999.99"}),
    ("amount 100 keeps integer zeros", "deposit", {"user": "u1", "amount": "100"}),
    ("with metadata", "deposit", {"user": "acme:user_123", "amount": "20", "metadata": INV}),
    ("metadata keys reordered", "deposit",
     {"user": "acme:user_123", "amount": "20", "metadata": {"invoice_id": "in_1Q2w3E4r", "reason": "subscription_renewal"}}),
    ("another invoice id", "deposit",
     {"user": "acme:user_123", "amount": "20", "metadata": {"reason": "subscription_renewal", "invoice_id": "in_9Z8y7X6w"}}),
    ("empty metadata differs from none", "deposit", {"user": "acme:user_123", "amount": "20", "metadata": {}}),
    ("nested metadata", "deposit",
     {"user": "u2", "amount": "5", "metadata": {"stripe": {"invoice": "in_1", "period": {"start": "2026-11-01", "end": "2026-12-01"}}, "plan": "pro"}}),
    ("nested metadata reordered", "deposit",
     {"user": "u2", "amount": "5", "metadata": {"plan": "pro", "stripe": {"period": {"end": "2026-12-01", "start": "2026-11-01"}, "invoice": "in_1"}}}),
    ("metadata integer", "deposit", {"user": "u3", "amount": "1", "metadata": {"seats": 5}}),
    ("metadata 5.0 is the number 5", "deposit", {"user": "u3", "amount": "1", "metadata": {"seats": 5.0}}),
    ("metadata string 5 differs", "deposit", {"user": "u3", "amount": "1", "metadata": {"seats": "5"}}),
    ("metadata decimals", "deposit", {"user": "u3", "amount": "1", "metadata": {"rate": 0.1, "share": 2.5, "tiny": 1e-7}}),
    ("metadata large number", "deposit", {"user": "u3", "amount": "1", "metadata": {"big": 1e21, "safe": 9007199254740991}}),
    ("metadata negative zero", "deposit", {"user": "u3", "amount": "1", "metadata": {"z": -0.0}}),
    ("metadata booleans, null and arrays", "deposit",
     {"user": "u3", "amount": "1", "metadata": {"flag": True, "none": None, "tags": ["b", "a", 1]}}),
    ("metadata unicode keys sort by UTF-16", "deposit",
     {"user": "u3", "amount": "1", "metadata": {"\uff41": 1, "\U0001f600": 2, "\u00e9": 3, "z": 4}}),
    ("metadata escapes", "deposit",
     {"user": "u3", "amount": "1", "metadata": {"note": "line1\nline2\t\"quoted\" \\ \u0001 </script>"}}),
    ("unicode user", "deposit", {"user": "caf\u00e9:\u00fcser", "amount": "3"}),
    ("emoji user", "deposit", {"user": "\U0001f600-user", "amount": "3"}),
    ("cjk metadata", "deposit", {"user": "u4", "amount": "3", "metadata": {"reason": "\u8fd4\u91d1"}}),
    ("charge differs from deposit", "charge", {"user": "acme:user_123", "amount": "10"}),
    ("charge with metadata", "charge", {"user": "acme:user_123", "amount": "2.50", "metadata": {"job": "render-42"}}),
    ("charge amount number", "charge", {"user": "acme:user_123", "amount": 2.5, "metadata": {"job": "render-42"}}),
    ("missing amount is null", "deposit", {"user": "u5"}),
    ("missing user is null", "deposit", {"amount": "1"}),
    ("empty body", "deposit", {}),
    ("custom fields: invoice only", "deposit",
     {"user": "acme:user_123", "amount": "20", "metadata": INV}, ["user", "metadata.invoice_id"]),
    ("custom fields: invoice only, other amount", "deposit",
     {"user": "acme:user_123", "amount": "25", "metadata": INV}, ["user", "metadata.invoice_id"]),
    ("custom fields: order does not matter", "deposit",
     {"user": "acme:user_123", "amount": "20", "metadata": INV}, ["metadata.invoice_id", "user"]),
    ("custom fields: duplicate path once", "deposit",
     {"user": "acme:user_123", "amount": "20", "metadata": INV}, ["user", "user", "metadata.invoice_id"]),
    ("custom fields: missing metadata key is null", "deposit",
     {"user": "acme:user_123", "amount": "20", "metadata": {"reason": "goodwill"}}, ["user", "metadata.invoice_id"]),
    ("custom fields: no metadata at all", "deposit",
     {"user": "acme:user_123", "amount": "20"}, ["user", "metadata.invoice_id"]),
    ("custom fields: path through a non-object is null", "deposit",
     {"user": "u6", "amount": "1", "metadata": {"invoice_id": "in_1"}}, ["user", "metadata.invoice_id.number"]),
    ("custom fields: nested path", "deposit",
     {"user": "u2", "amount": "5", "metadata": {"stripe": {"invoice": "in_1"}}}, ["metadata.stripe.invoice"]),
    ("custom fields: amount canonical 12.50", "deposit", {"user": "u7", "amount": "12.50"}, ["user", "amount"]),
    ("custom fields: amount canonical 12.5 number", "deposit", {"user": "u7", "amount": 12.5}, ["user", "amount"]),
    ("custom fields: user and amount ignore metadata", "deposit",
     {"user": "u7", "amount": "12.5", "metadata": {"note": "anything"}}, ["user", "amount"]),
    ("custom fields: empty list", "deposit", {"user": "u8", "amount": "1"}, []),
    ("custom fields: user only on charge", "charge", {"user": "u8", "amount": "1"}, ["user"]),
    ("custom fields: whole metadata object", "deposit",
     {"user": "u9", "amount": "1", "metadata": {"b": 2, "a": 1}}, ["metadata"]),
]


def build():
    vectors = []
    for case in CASES:
        name, op, body, *rest = case
        vector = {"name": name, "op": op, "body": body}
        if rest:
            vector["fields"] = rest[0]
            vector["expected"] = derive_key(op, body, rest[0])
        else:
            vector["expected"] = derive_key(op, body)
        vectors.append(vector)
    return {"version": 1, "spec": "schemas/idempotency.md", "vectors": vectors}


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {len(CASES)} vectors to {OUT}")
