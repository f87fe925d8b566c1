"""The derivation contract (schemas/idempotency.md) in Python, against the shared vectors."""

import hashlib
import importlib.util
import json
import pathlib

import pytest

from relay.keys import derive_key

ROOT = pathlib.Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "schemas" / "idempotency-vectors.json").read_text(encoding="utf-8"))["vectors"]


def test_there_are_at_least_40_vectors_covering_the_required_cases():
    assert len(VECTORS) >= 40
    names = " ".join(v["name"] for v in VECTORS)
    for topic in ("unicode", "nested", "reordered", "10.00", "0.50", "JSON integer", "metadata integer",
                  "metadata decimals", "missing", "custom fields", "charge"):
        assert topic in names, topic


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector):
    fields = vector.get("fields")
    key = derive_key(vector["op"], vector["body"], fields) if fields is not None else derive_key(vector["op"], vector["body"])
    assert key == vector["expected"]


def test_one_vector_by_hand():
    """Independent of rfc8785: the canonical bytes written out literally."""
    canonical = '{"fields":{"amount":"10","metadata":null,"user":"acme:user_123"},"op":"deposit","v":1}'
    expected = "pwk1_" + hashlib.sha256(canonical.encode()).hexdigest()
    assert expected == VECTORS[0]["expected"] == derive_key("deposit", {"user": "acme:user_123", "amount": "10.00"})


def test_equal_and_different_cases():
    by_name = {v["name"]: v["expected"] for v in VECTORS}
    assert by_name["basic deposit"] == by_name["amount 10.0 equals 10"] == by_name["amount 10.00 equals 10"] \
        == by_name["amount as JSON integer"]
    assert by_name["with metadata"] == by_name["metadata keys reordered"]
    assert by_name["with metadata"] != by_name["another invoice id"]
    assert by_name["basic deposit"] != by_name["charge differs from deposit"]
    assert by_name["metadata integer"] == by_name["metadata 5.0 is the number 5"] != by_name["metadata string 5 differs"]
    assert by_name["custom fields: invoice only"] == by_name["custom fields: invoice only, other amount"]


def test_committed_file_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts" / "make_idempotency_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "schemas" / "idempotency-vectors.json").read_text(encoding="utf-8") == module.render()
