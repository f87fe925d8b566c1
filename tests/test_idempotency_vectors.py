"""The derivation contract (schemas/idempotency.md) in Python, against the shared vectors."""

import hashlib
import importlib.util
import json
import pathlib

import pytest

from relay.keys import Underivable, derive_key

ROOT = pathlib.Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "schemas" / "idempotency-vectors.json").read_text(encoding="utf-8"))["vectors"]


def test_there_are_at_least_40_vectors_covering_the_required_cases():
    assert len(VECTORS) >= 40
    names = " ".join(v["name"] for v in VECTORS)
    for topic in ("unicode", "nested", "reordered", "10.00", "0.50", "JSON integer", "metadata integer",
                  "metadata decimals", "missing", "custom fields", "charge"):
        assert topic in names, topic


def _derive(vector):
    fields = vector.get("fields")
    return derive_key(vector["op"], vector["body"], fields) if fields is not None else derive_key(vector["op"], vector["body"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector):
    assert ("expected" in vector) != ("expected_error" in vector)
    if "expected_error" in vector:
        with pytest.raises(Underivable) as refusal:
            _derive(vector)
        assert {"error": refusal.value.field} == vector["expected_error"]
    else:
        assert _derive(vector) == vector["expected"]
    for path in vector.get("undefined", []):  # JavaScript sets these to undefined; Python has no such value
        assert path.split(".")[-1] not in (vector["body"].get(path.split(".")[0]) or {})


def test_the_first_54_vectors_keep_their_keys():
    """Issue 14 added edge cases after them; the original happy-path keys are the contract clients already use."""
    assert len(VECTORS) > 54
    assert all("expected" in v and not v["name"].startswith("edge:") for v in VECTORS[:54])
    assert VECTORS[0]["expected"] == "pwk1_23796412dee8f910f94aff612292232721d08e88ce68cae9c6cfb53260ae9d5f"
    assert all(v["name"].startswith("edge:") for v in VECTORS[54:])


def test_edge_vectors_cover_what_issue_14_lists():
    names = " ".join(v["name"] for v in VECTORS[54:])
    for topic in ("exponent", "sign", "leading dot", "space", "null", "user number", "NFD", "path with a",
                  "empty object", "undefined", "zero"):
        assert topic in names, topic
    assert {v["expected_error"]["error"] for v in VECTORS if "expected_error" in v} == {"amount", "user", "path"}


def test_one_vector_by_hand():
    """Independent of rfc8785: the canonical bytes written out literally."""
    canonical = '{"fields":{"amount":"10","metadata":null,"user":"acme:user_123"},"op":"deposit","v":1}'
    expected = "pwk1_" + hashlib.sha256(canonical.encode()).hexdigest()
    assert expected == VECTORS[0]["expected"] == derive_key("deposit", {"user": "acme:user_123", "amount": "10.00"})


def test_equal_and_different_cases():
    by_name = {v["name"]: v["expected"] for v in VECTORS if "expected" in v}
    assert by_name["basic deposit"] == by_name["amount 10.0 equals 10"] == by_name["amount 10.00 equals 10"] \
        == by_name["amount as JSON integer"]
    assert by_name["with metadata"] == by_name["metadata keys reordered"]
    assert by_name["with metadata"] != by_name["another invoice id"]
    assert by_name["basic deposit"] != by_name["charge differs from deposit"]
    assert by_name["metadata integer"] == by_name["metadata 5.0 is the number 5"] != by_name["metadata string 5 differs"]
    assert by_name["custom fields: invoice only"] == by_name["custom fields: invoice only, other amount"]
    assert by_name["edge: amount JSON number 1.5e2 is 150"] == by_name["edge: amount 150 string equals the number"]
    assert by_name["edge: amount null is null like a missing one"] == by_name["missing amount is null"]
    assert by_name["edge: user null is null like a missing one"] != by_name["edge: user u1 without spaces"]
    assert by_name["edge: user with spaces is not trimmed"] != by_name["edge: user u1 without spaces"]
    assert by_name["edge: unicode NFC user"] != by_name["edge: unicode NFD user is another key"]
    assert by_name["edge: unicode NFC metadata value"] != by_name["edge: unicode NFD metadata value is another key"]
    assert by_name["edge: metadata null equals absent"] == by_name["edge: metadata absent"] \
        != by_name["edge: metadata empty object differs from absent"]
    assert by_name["edge: metadata with an undefined member equals without it"] == by_name["edge: metadata reference r1"]
    assert by_name["edge: metadata null value is kept as null"] != by_name["edge: metadata reference r1"]


def test_committed_file_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts" / "make_idempotency_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "schemas" / "idempotency-vectors.json").read_text(encoding="utf-8") == module.render()
