"""The client contract (schemas/client-contract.json) in Python: what a client sends for a step's inputs.

The Zapier app and the n8n node do the same with schemas/clients/relay-contract.js (buildRequest); this module has
its semantics, value for value, and schemas/parity-cases.json, generated from this module, is the table all three
must agree on. The relay's own bulk import and console use it, so a refusal here has exactly the client's text
(client_errors). How inputs are read, and in which order the refusals are checked, is input_rules' $comment.
"""

import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache

from . import keys
from .validation import SCHEMAS_DIR


class ContractError(ValueError):
    """A refusal the client makes before it calls the relay; `message` is client_errors' text, filled in."""

    def __init__(self, code: str, **values):
        self.code = code
        self.values = values
        self.message = render(code, **values)
        super().__init__(self.message)


@dataclass(frozen=True)
class Request:
    op: str
    method: str
    path: str
    body: dict
    fields: list = field(default_factory=list)
    key: str | None = None
    query: dict = field(default_factory=dict)

    @property
    def dry_run(self) -> bool:
        return self.query.get("dry_run") == "true"


@cache
def contract() -> dict:
    return json.loads((SCHEMAS_DIR / "client-contract.json").read_text(encoding="utf-8"))


def render(code: str, **values) -> str:
    text = contract()["client_errors"][code]
    return re.sub(r"\{([A-Za-z0-9_]+)\}", lambda match: js_text(values.get(match.group(1))), text)


# --- JavaScript's readings of values, so both languages see the same text --------------------------------------

# What String.prototype.trim removes: ECMAScript WhiteSpace and LineTerminator (not Python's str.strip set).
JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
           "\u2028\u2029\u202f\u205f\u3000\ufeff"


def js_trim(text: str) -> str:
    return text.strip(JS_SPACE)


def js_number(value) -> str:
    """String(n) in JavaScript (ECMAScript Number::toString): "10" for 10.0, "1e-7", "1e+21"."""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    if number < 0:
        return "-" + js_number(-number)
    _, digit_tuple, exponent = Decimal(repr(number)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len("".join(map(str, digit_tuple))) - len(digits)
    k, n = len(digits), exponent + len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def js_text(value) -> str:
    """relay-contract.js show(): how a value is written into a message."""
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return js_number(value)
    if isinstance(value, list):
        return ", ".join(js_text(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def describe(value) -> str:
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "a string" if isinstance(value, str) else "an object"


def _same(a, b) -> bool:
    """JavaScript's SameValueZero for JSON values: true is not 1, and 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _among(value, choices) -> bool:
    return any(_same(value, choice) for choice in choices)


# --- inputs ---------------------------------------------------------------------------------------------------

def text_input(name: str, value) -> str:
    """A text input: trimmed text ("" when absent); a number or boolean becomes its text; anything else is
    refused (field-not-text)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return js_trim(value)
    if isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)):
        return js_text(value)
    label = contract()["inputs"].get(name, {}).get("label", name)
    raise ContractError("field-not-text", label=label, got=describe(value))


def amount_input(value):
    """Never refused here: the relay names a bad amount (422). Text is trimmed, anything else goes as it is."""
    if value is None:
        return ""
    return js_trim(value) if isinstance(value, str) else value


def _metadata_rows(extra) -> list:
    if extra is None or extra == "":
        return []
    if isinstance(extra, list):  # n8n's fixedCollection: rows of {key, value}, which may repeat a key
        rows = []
        for row in extra:
            if not isinstance(row, dict):
                raise ContractError("extra-metadata-invalid", got=f"a list holding {describe(row)}")
            rows.append((row.get("key"), row.get("value")))
        return rows
    if not isinstance(extra, dict):
        raise ContractError("extra-metadata-invalid", got=describe(extra))
    return list(extra.items())


def _lower_ascii(text: str) -> str:
    return "".join(char.lower() if "A" <= char <= "Z" else char for char in text)


def metadata(inputs: dict, texts: dict) -> dict | None:
    rules = contract()["metadata_merge"]
    named = rules["named_fields"]  # metadata key -> input field
    merged, seen = {}, set()
    for raw_key, raw_value in _metadata_rows(inputs.get("extra_metadata")):
        key = js_trim(raw_key) if isinstance(raw_key, str) else "" if raw_key is None else js_trim(js_text(raw_key))
        value = js_trim(raw_value) if isinstance(raw_value, str) and rules["trim_string_values"] else raw_value
        if _among(value, rules["drop_values"]):
            continue
        if not key:
            raise ContractError("metadata-blank-key")
        if key in seen:
            raise ContractError("metadata-duplicate-key", key=key)
        seen.add(key)
        named_key = _lower_ascii(key)
        if named_key in named and texts[named[named_key]] != "":
            raise ContractError("metadata-clash", key=key, label=contract()["inputs"][named[named_key]]["label"])
        merged[key] = value
    for key, source in named.items():
        if texts[source] != "":
            merged[key] = texts[source]
    return merged if merged or not rules["omit_when_empty"] else None


def parse_custom_fields(value) -> list[str]:
    rules = contract()["custom_dedupe_fields"]
    pattern = re.compile(rules["path_pattern"])
    paths = []
    for raw in text_input("custom_dedupe_fields", value).split(rules["separator"]):
        path = js_trim(raw) if rules["trim_each"] else raw
        if not path and rules["drop_empty"]:
            continue
        if not pattern.fullmatch(path):
            raise ContractError("custom-dedupe-field-invalid", path=path)
        if path not in paths:
            paths.append(path)
    if not paths and rules["at_least_one"]:
        raise ContractError("custom-dedupe-fields-empty")
    return paths


def dedupe_fields(dedupe_on, custom_fields) -> list[str]:
    presets = {preset["value"]: preset for preset in contract()["dedupe_presets"]}
    chosen = text_input("dedupe_on", dedupe_on) or contract()["inputs"]["dedupe_on"]["default"]
    if chosen not in presets:
        raise ContractError("dedupe-preset-unknown", value=chosen, choices=", ".join(presets))
    if presets[chosen]["fields"] is None:
        return parse_custom_fields(custom_fields)
    return list(presets[chosen]["fields"])


def dry_run_input(value) -> bool:
    rules = contract()["input_rules"]
    normalised = js_trim(value).lower() if isinstance(value, str) else value
    if _among(normalised, rules["dry_run_true"]):
        return True
    if _among(normalised, rules["dry_run_false"]):
        return False
    raise ContractError("dry-run-invalid", value=value)


def build_request(op: str, inputs: dict) -> Request:
    """The request a step sends for its inputs, or the first ContractError in input_rules' order."""
    spec = contract()["operations"][op]
    if not spec["money"]:
        raise ValueError(f"{op} is not a deposit or a charge")
    texts = {name: text_input(name, inputs.get(name)) for name in contract()["input_rules"]["text"]
             if name in spec["inputs"]}
    merged = metadata(inputs, texts)
    if op in contract()["reference_policy"]["required_for"] and texts["reference"] == "":
        raise ContractError("reference-required")
    fields = dedupe_fields(inputs.get("dedupe_on"), inputs.get("custom_dedupe_fields"))
    query = {contract()["inputs"]["dry_run"]["query"]: "true"} if dry_run_input(inputs.get("dry_run")) else {}
    body = {"user": texts["user"], "amount": amount_input(inputs.get("amount"))}
    if merged is not None:
        body["metadata"] = merged
    try:
        key = keys.derive_key(op, body, fields)
    except keys.Underivable as refusal:
        if refusal.field != "amount":
            raise
        key = None  # sent without an Idempotency-Key: the relay's 422 names amount
    return Request(op, spec["method"], spec["path"], body, fields, key, query)


def step_output(request: Request, headers, body: dict) -> dict:
    """A successful step's output, one style (snake_case) in every client: the contract's outputs of `request.op`,
    read from the relay's answer (headers and JSON body). A dry run has dry_run, would and remaining instead of
    Paywalls' fields."""
    metadata = request.body.get("metadata") or {}
    output = {"user": request.body.get("user"), "amount": _canonical_or_as_is(request.body.get("amount")),
              "reason": metadata.get("reason"), "reference": metadata.get("reference"), "metadata": metadata,
              "idempotency_key": body.get("idempotency_key") if request.dry_run else headers.get("Idempotency-Key"),
              "replayed": headers.get("Idempotent-Replayed") == "true",
              "sandbox": headers.get("X-Relay-Sandbox") == "true", "dry_run": request.dry_run}
    if request.dry_run:
        return {**output, "would": body.get("would"), "remaining": body.get("remaining")}
    for item in contract()["operations"][request.op]["outputs"]:
        if "from" in item:
            output[item["key"]] = body.get(item["from"])
    return output


def _canonical_or_as_is(amount):
    from . import amounts
    try:
        return amounts.canonical(amount)
    except ValueError:
        return amount
