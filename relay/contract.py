"""The client contract (schemas/client-contract.json) in Python: what a client sends for a step's inputs.

The Zapier app and the n8n node do the same with schemas/clients/relay-contract.js; schemas/parity-cases.json,
generated from this module, is the table all three must agree on. The relay's own bulk import and console use
this module, so a refusal here has exactly the client's text (client_errors).

build_request(op, inputs) reads the inputs a person mapped in a step, top to bottom:
  1. trim the text inputs that say "trim"; an absent input (None) stays absent;
  2. Reference policy: no Reference, no call (reference-required);
  3. metadata: Extra Metadata rows (keys and string values trimmed, empty values dropped, a blank key with a value
     refused), then reason and reference from their own fields; a row named like a set field is refused
     (metadata-clash); no metadata object when nothing is left;
  4. the dedupe fields from Deduplicate On (and Custom Dedupe Fields when it is custom);
  5. the key, derived from the body and those fields (schemas/idempotency.md); None when the derivation refuses
     the body (an invalid amount): the client then sends no Idempotency-Key and the relay's 422 names the field;
  6. the query: {"dry_run": "true"} when Dry Run is on.
"""

import json
import re
from dataclasses import dataclass, field
from functools import cache

from . import keys
from .validation import SCHEMAS_DIR


class ContractError(ValueError):
    """A refusal the client makes before it calls the relay; `message` is client_errors' text, filled in."""

    def __init__(self, code: str, **values):
        self.code = code
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
    return re.sub(r"\{(\w+)\}", lambda match: str(values.get(match.group(1), match.group(0))), text)


def _text(value):
    return value.strip() if isinstance(value, str) else value


def _set(value) -> bool:
    """A named field (reason, reference) counts as given when it has something after trimming."""
    return value is not None and value != ""


# Dry Run arrives as a boolean, or as the text a no-code tool makes of one.
DRY_RUN_ON = {"true", "yes", "1"}
DRY_RUN_OFF = {"false", "no", "0", ""}


def dry_run_value(value) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in DRY_RUN_ON:
        return True
    if text in DRY_RUN_OFF:
        return False
    raise ContractError("dry-run-invalid", value=value)


def metadata(inputs: dict) -> dict | None:
    rules = contract()["metadata_merge"]
    named = {name: _text(inputs.get(source)) for name, source in rules["named_fields"].items()}
    merged = {}
    for raw_key, raw_value in (inputs.get("extra_metadata") or {}).items():
        key, value = _text(raw_key), _text(raw_value)
        if value in rules["drop_values"]:
            continue
        if key == "":
            raise ContractError("metadata-blank-key")
        if key in named and _set(named[key]):
            label = contract()["inputs"][rules["named_fields"][key]]["label"]
            raise ContractError("metadata-clash", key=key, label=label)
        if key in merged:
            raise ContractError("metadata-duplicate-key", key=key)
        merged[key] = value
    for name, value in named.items():
        if _set(value):
            merged[name] = value
    return merged or None


def parse_custom_fields(text) -> list[str]:
    rules = contract()["custom_dedupe_fields"]
    parts = [part.strip() for part in str(text or "").split(rules["separator"])]
    paths = [part for part in parts if part]
    if not paths:
        raise ContractError("custom-dedupe-fields-empty")
    pattern = re.compile(rules["path_pattern"])
    for path in paths:
        if not pattern.fullmatch(path):
            raise ContractError("custom-dedupe-field-invalid", path=path)
    return paths


def dedupe_fields(inputs: dict) -> list[str]:
    presets = {preset["value"]: preset for preset in contract()["dedupe_presets"]}
    chosen = _text(inputs.get("dedupe_on"))
    if chosen in (None, ""):
        chosen = contract()["inputs"]["dedupe_on"]["default"]
    if chosen not in presets:
        raise ContractError("dedupe-preset-unknown", value=chosen, choices=", ".join(presets))
    if presets[chosen]["fields"] is None:
        return parse_custom_fields(inputs.get("custom_dedupe_fields"))
    return list(presets[chosen]["fields"])


def build_request(op: str, inputs: dict) -> Request:
    operation = contract()["operations"][op]
    if not operation["money"]:
        raise ValueError(f"{op} is not a deposit or a charge")
    inputs = {name: _text(value) if contract()["inputs"].get(name, {}).get("trim") else value
              for name, value in inputs.items()}
    if op in contract()["reference_policy"]["required_for"] and not _set(inputs.get("reference")):
        raise ContractError("reference-required")
    body = {name: inputs[name] for name in ("user", "amount") if inputs.get(name) is not None}
    merged = metadata(inputs)
    if merged is not None:
        body["metadata"] = merged
    fields = dedupe_fields(inputs)
    query = {"dry_run": "true"} if dry_run_value(inputs.get("dry_run")) else {}
    try:
        key = keys.derive_key(op, body, fields)
    except keys.Underivable:
        key = None
    return Request(op, operation["method"], operation["path"], body, fields, key, query)


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
