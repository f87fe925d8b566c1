"""Write schemas/idempotency-vectors.json from the cases below and the Python derivation.

The Zapier and n8n implementations are tested against the file, so any drift between the
three languages shows up as a failing vector. tests/test_idempotency_vectors.py checks
that the committed file is exactly what this script writes.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from relay.keys import Underivable, derive_key  # noqa: E402

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

# Edge and invalid inputs (issue 14): what each implementation must canonicalise alike, or refuse alike. A refusal
# is {"error": "amount" | "user" | "path"}: the clients then send the body without an Idempotency-Key, and the
# relay's validation answers 422 naming the field. Extra keys per case: "undefined" lists body paths a JavaScript
# test sets to `undefined` before deriving (JSON cannot carry it; it must derive as if absent).
EDGE_CASES = [
    # amounts: only plain decimal text, or a JSON number whose shortest text is plain decimal
    ("edge: amount exponent string 1.5e2 refused", "deposit", {"user": "u1", "amount": "1.5e2"}),
    ("edge: amount exponent string 1E2 refused", "deposit", {"user": "u1", "amount": "1E2"}),
    ("edge: amount JSON number 1.5e2 is 150", "deposit", {"user": "u1", "amount": 150.0}),
    ("edge: amount 150 string equals the number", "deposit", {"user": "u1", "amount": "150"}),
    ("edge: amount sign -3.10 refused", "deposit", {"user": "u1", "amount": "-3.10"}),
    ("edge: amount sign +5 refused", "deposit", {"user": "u1", "amount": "+5"}),
    ("edge: amount negative number refused", "deposit", {"user": "u1", "amount": -3.1}),
    ("edge: amount leading dot .5 refused", "deposit", {"user": "u1", "amount": ".5"}),
    ("edge: amount trailing dot 5. refused", "deposit", {"user": "u1", "amount": "5."}),
    ("edge: amount leading space refused", "deposit", {"user": "u1", "amount": " 10"}),
    ("edge: amount trailing newline refused", "deposit", {"user": "u1", "amount": "10\n"}),
    ("edge: amount empty string refused", "deposit", {"user": "u1", "amount": ""}),
    ("edge: amount thousands separator refused", "deposit", {"user": "u1", "amount": "1,000"}),
    ("edge: amount fullwidth digits refused", "deposit", {"user": "u1", "amount": "\uff11\uff10"}),
    ("edge: amount arabic-indic digits refused", "deposit", {"user": "u1", "amount": "\u0663"}),
    ("edge: amount NaN text refused", "deposit", {"user": "u1", "amount": "NaN"}),
    ("edge: amount Infinity text refused", "deposit", {"user": "u1", "amount": "Infinity"}),
    ("edge: amount zero string refused", "deposit", {"user": "u1", "amount": "0"}),
    ("edge: amount zero 0.00 refused", "deposit", {"user": "u1", "amount": "0.00"}),
    ("edge: amount zero number refused", "deposit", {"user": "u1", "amount": 0}),
    ("edge: amount boolean refused", "deposit", {"user": "u1", "amount": True}),
    ("edge: amount object refused", "deposit", {"user": "u1", "amount": {"value": "10"}}),
    ("edge: amount list refused", "deposit", {"user": "u1", "amount": ["10"]}),
    ("edge: amount tiny number 1e-7 refused", "deposit", {"user": "u1", "amount": 1e-7}),
    ("edge: amount huge number 1e21 refused", "deposit", {"user": "u1", "amount": 1e21}),
    ("edge: amount number 0.000001 is plain", "deposit", {"user": "u1", "amount": 0.000001}),
    ("edge: amount more decimals than a relay allows still derives", "deposit", {"user": "u1", "amount": "1.234"}),
    ("edge: amount null is null like a missing one", "deposit", {"user": "u5", "amount": None}),
    ("edge: amount refused even when amount is not a dedupe field", "deposit",
     {"user": "u1", "amount": "-1", "metadata": {"reference": "r1"}}, ["user", "metadata.reference"]),
    ("edge: amount refused under a custom field list naming it", "deposit",
     {"user": "u1", "amount": ".5"}, ["user", "amount"]),
    # users: text as it is (no trimming, no unicode normalisation); other types refused
    ("edge: user number refused", "deposit", {"user": 123, "amount": "1"}),
    ("edge: user boolean refused", "deposit", {"user": False, "amount": "1"}),
    ("edge: user object refused", "deposit", {"user": {"id": "u1"}, "amount": "1"}),
    ("edge: user null is null like a missing one", "deposit", {"user": None, "amount": "1"}),
    ("edge: user with spaces is not trimmed", "deposit", {"user": " u1 ", "amount": "1"}),
    ("edge: user u1 without spaces", "deposit", {"user": "u1", "amount": "1"}),
    ("edge: unicode NFC user", "deposit", {"user": "caf\u00e9", "amount": "1"}),
    ("edge: unicode NFD user is another key", "deposit", {"user": "cafe\u0301", "amount": "1"}),
    ("edge: unicode NFC metadata value", "deposit", {"user": "u1", "amount": "1", "metadata": {"note": "\u00c5"}}),
    ("edge: unicode NFD metadata value is another key", "deposit",
     {"user": "u1", "amount": "1", "metadata": {"note": "A\u030a"}}),
    # metadata: {} is a value, null and absent are the same null; undefined members are absent
    ("edge: metadata absent", "deposit", {"user": "u1", "amount": "1"}),
    ("edge: metadata null equals absent", "deposit", {"user": "u1", "amount": "1", "metadata": None}),
    ("edge: metadata empty object differs from absent", "deposit", {"user": "u1", "amount": "1", "metadata": {}}),
    ("edge: metadata with an undefined member equals without it", "deposit",
     {"user": "u1", "amount": "1", "metadata": {"reference": "r1"}}, None, {"undefined": ["metadata.note"]}),
    ("edge: metadata reference r1", "deposit", {"user": "u1", "amount": "1", "metadata": {"reference": "r1"}}),
    ("edge: metadata null value is kept as null", "deposit",
     {"user": "u1", "amount": "1", "metadata": {"reference": "r1", "note": None}}),
    ("edge: metadata string values are not trimmed", "deposit",
     {"user": "u1", "amount": "1", "metadata": {"reference": " r1 "}}),
    # dedupe paths: exact names, no whitespace, no empty segment
    ("edge: path with a leading space refused", "deposit", {"user": "u1", "amount": "1"}, [" user"]),
    ("edge: path with a trailing space refused", "deposit", {"user": "u1", "amount": "1"}, ["user "]),
    ("edge: path with a space inside a key refused", "deposit",
     {"user": "u1", "amount": "1", "metadata": {"invoice id": "in_1"}}, ["metadata.invoice id"]),
    ("edge: path with a space after the dot refused", "deposit",
     {"user": "u1", "amount": "1", "metadata": {"reference": "r1"}}, ["user", "metadata. reference"]),
    ("edge: path empty refused", "deposit", {"user": "u1", "amount": "1"}, [""]),
    ("edge: path with an empty segment refused", "deposit", {"user": "u1", "amount": "1"}, ["metadata..reference"]),
    ("edge: path with a trailing dot refused", "deposit", {"user": "u1", "amount": "1"}, ["metadata."]),
    ("edge: path unknown field refused", "deposit", {"user": "u1", "amount": "1"}, ["reference"]),
    ("edge: path is case-sensitive", "deposit", {"user": "u1", "amount": "1"}, ["User"]),
    ("edge: path not a string refused", "deposit", {"user": "u1", "amount": "1"}, [None]),
    ("edge: path metadata key with unicode letters", "deposit",
     {"user": "u1", "amount": "1", "metadata": {"r\u00e9f": "r1"}}, ["user", "metadata.r\u00e9f"]),
]


def build():
    vectors = []
    for case in CASES + EDGE_CASES:
        name, op, body, *rest = case
        fields = rest[0] if rest else None
        vector = {"name": name, "op": op, "body": body}
        if fields is not None:
            vector["fields"] = fields
        vector.update(rest[1] if len(rest) > 1 else {})
        try:
            vector["expected"] = derive_key(op, body, fields) if fields is not None else derive_key(op, body)
        except Underivable as refusal:
            vector["expected_error"] = {"error": refusal.field}
        vectors.append(vector)
    return {"version": 1, "spec": "schemas/idempotency.md", "vectors": vectors}


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {len(CASES) + len(EDGE_CASES)} vectors to {OUT}")
