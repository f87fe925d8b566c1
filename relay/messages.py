"""Every message a user can see. Error text is product surface: it shows in Zap history and n8n.

Each refusal is a Problem (RFC 9457 problem+json). Messages say what went wrong and what to do.
"""

import json

from flask import Response

PROBLEM_JSON = "application/problem+json"
SAFE_TO_RETRY = "Retrying with the same fields is safe: the relay and Paywalls will not credit twice."


class Problem(Exception):
    def __init__(self, status: int, name: str, title: str, detail: str, headers=None, **extra):
        super().__init__(detail)
        self.status, self.name, self.title, self.detail = status, name, title, detail
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict:
        return {
            "type": f"urn:paywalls-relay:problem:{self.name}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }

    def response(self, **more) -> Response:
        body = {**self.body(), **more}
        return Response(json.dumps(body), self.status, self.headers, mimetype=PROBLEM_JSON)


def with_request_id(text: str, request_id: str) -> str:
    """A stored problem body (502/504, a replayed refusal) with this request's id, as every problem body has."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if not isinstance(body, dict):
        return text
    return json.dumps({**body, "request_id": request_id})


# --- request shape -----------------------------------------------------------------------------

def malformed_body(why: str) -> Problem:
    return Problem(400, "malformed-body", "The request body is not valid JSON",
                   f"{why} Send a JSON object such as {{\"user\": \"acme:user_123\", \"amount\": \"10\"}}.")


def unsupported_media_type(got: str) -> Problem:
    return Problem(415, "unsupported-media-type", "Send JSON",
                   f"The body was sent as {got or 'no content type'}; send it as application/json "
                   "(in Zapier and n8n: a JSON body, not form fields).")


def body_too_large(limit: int) -> Problem:
    return Problem(413, "body-too-large", "The request body is too large",
                   f"The body is over {limit // 1024} KiB. Keep metadata small: ids and short labels only.")


def validation(errors: list[dict]) -> Problem:
    fields = ", ".join(e["field"] for e in errors)
    return Problem(422, "validation", "Some fields are invalid",
                   f"Nothing was sent to Paywalls. Fix these fields: {fields}.", errors=errors)


def field_error(field: str, message: str) -> dict:
    pointer = "/" + field.replace(".", "/") if field else ""
    return {"field": field or "(body)", "pointer": pointer, "message": message}


# What each schema rule means, per field, in plain words. Keys: (field, JSON Schema keyword).
FIELD_MESSAGES = {
    ("user", "required"): "user is required: the Paywalls user id to credit, e.g. acme:user_123.",
    ("user", "type"): "user must be text, e.g. acme:user_123.",
    ("user", "minLength"): "user is empty: map the Paywalls user id, e.g. acme:user_123.",
    ("user", "maxLength"): "user is longer than 128 characters.",
    ("user", "pattern"): "user may contain only letters, digits and _ - . : (no spaces, no @). "
                         "Use a pseudonymous id such as acme:user_123, not an email address.",
    ("amount", "required"): "amount is required: a positive decimal such as \"10\" or \"2.50\".",
    ("amount", "*"): "amount must be a positive decimal such as \"10\" or \"2.50\": digits with an optional "
                     "decimal point, no sign, no exponent, no currency symbol, not zero, below 1,000,000,000.",
    ("metadata", "type"): "metadata must be an object of key/value pairs, e.g. {\"invoice_id\": \"in_123\"}.",
    ("metadata", "maxProperties"): "metadata has more than 50 keys; keep only what reconciliation needs.",
}


# Token settings (schemas/token-settings.json): what each must be, whichever rule it broke.
_LIMIT = ("must be a positive decimal with at most 6 decimal places, below 1,000,000,000, as text (\"25\", \"2.50\") "
          "or a JSON number; null for no limit.")
SETTING_HINTS = {
    "label": "label must be 1-200 characters of text, not only blanks, e.g. 'Zap: Stripe renewals'.",
    "notes": "notes must be text of at most 2000 characters, or null.",
    "operations": "operations must be a non-empty list of distinct operations from deposit, charge, balance, "
                  "ledger, bulk, events and topup, e.g. [\"deposit\"].",
    "max_amount": "max_amount " + _LIMIT,
    "daily_cap": "daily_cap " + _LIMIT,
    "monthly_cap": "monthly_cap " + _LIMIT,
    "user_pattern": "user_pattern must be a regular expression of at most 200 characters, e.g. acme:[A-Za-z0-9_]+, "
                    "or null.",
    "required_metadata": "required_metadata must be a list of up to 50 distinct metadata keys without spaces or dots, "
                         "e.g. [\"invoice_id\"].",
    "rate_limit": "rate_limit must be a count of at least 1 per period, e.g. \"60/minute\" or \"1000/hour\"; "
                  "null for none.",
    "dedupe_on": "dedupe_on must be a non-empty list of distinct fields: user, amount, metadata or metadata.<key>.",
    "namespace": "namespace must be 1-100 letters, digits or _ . : -, or null.",
    "disabled": "disabled must be true or false: a JSON boolean, not the text \"false\".",
    "feed": "feed must be own (this token's namespace, or its own deposits) or all (every workflow's).",
    "expires_in": "expires_in must be a number and a unit: 30s, 15m, 12h or 90d.",
    "expires_at": "expires_at must be an ISO 8601 date or date-time such as 2026-12-31T23:59:59Z, or null for never.",
}


EXPIRY_TWICE = "expires_at and expires_in were both given: send one (expires_in: 90d, or expires_at: an ISO 8601 date)."


def not_a_setting(name: str) -> str:
    return f"{name} is not a token setting (settings: {', '.join(SETTING_HINTS)})."


def schema_message(field: str, keyword: str, fallback: str) -> str:
    top = field.split(".")[0]
    return FIELD_MESSAGES.get((top, keyword)) or FIELD_MESSAGES.get((top, "*")) or fallback


def unknown_field(name: str, known: list[str]) -> str:
    return f"{name} is not a field of this call (did you mean one of: {', '.join(known)}?). " \
           "Put extra data inside metadata."


def unknown_nested_field(name: str, parent: str, known: list[str]) -> str:
    return f"{name} is not a field of {parent} (did you mean one of: {', '.join(known)}?)."


def too_many_decimals(allowed: int) -> str:
    if allowed == 0:
        return "amount must be a whole number on this relay (RELAY_AMOUNT_DECIMALS=0)."
    return f"amount has more than {allowed} decimal places; round it to {allowed} (e.g. \"2.50\")."


METADATA_TOO_LARGE = "metadata is over 4 KiB once serialized; keep only ids and short labels."
METADATA_OUT_OF_RANGE = "is a number beyond what a 64-bit float holds (such as 1e400 or 1e-400); send it as a string."
METADATA_UNSAFE_INTEGER = "is an integer beyond +/-9007199254740991, which other tools cannot read exactly; send it as a string."


def required_metadata(key: str) -> str:
    return (f"metadata.{key} is required by this token: map the source event's id here (e.g. the Stripe invoice id); "
            "blank text, true/false, lists and objects do not count.")


DRY_RUN_VALUE = ("dry_run must be true (check the call without moving money) or false, given once; leave it out "
                 "for a real call. Nothing was sent to Paywalls.")

CURSOR_UNKNOWN = ("cursor must be the next_cursor value of a previous page of the same query (same user and since); "
                  "leave it out to start from the newest deposit.")


def invalid_query(field: str, message: str) -> Problem:
    return validation([field_error(field, message)])


# --- authentication and token limits ----------------------------------------------------------

RECONNECT = "Create or rotate a token with `paywalls-relay tokens create` and reconnect the Zapier/n8n account."


# The `reason` of a 401, and what it means (the README's error table lists these keys; tests/test_readme.py checks).
UNAUTHORIZED = {
    "missing": "No relay token was sent. Send it as 'Authorization: Bearer pwr_...'.",
    "malformed": "This is not a relay token (wrong prefix, length or checksum). Copy the whole token again.",
    "invalid": "The relay token is not valid.",
    "revoked": "The relay token was revoked.",
    "disabled": "The relay token is disabled.",
    "expired": "The relay token has expired.",
}


def unauthorized(reason: str) -> Problem:
    return Problem(401, "unauthorized", "Relay token refused", f"{UNAUTHORIZED[reason]} {RECONNECT}",
                   {"WWW-Authenticate": 'Bearer realm="paywalls-relay"'}, reason=reason)


def not_rotatable(token_id: str, status: str) -> Problem:
    extra = f" (or first extend it: `paywalls-relay tokens update {token_id} --expires-in 90d`)" if status == "expired" else ""
    return Problem(409, "token-not-rotatable", f"A {status} token cannot be rotated",
                   f"Token {token_id} is {status}: a new secret for it would still be refused. Create a new token "
                   f"with `paywalls-relay tokens create` instead{extra}; `paywalls-relay tokens show {token_id}` "
                   "shows the settings to copy.", status_now=status)


def admin_unauthorized() -> Problem:
    return Problem(401, "unauthorized", "Admin key refused",
                   "The admin API takes only 'Authorization: Bearer <RELAY_ADMIN_KEY>'; relay tokens are not accepted here.",
                   {"WWW-Authenticate": 'Bearer realm="paywalls-relay-admin"'})


def metrics_unauthorized() -> Problem:
    return Problem(401, "unauthorized", "Metrics token refused",
                   "/metrics takes 'Authorization: Bearer <RELAY_METRICS_TOKEN>' on this relay.",
                   {"WWW-Authenticate": 'Bearer realm="paywalls-relay-metrics"'})


def admin_disabled() -> Problem:
    return Problem(404, "not-found", "Admin API is off", "Set RELAY_ADMIN_KEY to turn the admin API on.")


def operation_not_granted(operation: str, granted: list[str]) -> Problem:
    return Problem(403, "forbidden", "This token may not do that",
                   f"This token is not allowed to {operation} (it may: {', '.join(granted)}). "
                   "Ask the relay operator for a token with that operation.", limit="operation")


def over_max_amount(amount: str, maximum: str) -> Problem:
    return Problem(403, "forbidden", "Amount over this token's per-call maximum",
                   f"amount {amount} is over this token's maximum of {maximum} per call. Nothing was sent to Paywalls.",
                   limit="max_amount", remaining=maximum)


def user_not_allowed(user: str) -> Problem:
    return Problem(403, "forbidden", "User not allowed for this token",
                   f"This token may not act on user '{user}': it is limited to users matching its user pattern. "
                   "Check the user id mapping, or ask for a token that covers these users.", limit="user_pattern")


def over_cap(period: str, remaining: str, cap: str) -> Problem:
    name = {"d": "daily", "m": "monthly"}[period]
    when = {"d": "at midnight UTC", "m": "on the 1st of the month (UTC)"}[period]
    return Problem(403, "forbidden", f"This token's {name} cap is reached",
                   f"This call would take the token over its {name} cap of {cap}; {remaining} remains. "
                   f"The cap resets {when}. Nothing was sent to Paywalls.",
                   limit=f"{name}_cap", remaining=remaining)


def rate_limited(retry_after: int, what: str) -> Problem:
    detail = {
        "token": "This token is over its request rate limit.",
        "auth": "Too many failed authentications from this address.",
    }[what]
    return Problem(429, "rate-limited", "Too many requests", f"{detail} Retry after {retry_after} seconds.",
                   {"Retry-After": str(retry_after)})


# --- bulk: a file of deposits or charges over HTTP (batches.py) --------------------------------------

def bulk_media_type(got: str) -> Problem:
    return Problem(415, "unsupported-media-type", "Send a CSV file or a JSON array",
                   f"The body was sent as {got or 'no content type'}; send the file as text/csv (columns user, amount, "
                   "and optionally reason, reference and metadata.<key>) or application/json (an array of objects "
                   "with the same fields).")


def bulk_too_many_rows(count: int, limit: int) -> Problem:
    return Problem(413, "body-too-large", "Too many rows for one batch",
                   f"The file has {count:,} rows; one batch takes at most {limit:,}. Nothing was queued. Split the "
                   "file and send each part as its own batch (each part gets its own batch id).")


def bulk_invalid_rows(errors: list[dict]) -> Problem:
    lines = ", ".join(f"{e['line']} ({e['field']})" for e in errors[:20]) + (", ..." if len(errors) > 20 else "")
    return Problem(422, "validation", "Some rows are invalid",
                   f"Nothing was queued or sent to Paywalls. Fix these lines (as an editor numbers them, the header "
                   f"is line 1): {lines}. Or send ?skip_invalid=true to run only the valid rows.", errors=errors)


def bulk_row_error(line: int, field: str, message: str) -> dict:
    """A row's problem: the file's line, the field, and what to fix."""
    return {**field_error(field, message), "line": line, "pointer": f"/lines/{line}" + ("/" + field if field else "")}


def bulk_batch_reused(batch_id: str) -> Problem:
    return Problem(422, "idempotency-key-reused", "This batch id was used for another file",
                   f"batch_id {batch_id} already names a batch of this token with different rows. Its rows' "
                   "idempotency keys derive from it, so it cannot name a second file: leave batch_id out (the "
                   "file's content then names the batch) or choose a new one. Nothing was queued.")


def bulk_not_found() -> Problem:
    return not_found("This batch (of this token)")


BULK_QUERY = {
    "op": "op must be deposit or charge: what every row of the file does.",
    "skip_invalid": "skip_invalid must be true or false.",
    "format": "format must be json or csv.",
}
BULK_QUERY_ONCE = "{name} may be given once."
BULK_TOKEN_GONE = "The token that sent this batch was revoked, disabled or expired, or lost the {operation} operation, " \
                  "before the batch finished: the rows not yet sent were not sent."
BULK_FAILED = ("The relay hit an unexpected error running this batch; it is logged with the batch id. Send the same "
               "file again to resume it: rows already credited are not credited twice.")
def bulk_refused_on_resume(problems: list[str]) -> str:
    shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
    return (f"The rest of the batch was not sent: under the token's current settings {len(problems)} problem(s) "
            f"refuse it ({shown}). Rows already credited stay credited. Fix the token or the file and send it again "
            "(?skip_invalid=true runs the valid rows).")


BULK_LEASE_LOST = "Another relay process took over this batch (this one stopped renewing its lease in time)."


# --- idempotency -------------------------------------------------------------------------------

def key_reused() -> Problem:
    return Problem(422, "idempotency-key-reused", "Idempotency key reused with different fields",
                   "This Idempotency-Key was already used for a call with different fields. A key names one "
                   "operation: send a new key (or a new reference) for a different credit. Nothing was sent to Paywalls.")


def event_reused(dedupe_on: list[str]) -> Problem:
    fields = ", ".join(dedupe_on)
    return Problem(422, "idempotency-key-reused", "This event was already handled with different fields",
                   f"This token identifies an event by {fields}, and an event with the same {fields} was already "
                   "handled with other values in its remaining fields. It is not applied twice. For a different "
                   "credit, send a new reference (or whichever of those fields tells the events apart). "
                   "Nothing was sent to Paywalls.", dedupe_on=list(dedupe_on))


def claim_contended() -> Problem:
    return Problem(409, "idempotency-in-flight", "The same call is being handled",
                   "The relay could not claim this call because another request for the same event kept changing "
                   "it. Retry after 1 second: nothing is applied twice.", {"Retry-After": "1"})


def token_changed() -> Problem:
    return Problem(409, "token-changed", "The token changed during this call",
                   "The token's namespace, dedupe fields or caps were changed while this call was being handled. Nothing "
                   "was sent to Paywalls. Retry: the call is handled under the token's new settings.",
                   {"Retry-After": "1"})


def token_edit_waited() -> Problem:
    return Problem(503, "unavailable", "Calls in flight kept the token edit waiting",
                   "This change must wait until the calls being recorded right now have ended, and they did not end "
                   "within a few seconds. Nothing was changed. Retry in a few seconds.", {"Retry-After": "5"})


def namespace_rule_differs(namespace: str, rule: list[str], tokens: list[str]) -> Problem:
    return Problem(409, "namespace-rule-differs", "Tokens of one namespace must dedupe on the same fields",
                   f"Namespace {namespace} holds tokens ({', '.join(tokens[:5])}) that identify an event by "
                   f"{', '.join(rule)}. A token of the namespace must use the same dedupe fields, or the same event "
                   f"arriving through two tokens would be two credits: create it with --dedupe-on {','.join(rule)}, "
                   "or use another namespace.", limit=["namespace", "dedupe_on"])


def identity_locked(token_id: str, changing: list[str], count: int, newest: str | None) -> Problem:
    names = " and ".join(changing)
    return Problem(409, "token-identity-locked", f"The token's {names} cannot change while it has stored events",
                   f"Token {token_id} has {count} stored idempotency keys (the newest from {newest}). Its {names} "
                   "decide which of them a request repeats, so changing it would let a replay of an event already "
                   "credited be credited again. Instead, create a new token with the new settings for new "
                   "workflows and revoke this one when they have moved, or change it after `paywalls-relay "
                   "idempotency purge` has removed its keys (RELAY_IDEMPOTENCY_RETENTION_DAYS after the newest).",
                   limit=changing)


def in_flight(retry_after: int) -> Problem:
    return Problem(409, "idempotency-in-flight", "The same call is still in progress",
                   f"An identical call with this Idempotency-Key is still being processed. Retry after "
                   f"{retry_after} seconds: you will get its answer, and nothing is applied twice.",
                   {"Retry-After": str(retry_after)})


def bad_idempotency_key() -> Problem:
    return validation([field_error("Idempotency-Key",
                                   "The Idempotency-Key header must be 1-255 printable ASCII characters "
                                   "(optionally in double quotes). Leave it out to let the relay derive one.")])


# --- upstream ----------------------------------------------------------------------------------

UPSTREAM_CONNECT_FAILED = "The relay could not connect to Paywalls ({why})."
UPSTREAM_DROPPED = "The connection to Paywalls dropped before its answer."
UPSTREAM_TIMEOUT = "Paywalls did not answer in time."
UPSTREAM_NO_JSON = "Paywalls answered without a JSON body."
UPSTREAM_RATE_LIMITED = "Paywalls kept asking the relay to slow down (429)."
UPSTREAM_SERVER_ERROR = "Paywalls answered {status}: {message}"
UPSTREAM_KEY_REFUSED = "Paywalls refused the relay's own API key; the relay operator must check PAYWALLS_API_KEY."
UPSTREAM_REDIRECTED = "Paywalls answered with a redirect ({status})."
UPSTREAM_UNCONFIRMED = ("An earlier attempt of this call may have reached Paywalls, and this retry did not confirm "
                        "it ({message}).")
UPSTREAM_ODD_SHAPE = "Paywalls answered {status} with a body the relay does not recognise."

def upstream_rejected(status: int, message: str) -> Problem:
    return Problem(status, "upstream-rejected", "Paywalls refused the call",
                   f"Paywalls answered {status}: {message}", upstream_status=status)


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


def upstream_ambiguous(status: int, why: str) -> Problem:
    return Problem(status, "upstream-ambiguous", "Paywalls did not confirm the call",
                   f"{_sentence(why)} The deposit or charge may or may not have been applied. {SAFE_TO_RETRY}")


def upstream_misdirected(status: int) -> Problem:
    return Problem(502, "upstream-misdirected", "The relay is not configured to reach Paywalls",
                   f"The Paywalls API answered {status} (a redirect), which it never does: the relay's "
                   "PAYWALLS_BASE_URL points to the wrong place (for example http:// instead of https://, or a proxy "
                   "or login page). Nothing was applied. The relay operator must set PAYWALLS_BASE_URL to "
                   "https://api.paywalls.ai/v1; then retrying with the same fields is safe.")


def outcome_unrecorded() -> Problem:
    return Problem(503, "outcome-unrecorded", "The relay could not record Paywalls' answer",
                   "Paywalls was called, but the relay could not record its answer in time (its database failed). "
                   f"The deposit or charge may or may not have been applied. {SAFE_TO_RETRY} The relay completes it "
                   "by itself with `paywalls-relay ledger resolve` if nobody retries.", {"Retry-After": "5"})


def upstream_unavailable(why: str) -> Problem:
    """For reads (balance): nothing was changed."""
    return Problem(502, "upstream-unavailable", "Paywalls is unavailable", f"{_sentence(why)} Nothing was changed; retry later.")


def database_unavailable() -> Problem:
    return Problem(503, "unavailable", "The relay's database is unavailable",
                   f"The relay could not reach its database. {SAFE_TO_RETRY}",
                   {"Retry-After": "5"})


def not_found(what: str) -> Problem:
    return Problem(404, "not-found", "Not found", f"{what} does not exist.")


def method_not_allowed() -> Problem:
    return Problem(405, "method-not-allowed", "Method not allowed", "This path does not take that method.")


def http_error(status: int, name: str) -> Problem:
    """Any other error the web layer raises (a body cut off mid-way is a 400): one of the documented types, so every
    client has a message for it (schemas/problem.json's enum)."""
    if status >= 500:
        return Problem(status, "internal", "Internal error", f"The relay could not handle the request ({name}). "
                       + SAFE_TO_RETRY)
    return Problem(status, "malformed-body", "The request could not be read",
                   f"The relay could not read the request as sent ({name}). Send the JSON body again, whole.")


def internal_error() -> Problem:
    return Problem(500, "internal", "Internal error",
                   "The relay hit an unexpected error; it is logged with this request id. " + SAFE_TO_RETRY)


# --- startup and CLI ---------------------------------------------------------------------------

SANDBOX_BANNER = ("SANDBOX MODE: PAYWALLS_API_KEY is not set, so the relay talks to its embedded simulated "
                  "upstream. No real balance changes. Set PAYWALLS_API_KEY to go live.")


def dev_stack_database(error: Exception) -> str:
    why = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return (f"dev-stack could not open and migrate the database given with --database-url ({why}). Give a reachable "
            "sqlite:///path or postgresql://user@host/db URL, or leave the option out for a temporary SQLite file.")


# --- bulk deposits and charges (relay/bulk.py, `paywalls-relay bulk`) ----------------------------------------

BULK_EMPTY = "The file is empty: it needs a header line (user,amount,...) and one line per credit."
BULK_NO_ROWS = "The file has a header but no rows."
BULK_UTF16 = ("The file is UTF-16 (Excel's \"Unicode text\"). Save it as \"CSV UTF-8 (comma delimited)\" and "
              "try again.")
BULK_NOT_UTF8 = ("The file is not UTF-8 (an invalid byte at offset {offset}). Save it as \"CSV UTF-8\" and "
                 "try again; nothing was read from it.")
BULK_NOT_A_LIST = "A JSON file must be an array of objects such as {\"user\": \"acme:user_1\", \"amount\": \"10\"}."
BULK_ITEM_NOT_OBJECT = "Each item of the array must be an object with user and amount."
BULK_BATCH_ID = ("A batch id is 1-40 characters: letters, digits and . _ : - (starting with a letter or digit), "
                 "e.g. migration-2026-11.")
BULK_DECIMAL_COMMA = "Write the decimal mark as a point (1.5, not 1,5): the relay does not guess."
BULK_NO_DEDUPE_ON = ("--dedupe-on is the token's setting, not the file's: a file deduplicated on other fields than "
                     "the token's HTTP calls could credit an event twice. Create a token with the rule you want "
                     "(tokens create --dedupe-on user,metadata.reference) and pass its --token-id.")
BULK_STOPPING = "Stopping: the calls in flight finish, no new row starts (Ctrl-C again to abort)."
BULK_SUMMARY = "Batch {batch}: {rows} rows in {seconds:.1f} s: {counts}"
BULK_ALREADY_DONE = ("{count} rows were already done (an earlier run of this file, or a call with the same fields): "
                     "replayed, not sent again.")
BULK_SLOWED = "Paywalls asked to slow down {count} time(s); the run paused and lowered its concurrency."
BULK_UNKNOWN_ROW = "  line {line}: unknown outcome ({error}) key {key}"
BULK_UNKNOWN_AFTER = ("Run the same file again later (or `paywalls-relay ledger resolve`): those rows are re-sent "
                      "with their own keys and never applied twice.")
BULK_STOPPED_EARLY = "Stopped before the end: run the same file again to send the rest."
BULK_WOULD_SEND = "Would send {rows} rows ({total} in all); {done} already done{busy}."
BULK_IN_FLIGHT = "; {count} in flight elsewhere"
BULK_PROBLEM_LINES = "{count} line(s) have problems."
BULK_PROGRESS = ("bulk: {done}/{total} rows, {applied} {label}, {replayed} replayed, {failed} failed, "
                 "{rate:.1f} rows/s")
BULK_STOPPED = "Not sent: the run was stopped before this row. Run the same file again to send it."


def bulk_unknown_column(name: str, position: int | None) -> str:
    where = f" (column {position})" if position else ""
    return (f"Unknown column '{name}'{where}. The columns are user, amount, reason, reference and metadata.<key> "
            "(e.g. metadata.campaign). A misspelt column would be dropped silently, so the file is refused.")


def bulk_duplicate_column(name: str) -> str:
    return f"The column '{name}' appears twice in the header."


def bulk_missing_column(name: str) -> str:
    return f"The header has no '{name}' column; it is required."


def bulk_unreadable(why: str) -> str:
    return f"This line cannot be read as CSV ({why}); check its quotes."


def bulk_cell_count(got: int, expected: int) -> str:
    return (f"This line has {got} cells and the header has {expected}. A value with the separator in it must be "
            "quoted.")


def bulk_not_json(why: str) -> str:
    return f"The file starts with [ but is not valid JSON ({why})."


def bulk_same_event(first_line: int, dedupe_on: list[str]) -> str:
    return (f"Same credit as line {first_line}: this token tells events apart by {', '.join(dedupe_on)}, and both "
            "lines have the same values, so it would be applied once, not twice. If both are meant, give each "
            "its own reference; if not, delete this line.")


def bulk_has_problems(count: int) -> str:
    return (f"{count} line(s) have problems; nothing was sent. Fix them (run with --dry-run to list them), or run "
            "with --skip-invalid to send the valid rows and report the others as invalid.")


# --- REST hooks: POST/GET/DELETE /v1/relay/hooks (relay/hooks.py) and their deliveries (relay/deliveries.py) -------

FIELD_MESSAGES.update({
    ("target_url", "required"): "target_url is required: the URL the relay POSTs each event to, e.g. the Zap's "
                                "bundle.targetUrl or the n8n trigger's webhook URL.",
    ("target_url", "*"): "target_url must be an https:// URL of at most 2048 characters (http:// too on a "
                         "development relay).",
    ("event_types", "*"): "event_types must be a non-empty list of up to 30 distinct event types, such as "
                          "[\"paywall.balance.depleted\"], a family such as \"paywall.balance.*\", or [\"*\"] alone "
                          "for every event.",
    ("filter", "*"): "filter must be an object such as {\"user\": \"acme:user_123\"}: user is the one user whose "
                     "events this hook receives (letters, digits and _ - . : only), or null for every user.",
})
HOOK_STAR_ALONE = "event_types: \"*\" means every event and must be the only item: [\"*\"]."
HOOK_UNKNOWN_QUERY = "{name} is not a parameter of this call (parameters: {known})."
HOOK_LIMIT_QUERY = "limit must be a whole number from 1 to 100."
HOOK_CURSOR = "cursor must be the next_cursor value of the previous page; leave it out to start from the newest attempt."


def hook_target_refused(why: str) -> Problem:
    return validation([field_error("target_url", why)])


def too_many_hooks(limit: int) -> Problem:
    return validation([field_error("target_url",
                                   f"This token already has {limit} active hooks, the most one token may have. Delete "
                                   "the ones no workflow uses (GET /v1/relay/hooks lists them, DELETE "
                                   "/v1/relay/hooks/<id> removes one), or use a token per workflow.")])


def hook_user_not_allowed(user: str) -> Problem:
    return Problem(403, "forbidden", "User not allowed for this token",
                   f"This token may not subscribe to the events of user '{user}': it is limited to users matching its "
                   "user pattern. Check filter.user, or ask for a token that covers this user.", limit="user_pattern")


def hook_not_found() -> Problem:
    return not_found("This hook (of this token)")


# A delivery's last_error when it stops without an answer to show (the delivery log, GET .../deliveries).
DELIVERY_HOOK_DELETED = "not sent: the hook was deleted"
DELIVERY_HOOK_GONE = "the target answered 410 Gone: the hook was deleted and its pending deliveries cancelled"
DELIVERY_TOKEN_UNUSABLE = "not sent: the hook's token was revoked, disabled or expired, or lost the events operation"
DELIVERY_USER_NOT_ALLOWED = "not sent: the hook's token may no longer see this event's user (its user pattern changed)"
DELIVERY_GAVE_UP = "gave up: no 2xx answer within 24 hours of the event"


# --- events (webhooks in, relay-made events, GET /v1/relay/events) ------------------------------------------------

def invalid_event(errors: list[dict]) -> Problem:
    fields = ", ".join(e["field"] for e in errors)
    return Problem(422, "validation", "Not a usable event",
                   f"Nothing was stored. Fix these fields: {fields}.", errors=errors)


def webhooks_off() -> Problem:
    return Problem(404, "not-found", "Webhook intake is off",
                   "This relay has no Paywalls webhook secret, so it accepts no webhooks. Set PAYWALLS_WEBHOOK_SECRET to "
                   "the whsec_... secret of your Paywalls subscription, or register one with `paywalls-relay webhooks "
                   "subscribe --url https://<this relay>/v1/webhooks/paywalls`.")


WEBHOOK_REFUSED = {
    "signature_missing": "It has no X-Paywalls-Signature header.",
    "signature": "Its X-Paywalls-Signature does not match the body under any configured webhook secret. Check that "
                 "PAYWALLS_WEBHOOK_SECRET is the whsec_... secret of this subscription, whole, prefix included.",
    "timestamp_missing": "It has no X-Paywalls-Timestamp header.",
    "timestamp": "Its X-Paywalls-Timestamp is more than 5 minutes from the relay's clock (a replayed delivery, or a "
                 "clock out of sync: check NTP on the relay's machine).",
}


def webhook_refused(reason: str) -> Problem:
    return Problem(401, "webhook-refused", "Webhook delivery refused",
                   f"{WEBHOOK_REFUSED[reason]} Nothing was stored.", reason=reason)


EVENT_TYPE_FILTER = ("type '{value}' is not an event type: use names such as paywall.balance.deposit.created, a family "
                     "such as paywall.balance.*, or * for every type (repeat type=, or separate with commas).")
RESERVED_EVENT_ID = "id must not start with evt_relay_: those are the ids of the events the relay makes itself."
EVENT_TYPE_FILTERS = "type names at most {limit} event types or families; paywall.balance.* covers every balance event."
