"""relay/contract.py: a step's inputs to the request a client sends, by schemas/client-contract.json."""

import pytest

from relay import contract, keys
from relay.contract import ContractError, build_request

BASE = {"user": "acme:u1", "amount": "10", "reference": "in_1"}


def refusal(op, inputs) -> ContractError:
    with pytest.raises(ContractError) as raised:
        build_request(op, inputs)
    return raised.value


def test_a_plain_step_is_the_body_the_fields_and_the_key():
    request = build_request("deposit", {**BASE, "reason": "goodwill"})
    assert (request.method, request.path) == ("POST", "/v1/user/balance/deposit")
    assert request.body == {"user": "acme:u1", "amount": "10", "metadata": {"reason": "goodwill", "reference": "in_1"}}
    assert request.fields == ["user", "amount", "metadata"] and request.query == {} and not request.dry_run
    assert request.key == keys.derive_key("deposit", request.body)
    assert build_request("charge", BASE).path == "/v1/user/charge"


def test_text_inputs_are_trimmed_and_numbers_kept():
    request = build_request("deposit", {"user": " acme:u1\t", "amount": " 10.50 ", "reference": " in_1 ", "reason": " "})
    assert request.body == {"user": "acme:u1", "amount": "10.50", "metadata": {"reference": "in_1"}}
    assert build_request("deposit", {**BASE, "amount": 7.5}).body["amount"] == 7.5


@pytest.mark.parametrize("reference", [None, "", "   "])
def test_no_reference_no_call(reference):
    error = refusal("deposit", {**BASE, "reference": reference})
    assert error.code == "reference-required"
    assert error.message == contract.contract()["client_errors"]["reference-required"]
    assert refusal("charge", {**BASE, "reference": reference}).code == "reference-required"


def test_extra_metadata_rows_are_trimmed_and_empty_ones_dropped():
    request = build_request("deposit", {**BASE, "extra_metadata": {" plan ": " pro ", "empty": "", "none": None,
                                                                   "blank": "  ", "seats": 5}})
    assert request.body["metadata"] == {"plan": "pro", "seats": 5, "reference": "in_1"}


@pytest.mark.parametrize("row", ["reference", " reference ", "reason"])
def test_a_row_named_like_a_set_field_is_refused_whatever_its_value(row):
    error = refusal("deposit", {**BASE, "reason": "goodwill", "extra_metadata": {row: "in_1"}})
    assert error.code == "metadata-clash"
    label = "Reason" if row == "reason" else "Reference"
    assert error.message == (f"Extra Metadata has a row named {row.strip()}, which has its own field. Set it in the "
                             f"{label} field and remove the row.")


def test_a_row_named_reason_is_the_reason_when_the_field_is_empty():
    assert build_request("deposit", {**BASE, "extra_metadata": {"reason": "promo"}}).body["metadata"] == \
        {"reason": "promo", "reference": "in_1"}
    # An empty row is dropped before it could clash.
    assert build_request("deposit", {**BASE, "extra_metadata": {"reference": ""}}).body["metadata"] == {"reference": "in_1"}


def test_blank_and_duplicate_keys_are_refused():
    assert refusal("deposit", {**BASE, "extra_metadata": {"  ": "x"}}).code == "metadata-blank-key"
    assert build_request("deposit", {**BASE, "extra_metadata": {"  ": ""}}).body["metadata"] == {"reference": "in_1"}
    error = refusal("deposit", {**BASE, "extra_metadata": {"plan": "a", " plan": "b"}})
    assert error.code == "metadata-duplicate-key" and "plan" in error.message


@pytest.mark.parametrize("preset, fields", [(None, ["user", "amount", "metadata"]), ("", ["user", "amount", "metadata"]),
                                            ("all", ["user", "amount", "metadata"]),
                                            ("reference", ["user", "metadata.reference"]),
                                            ("amount_reference", ["user", "amount", "metadata.reference"])])
def test_presets(preset, fields):
    request = build_request("deposit", {**BASE, "dedupe_on": preset, "custom_dedupe_fields": "user"})
    assert request.fields == fields and request.key == keys.derive_key("deposit", request.body, fields)


def test_custom_fields_are_parsed_and_checked():
    request = build_request("deposit", {**BASE, "dedupe_on": "custom", "custom_dedupe_fields": " user , ,metadata.reference,"})
    assert request.fields == ["user", "metadata.reference"]
    assert refusal("deposit", {**BASE, "dedupe_on": "custom", "custom_dedupe_fields": " , "}).code == \
        "custom-dedupe-fields-empty"
    assert refusal("deposit", {**BASE, "dedupe_on": "custom"}).code == "custom-dedupe-fields-empty"
    error = refusal("deposit", {**BASE, "dedupe_on": "custom", "custom_dedupe_fields": "user, metadata.invoice id"})
    assert error.code == "custom-dedupe-field-invalid" and '"metadata.invoice id"' in error.message
    error = refusal("deposit", {**BASE, "dedupe_on": "everything"})
    assert error.message == 'Deduplicate On "everything" is not one of: all, reference, amount_reference, custom.'


def test_an_amount_the_derivation_refuses_is_sent_without_a_key():
    for amount in ("1.5e2", "-3", ".5", "0", "", "ten"):
        request = build_request("deposit", {**BASE, "amount": amount})
        assert request.key is None and request.body["amount"] == amount


@pytest.mark.parametrize("value, on", [(True, True), ("true", True), (" Yes ", True), ("1", True), (False, False),
                                       (None, False), ("false", False), ("", False), ("no", False)])
def test_dry_run(value, on):
    request = build_request("deposit", {**BASE, "dry_run": value})
    assert request.dry_run is on and request.query == ({"dry_run": "true"} if on else {})


def test_a_dry_run_value_that_is_neither_is_refused():
    assert refusal("deposit", {**BASE, "dry_run": "maybe"}).message == 'Dry Run is "maybe"; it must be true or false.'


def test_the_first_refusal_in_the_documented_order_wins():
    inputs = {**BASE, "reference": "", "extra_metadata": {"": "x"}, "dedupe_on": "nope"}
    assert refusal("deposit", inputs).code == "reference-required"
    assert refusal("deposit", {**inputs, "reference": "r"}).code == "metadata-blank-key"
    assert refusal("deposit", {**inputs, "reference": "r", "extra_metadata": {}}).code == "dedupe-preset-unknown"


def test_every_client_error_has_a_text_and_the_module_uses_only_those():
    import inspect
    source = inspect.getsource(contract)
    used = set(__import__("re").findall(r'ContractError\("([a-z-]+)"', source))
    assert used == set(contract.contract()["client_errors"]) - {"$comment"}


def test_reads_and_balance_are_not_built_here():
    with pytest.raises(ValueError):
        build_request("balance", {"user": "u"})
