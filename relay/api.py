"""The Paywalls-compatible paths, plus /v1/relay/*. The request path reads top to bottom:
authenticate, validate, authorize, claim the key, call Paywalls, record the outcome."""

import json
import time
from datetime import datetime

from flask import Blueprint, Response, current_app, g, jsonify, request

from . import amounts, db, idempotency, ledger, messages, tokens, validation
from .idempotency import Claim, Replay
from .models import as_utc, utcnow

bp = Blueprint("api", __name__)
JSON = "application/json"


def settings() -> dict:
    return current_app.config["RELAY"]


def authenticated(operation: str | None):
    """The calling token, after the failed-auth throttle, the token checks and its rate limit."""
    limits = current_app.extensions["relay.ratelimits"]
    with limits.guarding_auth(request.remote_addr or "-"), db.read_connection() as connection:
        token = tokens.authenticate(connection, request.headers.get("Authorization"), utcnow())
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
    return money_call("deposit", "deposit-request.json", "/user/balance/deposit")


@bp.post("/v1/user/charge")
def charge():
    return money_call("charge", "charge-request.json", "/user/charge")


def money_call(op: str, schema: str, path: str) -> Response:
    token = authenticated(op)
    body = validation.money_body(schema, request.get_data(), request.content_type, settings()["RELAY_AMOUNT_DECIMALS"])
    tokens.authorize_money(token, op, body)
    fingerprint = idempotency.fingerprint(op, body)
    key = idempotency.header_key(request.headers.get("Idempotency-Key")) \
        or (fingerprint if tuple(token.dedupe_on) == idempotency.DEFAULT_FIELDS  # the same derivation
            else idempotency.derive_key(op, body, token.dedupe_on))
    g.idempotency_key = key

    # Phase 1: claim the key and reserve the caps, in one transaction (or replay the stored answer).
    claimed = claim_or_wait(token, op, key, fingerprint, body)
    if isinstance(claimed, Replay):
        return answer(claimed.status, claimed.body, key, replayed=True)

    # Phase 2: the call to Paywalls. No transaction is open while it runs.
    outcome = current_app.extensions["relay.upstream"].call(
        "POST", path, json=body, idempotency_key=claimed.upstream_key)

    # Phase 3: record the outcome, settle or release the caps, in one transaction.
    status, text = record_outcome(token, op, body, key, claimed, outcome)
    return answer(status, text, key, replayed=False)


def claim_or_wait(token, op: str, key: str, fingerprint: str, body: dict) -> Claim | Replay:
    """Claim the key; while an identical call is in flight, wait briefly for its answer."""
    micros = amounts.to_micros(body["amount"])
    deadline = time.monotonic() + settings()["RELAY_INFLIGHT_WAIT"]
    while True:
        now = utcnow()
        try:
            with db.write() as session:
                result = idempotency.claim(session, token, op, key, fingerprint, micros, now,
                                           settings()["RELAY_LOCK_TIMEOUT"])
                tokens.touch(session, token, now)
                if isinstance(result, Replay):
                    ledger.record(session, token, op, "replayed", **_entry(body, key, None, request_id=g.request_id))
                return result
        except idempotency.InFlight:
            if time.monotonic() >= deadline:
                raise messages.in_flight(retry_after=1) from None
            time.sleep(0.05)


def record_outcome(token, op: str, body: dict, key: str, claim: Claim, outcome) -> tuple[int, str]:
    entry = _entry(body, key, claim.upstream_key, upstream_status=outcome.status,
                   latency_ms=outcome.latency_ms, request_id=g.request_id)
    # Each branch touches the token's usage rows (drop_reservation) last: every call on the token needs
    # them, so they stay locked only until COMMIT.
    with db.write() as session:
        if outcome.kind == "ok" and op == "charge" and outcome.body.get("success") is False:
            # Nothing was charged: answer as Paywalls did, and let a later retry (after a top-up) try again.
            idempotency.reopen(session, claim, keep_reservation=False, next_generation=True)
            ledger.record(session, token, op, "declined", **entry)
            idempotency.drop_reservation(session, claim, token.id, settled=False)
            return outcome.status, json.dumps(outcome.body)
        if outcome.kind == "ok":
            text = json.dumps(outcome.body)
            idempotency.finish(session, claim, outcome.status, text)
            ledger.record(session, token, op, "credited" if op == "deposit" else "charged",
                          balance_formatted=outcome.body.get("balanceFormatted"), **entry)
            idempotency.drop_reservation(session, claim, token.id, settled=True)
            return outcome.status, text
        if outcome.kind == "rejected":
            problem = messages.upstream_rejected(outcome.status, outcome.message)
            text = json.dumps(problem.body())
            idempotency.finish(session, claim, problem.status, text)
            ledger.record(session, token, op, "rejected", **entry)
            idempotency.drop_reservation(session, claim, token.id, settled=False)
            return problem.status, text
        if outcome.kind == "not_applied":
            idempotency.reopen(session, claim, keep_reservation=False)
            ledger.record(session, token, op, "failed", **entry)
            idempotency.drop_reservation(session, claim, token.id, settled=False)
            problem = messages.upstream_unavailable(outcome.message)
            return problem.status, json.dumps(problem.body())
        # Ambiguous: the key stays open and keeps its reservation; a retry re-sends the same upstream key.
        idempotency.reopen(session, claim, keep_reservation=True)
        ledger.record(session, token, op, "ambiguous", **entry)
        problem = messages.upstream_ambiguous(504 if outcome.timed_out else 502, outcome.message)
        return problem.status, json.dumps(problem.body())


def _entry(body: dict, key: str, upstream_key: str | None, **more) -> dict:
    return {"user": body["user"], "amount": body["amount"], "metadata_": body.get("metadata"),
            "idempotency_key": key, "upstream_key": upstream_key, **more}


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
    with db.transaction() as session:
        ledger.record(session, token, "balance", "read" if outcome.kind == "ok" else "failed", user=query["user"],
                      upstream_status=outcome.status, latency_ms=outcome.latency_ms, request_id=g.request_id,
                      balance_formatted=(outcome.body or {}).get("balanceFormatted"))
    if outcome.kind == "ok":
        return Response(json.dumps(outcome.body), outcome.status, mimetype=JSON)
    if outcome.kind == "rejected":
        raise messages.upstream_rejected(outcome.status, outcome.message)
    raise messages.upstream_unavailable(outcome.message)


@bp.get("/v1/relay/me")
def me():
    token = authenticated(None)
    with db.read() as session:
        usage = tokens.usage(session, token, utcnow())
    described = tokens.describe(token)
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
        data, next_cursor = ledger.deposits(session, user=args.get("user"), since=since, limit=limit,
                                            before_id=cursor, allowed=lambda user: tokens.user_allowed(token, user))
    return jsonify(data=data, next_cursor=next_cursor)


def _limit(value) -> int:
    if value in (None, ""):
        return 50
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise messages.invalid_query("limit", "limit must be a whole number from 1 to 100.")
    return int(value)


def _since(value) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise messages.invalid_query("since", "since must be an ISO 8601 date or date-time, e.g. 2026-11-01T00:00:00Z.") from None
    return as_utc(moment)


def _cursor(value) -> int | None:
    try:
        return ledger.parse_cursor(value)
    except ValueError:
        raise messages.invalid_query("cursor", "cursor must be the next_cursor value of a previous page.") from None
