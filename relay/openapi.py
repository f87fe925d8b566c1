"""OpenAPI 3.1 for the whole relay API, built from schemas/ so the two cannot disagree."""

import copy
from decimal import Decimal
from functools import cache

from . import __version__
from .validation import load_schema

SCHEMA_FILES = ["common.json", "deposit-request.json", "charge-request.json", "deposit-response.json",
                "balance-response.json", "charge-response.json", "me-response.json", "deposits-response.json",
                "dry-run-response.json", "bulk-request.json", "bulk-batch.json", "bulk-plan.json", "problem.json", "token-settings.json", "token.json", "tokens-response.json", "event.json"]
SCHEMA_FILES += ["hook-request.json", "hook.json", "hooks-response.json", "hook-deliveries-response.json"]


def _component(name: str) -> str:
    return name.removesuffix(".json").replace("-", "_")


def _inline(schema, name: str):
    """Rewrite file references ("common.json#/$defs/user") to component references."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "$ref" and value.startswith("#/$defs/"):  # a file's own definitions are components too
                out[key] = "#/components/schemas/" + value.rsplit("/", 1)[-1]
            elif key == "$ref" and ".json" in value:
                file, _, pointer = value.partition("#")
                if file == "common.json":
                    out[key] = "#/components/schemas/" + pointer.rsplit("/", 1)[-1]
                else:
                    out[key] = "#/components/schemas/" + _component(file)
            elif key in ("$id", "$schema"):
                continue
            elif key == "$defs":
                continue
            else:
                out[key] = _inline(value, name)
        return out
    if isinstance(schema, list):
        return [_inline(item, name) for item in schema]
    return schema


def _problem(description: str) -> dict:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/problem"}}}}


PROBLEMS = {
    "400": _problem("Malformed body"), "401": _problem("Token refused"), "403": _problem("A token limit refused the call"),
    "422": _problem("Validation failed, or an idempotency key reused"), "429": _problem("Rate limited"),
    "502": _problem("Paywalls unavailable, the outcome is unknown, or the relay's PAYWALLS_BASE_URL redirects"),
}
MONEY_PROBLEMS = {**PROBLEMS,
                  "409": _problem("The same event is in flight, or the token's identity changed during the call"),
                  "413": _problem("Body too large"), "415": _problem("Not JSON"),
                  "503": _problem("The relay's database is unavailable, or it could not record Paywalls' answer "
                                  "(retrying with the same fields is safe)"),
                  "504": _problem("Paywalls timed out; the outcome is unknown")}
DRY_RUN_PARAMETER = {
    "name": "dry_run", "in": "query", "required": False,
    "description": "true: check the call without moving money. The relay authenticates, validates, checks the token's "
                   "limits and caps and derives the key, then answers what it would do (200, dry_run_response) or the "
                   "problem the real call would get. Nothing is sent to Paywalls, no key is claimed, nothing is "
                   "reserved; the ledger records it as dry_run. false or absent: the real call. Any other value "
                   "(1, yes, TRUE, empty, or the parameter twice) is refused with 422 validation naming dry_run.",
    "schema": {"enum": ["true", "false"]}}
# keys.header_key's rule: 1-255 printable ASCII, bare or as a quoted string (\" and \\ count as one character),
# surrounding blanks ignored. A bare value may not be "" (the empty quoted string).
IDEMPOTENCY_KEY_PATTERN = (r'^[ \t]*(?:[!-~]|[!#-~][ -~]{0,253}[!-~]|"[ -~]{0,253}[!#-~]'
                           r'|"(?:\\[\\"]|[ -~]){1,255}")[ \t]*$')
IDEMPOTENCY_HEADER = {"name": "Idempotency-Key", "in": "header", "required": False,
                      "description": "Optional. When absent the relay derives one from the fields (schemas/idempotency.md).",
                      # keys.header_key's rule: 1-255 printable ASCII, bare or quoted, surrounding blanks ignored.
                      "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}}


def _json(ref: str, description="OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _money(summary: str, request_ref: str, response_ref: str) -> dict:
    answer = {"anyOf": [{"$ref": f"#/components/schemas/{response_ref}"}, {"$ref": "#/components/schemas/dry_run_response"}]}
    return {"post": {
        "summary": summary, "security": [{"relayToken": []}], "parameters": [IDEMPOTENCY_HEADER, DRY_RUN_PARAMETER],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request_ref}"}}}},
        "responses": {"200": {"description": "Paywalls' answer, or with ?dry_run=true what the call would do",
                              "content": {"application/json": {"schema": answer}}}, **MONEY_PROBLEMS},
    }}


def amount_schema(decimals: int) -> dict:
    """common.json's amount with this deployment's RELAY_AMOUNT_DECIMALS, for text and numbers alike, so the
    published contract admits exactly the amounts the relay accepts (validation.money_body): at most `decimals`
    significant fraction digits (trailing zeros are free, up to 6 written digits), below 1,000,000,000, not zero."""
    amount = copy.deepcopy(load_schema("common.json")["$defs"]["amount"])
    text, number = amount["anyOf"]
    # Written fraction digits (1-6) whose digits past `decimals` are all zeros; no lookahead, so every generator
    # (Hypothesis, schemathesis, the clients' own) can produce and check it.
    fractions = [f"[0-9]{{{k}}}0{{0,{6 - k}}}" for k in range(1, decimals + 1)] + ["0{1,6}"]
    text["pattern"] = r"^(?!0+(?:\.0*)?$)(?:0|[1-9][0-9]{0,8})(?:\.(?:" + "|".join(fractions) + "))?$"
    step = Decimal(1).scaleb(-decimals)
    number["maximum"] = float(Decimal(1_000_000_000) - step)
    number["multipleOf"] = int(step) if decimals == 0 else float(step)
    amount["description"] += (f" This relay accepts at most {decimals} fraction digits (RELAY_AMOUNT_DECIMALS={decimals})"
                              ", as text and as a JSON number alike.")
    return amount


ADMIN_PROBLEMS = {"401": _problem("Admin key refused"), "404": _problem("No such token, or the admin API is off"),
                  "429": _problem("Too many failed admin logins from this address")}
SETTINGS_BODY = {"400": _problem("Malformed body"), "413": _problem("Body too large"), "415": _problem("Not JSON"),
                 "422": _problem("A setting is invalid; errors[] names each field and the fix")}
TOKEN_ID = {"name": "token_id", "in": "path", "required": True, "description": "The token's public id.",
            "schema": {"type": "string", "pattern": "^[0-9A-Za-z]{12}$"}}


def _settings_body(required: list[str]) -> dict:
    schema = {"$ref": "#/components/schemas/token_settings"}
    if required:
        schema = {"allOf": [schema], "required": required}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _admin_paths() -> dict:
    admin = [{"adminKey": []}]
    token = _json("token")
    one = {"security": admin, "parameters": [TOKEN_ID]}
    return {
        "/v1/admin/tokens": {
            "post": {"summary": "Create a token; its secret (token) is in this answer only", "security": admin,
                     "requestBody": _settings_body(["label"]),
                     "responses": {"201": _json("token", "Created"), **ADMIN_PROBLEMS, **SETTINGS_BODY}},
            "get": {"summary": "All tokens, without secrets", "security": admin,
                    "responses": {"200": _json("tokens_response"), **ADMIN_PROBLEMS}}},
        "/v1/admin/tokens/{token_id}": {
            "get": {"summary": "One token", **one, "responses": {"200": token, **ADMIN_PROBLEMS}},
            "patch": {"summary": "Change the settings it names", **one, "requestBody": _settings_body([]),
                      "responses": {"200": token, **ADMIN_PROBLEMS, **SETTINGS_BODY,
                                    "409": _problem("namespace or dedupe_on cannot change while the token has keys")}}},
        "/v1/admin/tokens/{token_id}/revoke": {
            "post": {"summary": "Refuse the token from its next request on", **one,
                     "responses": {"200": token, **ADMIN_PROBLEMS}}},
        "/v1/admin/tokens/{token_id}/rotate": {
            "post": {"summary": "A new secret, same settings; the old secret stops working", **one,
                     "responses": {"200": token, **ADMIN_PROBLEMS}}},
    }


BULK_PARAMETERS = [
    {"name": "op", "in": "query", "description": "What every row does: deposit (the default) or charge. The token needs "
     "the bulk operation and this one.", "schema": {"enum": ["deposit", "charge"]}},
    {**DRY_RUN_PARAMETER, "description": "true: check every row and the file's total against the token's caps, and say "
     "what the batch would do (200, bulk_plan), queueing and sending nothing. false or absent: queue the batch."},
    {"name": "skip_invalid", "in": "query", "description": "true: queue the valid rows of a file with invalid lines "
     "(they are reported as invalid). false or absent: a file with an invalid line is refused whole (422).",
     "schema": {"enum": ["true", "false"]}},
    {"name": "batch_id", "in": "query", "description": "Names the batch in every row's idempotency key. Absent: the "
     "file's content names it, so the same file sent twice is one batch.",
     "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,100}$"}}]
BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "description": "The id the POST answered.",
            "schema": {"type": "string"}}


def _bulk_paths() -> dict:
    token = [{"relayToken": []}]
    return {
        "/v1/relay/bulk": {"post": {
            "summary": "Queue a CSV file or JSON array of up to 10,000 deposits or charges; 202 with the batch id at once",
            "security": token, "parameters": BULK_PARAMETERS,
            "requestBody": {"required": True, "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/bulk_request"}}}},
            "responses": {"202": _json("bulk_batch", "Queued (or already queued): the batch and where to follow it"),
                          "200": _json("bulk_plan", "?dry_run=true: what the batch would do"),
                          **PROBLEMS, "413": _problem("Body too large, or more than 10,000 rows"),
                          "415": _problem("Not CSV or JSON"),
                          "422": _problem("Invalid lines (errors[] names each line and field), or a batch_id reused"),
                          "503": _problem("The relay's database is unavailable")}}},
        "/v1/relay/bulk/{batch_id}": {"get": {
            "summary": "A batch's progress and, once it ran, its report (?format=csv: the report as CSV)",
            "security": token, "parameters": [BATCH_ID, {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}],
            "responses": {"200": {"description": "The batch", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/bulk_batch"}},
                "text/csv": {"schema": {"type": "string"}}}},
                **PROBLEMS, "404": _problem("No such batch of this token")}}},
    }


HOOK_ID = {"name": "hook_id", "in": "path", "required": True, "description": "The id POST /v1/relay/hooks answered.",
           "schema": {"type": "string"}}


def _hooks_paths() -> dict:
    token = [{"relayToken": []}]
    hook = _json("hook")
    unknown = {"404": _problem("No such hook of this token")}
    return {
        "/v1/relay/hooks": {
            "post": {"summary": "Subscribe a target URL to events (REST hook; token operation events)", "security": token,
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/hook_request"}}}},
                     "responses": {"201": _json("hook", "Subscribed"),
                                   "200": _json("hook", "The same subscription already existed: that hook"),
                                   **PROBLEMS, "413": _problem("Body too large"), "415": _problem("Not JSON")}},
            "get": {"summary": "This token's active hooks", "security": token,
                    "parameters": [{"name": "target_url", "in": "query", "description": "Only hooks with this target.",
                                    "schema": {"type": "string"}}],
                    "responses": {"200": _json("hooks_response"), **PROBLEMS}}},
        "/v1/relay/hooks/{hook_id}": {
            "get": {"summary": "One hook of this token", "security": token, "parameters": [HOOK_ID],
                    "responses": {"200": hook, **PROBLEMS, **unknown}},
            "delete": {"summary": "Unsubscribe: no more deliveries, pending ones cancelled (200 again once deleted)",
                       "security": token, "parameters": [HOOK_ID], "responses": {"200": hook, **PROBLEMS, **unknown}}},
        "/v1/relay/hooks/{hook_id}/deliveries": {
            "get": {"summary": "The hook's delivery log: every POST to its target, newest first", "security": token,
                    "parameters": [HOOK_ID,
                                   {"name": "limit", "in": "query", "description": "Page size, 1-100; default 50.",
                                    "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                                   {"name": "cursor", "in": "query", "description": "The next_cursor of the previous page.",
                                    "schema": {"type": "string", "pattern": "^att_[0-9]+$"}}],
                    "responses": {"200": _json("hook_deliveries_response"), **PROBLEMS, **unknown}}},
    }


def _events_paths() -> dict:
    token = [{"relayToken": []}]
    user_param = {"name": "user", "in": "query", "required": True, "schema": {"$ref": "#/components/schemas/user"}}
    return {
        "/v1/relay/events": {"get": {
            "summary": "The newest stored events (token operation events): for samples and Zapier's performList",
            "security": token, "parameters": [
                {"name": "type", "in": "query", "explode": True, "description": "Event types: repeat it, or separate "
                 "with commas; a family such as paywall.balance.* or * for all. Absent: every type.",
                 "schema": {"type": "array", "items": {"type": "string", "maxLength": 100}}},
                {"name": "limit", "in": "query", "description": "1-100; default 10.",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
            "responses": {"200": {"description": "Newest first; a token with a user pattern sees only its users' events",
                                  "content": {"application/json": {"schema": {
                                      "type": "object", "required": ["data"], "properties": {"data": {
                                          "type": "array", "items": {"$ref": "#/components/schemas/event"}}}}}}},
                          **PROBLEMS}}},
        "/v1/user/balance/topup": {"get": {
            "summary": "A link the user opens to top up (Paywalls' GET /user/balance/topup, passed through; "
                       "token operation topup)",
            "security": token, "parameters": [user_param],
            "responses": {"200": {"description": "Paywalls' answer, as it is", "content": {
                "application/json": {"schema": {"type": "object"}}}}, **PROBLEMS}}},
        "/v1/webhooks/paywalls": {"post": {
            "summary": "Paywalls' webhook deliveries (signed with the subscription's whsec_ secret); not for clients",
            # Both headers are needed (a delivery without one is refused with 401), but they are not marked required:
            # while the intake is off (no secret), every delivery gets the 404 that says so, with or without them.
            "parameters": [
                {"name": "X-Paywalls-Signature", "in": "header",
                 "description": "Needed: hex HMAC-SHA256 of the raw body, keyed with the secret's UTF-8 bytes "
                                "(whsec_ included). Missing or wrong: 401.",
                 "schema": {"type": "string"}},
                {"name": "X-Paywalls-Timestamp", "in": "header",
                 "description": "Needed: ISO 8601 or unix seconds; missing, or more than 5 minutes off: 401.",
                 "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": [
                {"$ref": "#/components/schemas/event"},
                {"type": "object", "required": ["event"], "properties": {
                    "delivery": {"type": "object"}, "event": {"$ref": "#/components/schemas/event"}}}]}}}},
            "responses": {"202": {"description": "Stored; fanned out to REST hooks in the background"},
                          "200": {"description": "An event id seen before: acknowledged, not fanned out again"},
                          "400": _problem("Not JSON"), "401": _problem("Signature or timestamp refused; nothing stored"),
                          "404": _problem("Intake off: no webhook secret configured"),
                          "422": _problem("No usable event id or type")}}},
    }


@cache
def document(decimals: int = 2) -> dict:
    components = {}
    for file in SCHEMA_FILES:
        schema = load_schema(file)
        if file == "common.json":
            for name, definition in schema["$defs"].items():
                components[name] = _inline(definition, name)
        else:
            components[_component(file)] = _inline(schema, file)
            for name, definition in schema.get("$defs", {}).items():
                components[name] = _inline(definition, file)
    components["amount"] = _inline(amount_schema(decimals), "common.json")
    user_param = {"name": "user", "in": "query", "required": True, "schema": {"$ref": "#/components/schemas/user"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Paywalls Relay", "version": __version__,
                 "description": "A scoped, idempotent relay in front of the Paywalls.ai balance API."},
        "paths": {
            "/v1/user/balance/deposit": _money("Add credits to a user's balance", "deposit_request", "deposit_response"),
            "/v1/user/charge": _money("Charge a user's balance", "charge_request", "charge_response"),
            "/v1/user/balance": {"get": {"summary": "A user's balance", "security": [{"relayToken": []}],
                                         "parameters": [user_param],
                                         "responses": {"200": _json("balance_response"), **PROBLEMS}}},
            "/v1/relay/me": {"get": {"summary": "The calling token: scopes, usage, remaining allowance",
                                     "security": [{"relayToken": []}],
                                     "responses": {"200": _json("me_response"), "401": PROBLEMS["401"], "429": PROBLEMS["429"]}}},
            "/v1/relay/deposits": {"get": {
                "summary": "Credits applied through the relay, newest first", "security": [{"relayToken": []}],
                "parameters": [
                    # An empty value means the same as an absent one, so a form field left blank still works.
                    {"name": "user", "in": "query", "description": "Only deposits to this user; empty or absent: all.",
                     "schema": {"anyOf": [{"$ref": "#/components/schemas/user"}, {"const": ""}]}},
                    {"name": "since", "in": "query", "description": "ISO 8601 date or date-time (UTC unless an offset is given).",
                     "schema": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"},
                                          {"const": ""}]}},
                    {"name": "limit", "in": "query", "description": "Page size, 1-100; default 50.",
                     "schema": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 100}, {"const": ""}]}},
                    {"name": "cursor", "in": "query", "description": "The next_cursor of the previous page.",
                     "schema": {"anyOf": [{"type": "string", "pattern": "^led_[1-9][0-9]*$"}, {"const": ""}]}}],
                "responses": {"200": _json("deposits_response"), **PROBLEMS}}},
            **_bulk_paths(),
            **_hooks_paths(),
            **_events_paths(),
            **_admin_paths(),
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {"200": {"description": "Ready"},
                                                                      "503": {"description": "Not ready"}}}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "relayToken": {"type": "http", "scheme": "bearer", "description": "A scoped relay token (pwr_...)."},
                "adminKey": {"type": "http", "scheme": "bearer",
                             "description": "The operator's RELAY_ADMIN_KEY, never a relay token. The admin API is off "
                                            "(404) while RELAY_ADMIN_KEY is unset."}},
        },
    }
