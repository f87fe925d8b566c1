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
    # A number in a text input is its JavaScript text; an absent user or amount is sent empty (the relay names it).
    assert build_request("deposit", {**BASE, "user": 12345.0, "reference": 42}).body == \
        {"user": "12345", "amount": "10", "metadata": {"reference": "42"}}
    assert build_request("deposit", {"reference": "r"}).body == {"user": "", "amount": "", "metadata": {"reference": "r"}}


def test_a_list_or_object_in_a_text_input_is_refused():
    error = refusal("deposit", {**BASE, "user": ["a", "b"]})
    assert (error.code, error.message) == ("field-not-text", "User must be text, not a list. Map a single value into it.")
    assert refusal("deposit", {**BASE, "reference": {"id": 1}}).message.startswith("Reference must be text, not an object")


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
    assert refusal("deposit", {**BASE, "dry_run": "maybe"}).message == \
        'Dry Run "maybe" is not true or false (leave it off to run for real).'
    assert refusal("deposit", {**BASE, "dry_run": 2}).code == "dry-run-invalid"
    assert build_request("deposit", {**BASE, "dry_run": 1}).dry_run and not build_request("deposit", {**BASE, "dry_run": 0}).dry_run


def test_metadata_names_clash_ignoring_ascii_case():
    assert refusal("deposit", {**BASE, "extra_metadata": {"Reference": "x"}}).code == "metadata-clash"
    assert build_request("deposit", {**BASE, "extra_metadata": {"Reason": "x"}}).body["metadata"] == \
        {"Reason": "x", "reference": "in_1"}


def test_n8n_rows_may_repeat_a_key_and_are_refused_then():
    rows = [{"key": "plan", "value": "a"}, {"key": " plan", "value": "b"}]
    assert refusal("deposit", {**BASE, "extra_metadata": rows}).code == "metadata-duplicate-key"
    assert refusal("deposit", {**BASE, "extra_metadata": "plan=pro"}).message == \
        "Extra Metadata must be key/value rows, not a string."


def test_the_first_refusal_in_the_documented_order_wins():
    inputs = {**BASE, "user": [1], "reference": "", "extra_metadata": {"": "x"}, "dedupe_on": "nope", "dry_run": "?"}
    assert refusal("deposit", inputs).code == "field-not-text"
    assert refusal("deposit", {**inputs, "user": "u"}).code == "metadata-blank-key"
    assert refusal("deposit", {**inputs, "user": "u", "extra_metadata": {}}).code == "reference-required"
    assert refusal("deposit", {**inputs, "user": "u", "extra_metadata": {}, "reference": "r"}).code == "dedupe-preset-unknown"
    assert refusal("deposit", {**inputs, "user": "u", "extra_metadata": {}, "reference": "r", "dedupe_on": ""}).code == \
        "dry-run-invalid"


def test_every_client_error_has_a_text_and_the_module_uses_only_those():
    import inspect
    source = inspect.getsource(contract)
    used = set(__import__("re").findall(r'ContractError\("([a-z-]+)"', source))
    assert used == set(contract.contract()["client_errors"]) - {"$comment"}


def test_reads_and_balance_are_not_built_here():
    with pytest.raises(ValueError):
        build_request("balance", {"user": "u"})


# --- the same answers as schemas/clients/relay-contract.js, input for input ------------------------------------

import json  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NODE_LEG = """
const contract = require(process.argv[1]);
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = cases.map(([op, inputs]) => {
  try {
    const r = contract.buildRequest(op, inputs);
    return {body: r.body, fields: r.fields, key: r.key, query: r.query};
  } catch (error) {
    return {code: error.code, message: error.message};
  }
});
process.stdout.write(JSON.stringify(out));
"""

HOSTILE_INPUTS = [
    {**BASE, "user": 12345}, {**BASE, "user": True}, {**BASE, "user": 1e21}, {**BASE, "user": 0.1 + 0.2},
    {**BASE, "user": "\ufeffacme:u1\u3000"}, {**BASE, "user": "\x1facme:u1"}, {**BASE, "reference": 0},
    {**BASE, "amount": None}, {**BASE, "amount": 10}, {**BASE, "amount": 1e-7}, {**BASE, "amount": True},
    {**BASE, "amount": ["10"]}, {**BASE, "amount": "\u00a010\u00a0"}, {**BASE, "amount": "１０"},
    {**BASE, "extra_metadata": {"REFERENCE": "x"}}, {**BASE, "extra_metadata": {"Référence": "x"}},
    {**BASE, "extra_metadata": {"n": 0}}, {**BASE, "extra_metadata": {"n": False}}, {**BASE, "extra_metadata": []},
    {**BASE, "extra_metadata": [{"key": 5, "value": "x"}]}, {**BASE, "extra_metadata": [None]},
    {**BASE, "extra_metadata": [{"key": None, "value": None}]}, {**BASE, "extra_metadata": 7},
    {**BASE, "dedupe_on": " reference "}, {**BASE, "dedupe_on": "REFERENCE"}, {**BASE, "dedupe_on": ["all"]},
    {**BASE, "dedupe_on": "custom", "custom_dedupe_fields": "user,user, amount"},
    {**BASE, "dedupe_on": "custom", "custom_dedupe_fields": "metadata.ref\u00e9rence"},
    {**BASE, "dedupe_on": "custom", "custom_dedupe_fields": 5},
    {**BASE, "dry_run": " ON "}, {**BASE, "dry_run": "Off"}, {**BASE, "dry_run": 1.0}, {**BASE, "dry_run": [True]},
    {**BASE, "dry_run": "\u0131"}, {**BASE, "reason": "\u00a0 "}, {},
    {**BASE, "extra_metadata": {"__proto__": "x", "constructor": "y"}}, {**BASE, "reason": "{reference}"},
]


def test_python_and_javascript_build_the_same_request_for_every_input():
    table = json.loads((ROOT / "schemas" / "parity-cases.json").read_text(encoding="utf-8"))
    inputs = [(case["op"], case["inputs"]) for case in table["cases"]] + [("deposit", item) for item in HOSTILE_INPUTS] \
        + [("charge", item) for item in HOSTILE_INPUTS]
    node = shutil.which("node")
    assert node, "node is needed: the JavaScript contract is half of this test"
    run = subprocess.run([node, "-e", NODE_LEG, str(ROOT / "schemas" / "clients" / "relay-contract.js")],
                         input=json.dumps(inputs), capture_output=True, text=True, timeout=60, check=True)
    for (op, given), js in zip(inputs, json.loads(run.stdout), strict=True):
        try:
            built = build_request(op, given)
            python = {"body": built.body, "fields": built.fields, "key": built.key, "query": built.query}
        except ContractError as error:
            python = {"code": error.code, "message": error.message}
        assert python == js, (op, given)
