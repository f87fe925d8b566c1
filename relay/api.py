"""The Paywalls-compatible paths, plus /v1/relay/*: HTTP only. A money call reads top to bottom:
authenticate, validate, authorize here, then claim the event, call Paywalls and record the outcome in money.py."""

import json
from datetime import datetime

from flask import Blueprint, Response, current_app, g, jsonify, request

from . import batches, bulk, caps, clock, dates, db, events, keys, ledger, messages, money, tokens, validation

bp = Blueprint("api", __name__)
JSON = "application/json"


def settings() -> dict:
    return current_app.config["RELAY"]


def authenticated(operation: str | None):
    """The calling token, after the failed-auth throttle, the token checks and its rate limit."""
    limits = current_app.extensions["relay.ratelimits"]
    with limits.guarding_auth(request.remote_addr or "-", valid_always_pass=True), db.read_connection() as connection:
        token = tokens.authenticate(connection, request.headers.get("Authorization"), clock.now())
    g.token_id, g.operation = token.id, operation
    if token.rate_limit:
        wait = limits.hit(token.rate_limit, "token", token.id)
        if wait:
            raise messages.rate_limited(wait, "token")
    if operation:
        tokens.require_operation(token, operation)
    return token


@bp.post("/v1/user/balance/deposit")
def deposit():
    return money_call("deposit", "deposit-request.json")


@bp.post("/v1/user/charge")
def charge():
    return money_call("charge", "charge-request.json")


def money_call(op: str, schema: str) -> Response:
    token = authenticated(op)
    dry_run = validation.dry_run(request.args)
    body = validation.money_body(schema, validation.read_body(), request.content_type, settings()["RELAY_AMOUNT_DECIMALS"])
    tokens.authorize_money(token, op, body)
    identity = money.identify(token, op, body, keys.header_key(request.headers.get("Idempotency-Key")))
    g.idempotency_key = identity.shown_key  # refusals from here on (409, 422, 403 caps) carry it too
    if dry_run:  # the same checks as the real call, read only; nothing claimed, reserved or sent (money.py)
        return answer(200, json.dumps(money.rehearse(token, op, body, identity, g.request_id)), identity.shown_key,
                      replayed=False)
    result = money.perform(token, op, body, identity, g.request_id)  # claim, call Paywalls, record (money.py)
    return answer(result.status, result.text, result.key, result.replayed)


@bp.after_request
def idempotency_headers(response: Response) -> Response:
    """Refusals after the key is known (409, 422 reuse, 403 caps) carry it too."""
    if g.get("idempotency_key") and "Idempotency-Key" not in response.headers:
        response.headers["Idempotency-Key"] = g.idempotency_key
        response.headers["Idempotent-Replayed"] = "false"
    return response


def answer(status: int, text: str, key: str, replayed: bool) -> Response:
    g.replayed = replayed
    mimetype = JSON if status < 400 else messages.PROBLEM_JSON
    if status >= 400:
        text = messages.with_request_id(text, g.request_id)
    headers = {"Idempotency-Key": key, "Idempotent-Replayed": "true" if replayed else "false"}
    if status in (429, 503):
        headers["Retry-After"] = "5"
    return Response(text, status, headers, mimetype=mimetype)


@bp.get("/v1/user/balance")
def balance():
    token = authenticated("balance")
    query = validation.query("balance-query.json", request.args)
    tokens.authorize_user(token, query["user"])
    outcome = current_app.extensions["relay.upstream"].call("GET", "/user/balance", params={"user": query["user"]})
    body = outcome.body if outcome.kind == "ok" and _balance_shape(outcome.body) else None
    with db.transaction() as session:
        ledger.record(session, token, "balance", "read" if body else "failed", created_at=clock.now(),
                      user=query["user"], upstream_status=outcome.status, latency_ms=outcome.latency_ms,
                      request_id=g.request_id, balance_formatted=body["balanceFormatted"] if body else None)
    if body:
        return Response(json.dumps(body), outcome.status, mimetype=JSON)
    if outcome.kind == "rejected":
        raise messages.upstream_rejected(outcome.status, outcome.message)
    if outcome.kind == "redirected":
        raise messages.upstream_misdirected(outcome.status)
    if outcome.kind == "ok":
        raise messages.upstream_unavailable(messages.UPSTREAM_ODD_SHAPE.format(status=outcome.status))
    raise messages.upstream_unavailable(outcome.message)


def _balance_shape(body: dict) -> bool:
    formatted = body.get("balanceFormatted")
    return isinstance(formatted, str) and 0 < len(formatted) <= money.MAX_BALANCE_TEXT \
        and isinstance(body.get("balance", ""), str)


@bp.get("/v1/relay/me")
def me():
    token = authenticated(None)
    with db.read() as session:
        usage = caps.usage(session, token, clock.now())
    described = tokens.describe(token, clock.now())
    return jsonify(**described, **usage, sandbox=settings()["SANDBOX"])


@bp.get("/v1/relay/deposits")
def deposits():
    token = authenticated("ledger")
    args = request.args
    unknown = set(args) - {"user", "since", "limit", "cursor"}
    if unknown:
        raise messages.validation([messages.field_error(name, messages.unknown_field(name, ["user", "since", "limit", "cursor"]))
                                   for name in sorted(unknown)])
    limit, since, cursor = _limit(args.get("limit")), _since(args.get("since")), _cursor(args.get("cursor"))
    if args.get("user"):
        # The same rules as a deposit's user (the feed's OpenAPI parameter says so).
        errors = validation.schema_errors("balance-query.json", {"user": args["user"]})
        if errors:
            raise messages.validation(errors)
        tokens.authorize_user(token, args["user"])
    with db.read() as session:
        if cursor is not None and not ledger.cursor_handed_out(session, cursor, args.get("user"), since):
            raise messages.invalid_query("cursor", messages.CURSOR_UNKNOWN)
        data, next_cursor = ledger.deposits(session, user=args.get("user"), since=since, limit=limit,
                                            before_id=cursor, allowed=lambda user: tokens.user_allowed(token, user),
                                            token=token)
    return jsonify(data=data, next_cursor=next_cursor)


def _limit(value) -> int:
    if value in (None, ""):
        return 50
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 100:  # "²".isdigit() is True
        raise messages.invalid_query("limit", "limit must be a whole number from 1 to 100.")
    return int(value)


def _since(value) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return dates.parse(value)
    except dates.DateError as error:
        raise messages.invalid_query("since", f"since {error}.") from None


def _cursor(value) -> int | None:
    try:
        return ledger.parse_cursor(value)
    except ValueError:
        raise messages.invalid_query("cursor", messages.CURSOR_UNKNOWN) from None


# --- bulk: a file of deposits or charges, run in the background (batches.py) -------------------------------------

BULK_ARGS = ("op", "dry_run", "skip_invalid", "batch_id")
BULK_MEDIA = ("text/csv", "application/json", "text/plain")


@bp.post("/v1/relay/bulk")
def bulk_submit():
    """Queue a file of deposits or charges (202 with the batch id at once), or say what it would do (?dry_run=true).
    Every check a row's own call would make happens first, over the whole file (bulk.plan): nothing is queued while
    a line is invalid (unless ?skip_invalid=true) or while the file's total is over a cap, so a batch is never
    refused half applied."""
    token = authenticated("bulk")
    args = _bulk_args(request.args)
    operation = args["op"]
    tokens.require_operation(token, operation)
    raw = validation.read_body(batches.MAX_UPLOAD_BYTES)
    media = (request.content_type or "").split(";")[0].strip().lower()
    if media not in BULK_MEDIA:
        raise messages.bulk_media_type(request.content_type)
    if media == "application/json" and not raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        raise messages.validation([messages.field_error("", messages.BULK_NOT_A_LIST)])
    rows, problems = bulk.read_rows(raw, operation, settings()["RELAY_AMOUNT_DECIMALS"])
    if len(rows) > batches.MAX_ROWS:
        raise messages.bulk_too_many_rows(len(rows), batches.MAX_ROWS)
    batch_key = bulk.batch_id(raw, args["batch_id"])
    plan = bulk.plan(token, operation, rows, problems, batch_key)
    # A dry run answers what the real call would: the same refusals, and the plan where it would queue.
    errors = [messages.bulk_row_error(p["line"], p["field"], p["message"]) for p in plan.problems]
    lines = {row.line for row in rows}
    # Problems of the file itself (the header, an unreadable line) are never skipped: which rows it holds is unsure.
    if errors and (not args["skip_invalid"] or any(p["line"] not in lines for p in plan.problems)
                   or len(plan.invalid_lines) == len(rows)):
        raise messages.bulk_invalid_rows(errors)
    if plan.refusal is not None:  # the file's total over a cap: refused whole, before any row is sent
        raise plan.refusal
    if args["dry_run"]:
        return jsonify(batches.plan_json(plan))
    with db.transaction() as session:
        batch, queued = batches.submit(session, token, operation, raw.decode("utf-8"), batch_key, len(rows),
                                       args["skip_invalid"], clock.now())
    batches.wake(current_app)
    described = batches.describe(batch, with_report=False)
    response = jsonify(**described, queued=queued, skipped_invalid=len(plan.invalid_lines))
    response.status_code = 202
    response.headers["Location"] = described["status_url"]
    return response


@bp.get("/v1/relay/bulk/<batch_id>")
def bulk_status(batch_id: str):
    """A batch's progress, and its report: JSON, or ?format=csv for the report as a spreadsheet-safe CSV."""
    token = authenticated("bulk")
    unknown = set(request.args) - {"format"}
    if unknown:
        raise messages.validation([messages.field_error(name, messages.unknown_field(name, ["format"]))
                                   for name in sorted(unknown)])
    form = request.args.get("format", "json")
    if form not in ("json", "csv"):
        raise messages.invalid_query("format", messages.BULK_QUERY["format"])
    with db.read() as session:
        batch = batches.find(session, token, batch_id)
    described = batches.describe(batch)
    if form == "csv":
        text = batches.report_csv(batch, described["report"] or [])
        return Response(text, 200, {"Content-Disposition": f'attachment; filename="{batch["id"]}-report.csv"'},
                        mimetype="text/csv")
    return jsonify(described)


def _bulk_args(args) -> dict:
    unknown = set(args) - set(BULK_ARGS)
    if unknown:
        raise messages.validation([messages.field_error(name, messages.unknown_field(name, list(BULK_ARGS)))
                                   for name in sorted(unknown)])
    if any(len(args.getlist(name)) > 1 for name in args):
        name = next(name for name in args if len(args.getlist(name)) > 1)
        raise messages.invalid_query(name, messages.BULK_QUERY.get(name, messages.BULK_QUERY_ONCE.format(name=name)))
    operation = args.get("op", "deposit")
    if operation not in money.PATHS:
        raise messages.invalid_query("op", messages.BULK_QUERY["op"])
    skip = args.get("skip_invalid", "false")
    if skip not in ("true", "false"):
        raise messages.invalid_query("skip_invalid", messages.BULK_QUERY["skip_invalid"])
    batch_id = args.get("batch_id") or None
    return {"op": operation, "dry_run": validation.dry_run(args), "skip_invalid": skip == "true", "batch_id": batch_id}


# --- events and top-up links (issue 16) ------------------------------------------------------------------------

@bp.get("/v1/user/balance/topup")
def topup():
    """A link the user opens to top up their balance (Paywalls' GET /user/balance/topup), for the flow "balance
    depleted -> email the user a top-up link". Paywalls' answer is passed through as it is."""
    token = authenticated("topup")
    query = validation.query("balance-query.json", request.args)
    tokens.authorize_user(token, query["user"])
    outcome = current_app.extensions["relay.upstream"].call("GET", "/user/balance/topup", params={"user": query["user"]})
    body = outcome.body if outcome.kind == "ok" else None
    with db.transaction() as session:
        ledger.record(session, token, "topup", "read" if body else "failed", created_at=clock.now(),
                      user=query["user"], upstream_status=outcome.status, latency_ms=outcome.latency_ms,
                      request_id=g.request_id)
    if body is not None:
        return Response(json.dumps(body), outcome.status, mimetype=JSON)
    if outcome.kind == "rejected":
        raise messages.upstream_rejected(outcome.status, outcome.message)
    if outcome.kind == "redirected":
        raise messages.upstream_misdirected(outcome.status)
    raise messages.upstream_unavailable(outcome.message)


EVENTS_ARGS = ("type", "limit")


@bp.get("/v1/relay/events")
def recent_events():
    """The newest stored events, for Zapier's performList and samples: ?type= (repeatable, or comma-separated;
    `paywall.balance.*` matches a family), ?limit= (1-100, default 10). A token with a user pattern sees only the
    events of users it matches, never an event without a user."""
    token = authenticated("events")
    unknown = set(request.args) - set(EVENTS_ARGS)
    if unknown:
        raise messages.validation([messages.field_error(name, messages.unknown_field(name, list(EVENTS_ARGS)))
                                   for name in sorted(unknown)])
    types = [part.strip() for value in request.args.getlist("type") for part in value.split(",") if part.strip()]
    if len(types) > events.MAX_TYPE_FILTERS:
        raise messages.invalid_query("type", messages.EVENT_TYPE_FILTERS.format(limit=events.MAX_TYPE_FILTERS))
    for name in types:
        if not events.TYPE_FILTER.fullmatch(name):
            raise messages.invalid_query("type", messages.EVENT_TYPE_FILTER.format(value=name[:120]))
    limit = _limit(request.args.get("limit") or "10")
    with db.read() as session:
        found = events.recent(session, types, limit, lambda user: tokens.user_allowed(token, user),
                              limited=bool(token.user_pattern))
    return jsonify(data=found)
