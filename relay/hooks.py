"""REST hooks: POST /v1/relay/hooks subscribes a target URL to events, GET lists a token's hooks, DELETE removes one,
and GET /v1/relay/hooks/<id>/deliveries is its delivery log. Token operation `events`; a token sees only its own
hooks (another token's hook is as unknown as one that does not exist).

Zapier's public-app rules forbid static webhook URLs, so each Zap's performSubscribe posts its own target URL here
and performUnsubscribe deletes it; n8n's trigger node does the same from webhookMethods. What is delivered, and how,
is relay/deliveries.py; where the relay may connect is relay/targets.py.
"""

from datetime import datetime

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import and_, func, select, update

from . import clock, db, messages, targets, tokens, validation
from .api import authenticated
from .models import Delivery, DeliveryAttempt, Event, Hook, as_utc

bp = Blueprint("hooks", __name__)

OPERATION = "events"
MAX_HOOKS_PER_TOKEN = 100  # each event is POSTed once per matching hook: a bound on what one token can fan out
HOOKS = Hook.__table__
DELIVERIES = Delivery.__table__
ATTEMPTS = DeliveryAttempt.__table__


def production() -> bool:
    return current_app.config["RELAY"]["RELAY_ENV"] == "production"


@bp.post("/v1/relay/hooks")
def subscribe():
    token = authenticated(OPERATION)
    body = validation.parse_json_object(validation.read_body(), request.content_type)
    errors = validation.schema_errors("hook-request.json", body)
    event_types = body.get("event_types", ["*"])
    if isinstance(event_types, list) and "*" in event_types and len(event_types) > 1 and not any(e["field"] == "event_types" for e in errors):
        errors.append(messages.field_error("event_types", messages.HOOK_STAR_ALONE))
    if errors:
        raise messages.validation(errors)
    filter_user = (body.get("filter") or {}).get("user")
    if filter_user is not None:
        _authorize_filter(token, filter_user)
    try:
        targets.check(body["target_url"], production())
    except targets.Refused as refusal:
        raise messages.hook_target_refused(str(refusal)) from None
    now = clock.now()
    with db.transaction() as session:
        # One hook per (token, target, types, filter): a subscribe retried after a lost answer, or sent twice by a
        # tool, must not make each event arrive twice.
        if session.connection().dialect.name == "postgresql":
            # Serialise the token's subscribes, so the check-then-insert and the per-token limit hold under concurrency.
            session.execute(select(func.pg_advisory_xact_lock(func.hashtext("relay.hooks:" + token.id))))
        active = list(session.scalars(select(Hook).where(Hook.token_id == token.id, Hook.deleted_at.is_(None))
                                      .order_by(Hook.created_at, Hook.id)))
        for hook in active:
            if hook.target_url == body["target_url"] and hook.event_types == event_types and \
                    hook.filter_user == filter_user:
                return jsonify(describe(hook)), 200
        if len(active) >= MAX_HOOKS_PER_TOKEN:
            raise messages.too_many_hooks(MAX_HOOKS_PER_TOKEN)
        hook = Hook(id=new_id(), token_id=token.id, target_url=body["target_url"], event_types=event_types,
                    filter_user=filter_user, created_at=now)
        session.add(hook)
    response = jsonify(describe(hook))
    response.status_code = 201
    response.headers["Location"] = f"/v1/relay/hooks/{hook.id}"
    return response


def _authorize_filter(token, user: str):
    if not tokens.user_allowed(token, user):
        raise messages.hook_user_not_allowed(user)


@bp.get("/v1/relay/hooks")
def list_hooks():
    token = authenticated(OPERATION)
    _only_args(["target_url"])
    query = select(Hook).where(Hook.token_id == token.id, Hook.deleted_at.is_(None))
    if request.args.get("target_url"):
        query = query.where(Hook.target_url == request.args["target_url"])
    with db.read() as session:
        hooks = list(session.scalars(query.order_by(Hook.created_at, Hook.id)))
    return jsonify(data=[describe(hook) for hook in hooks])


@bp.get("/v1/relay/hooks/<hook_id>")
def show(hook_id: str):
    token = authenticated(OPERATION)
    with db.read() as session:
        hook = find(session, token, hook_id)
    return jsonify(describe(hook))


@bp.delete("/v1/relay/hooks/<hook_id>")
def unsubscribe(hook_id: str):
    """Delete the hook and cancel what it had pending. Deleting a hook already deleted (by an earlier DELETE, or
    because its target answered 410) answers it again, 200: Zapier unsubscribes when a Zap is turned off, whatever
    happened before, and an error there would only confuse."""
    token = authenticated(OPERATION)
    with db.transaction() as session:
        hook = find(session, token, hook_id)
        if hook.deleted_at is None:
            delete(session.connection(), hook.id, "unsubscribed", clock.now())
            session.refresh(hook)
    return jsonify(describe(hook))


@bp.get("/v1/relay/hooks/<hook_id>/deliveries")
def deliveries(hook_id: str):
    token = authenticated(OPERATION)
    _only_args(["limit", "cursor"])
    limit = _limit(request.args.get("limit"))
    cursor = _cursor(request.args.get("cursor"))
    with db.read() as session:
        hook = find(session, token, hook_id)
        query = (select(ATTEMPTS, DELIVERIES.c.state, DELIVERIES.c.next_attempt_at, Event.__table__.c.type)
                 .join(DELIVERIES, DELIVERIES.c.id == ATTEMPTS.c.delivery_id)
                 .outerjoin(Event.__table__, Event.__table__.c.id == ATTEMPTS.c.event_id)
                 .where(ATTEMPTS.c.hook_id == hook.id))
        if cursor is not None:
            query = query.where(ATTEMPTS.c.id < cursor)
        rows = session.execute(query.order_by(ATTEMPTS.c.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    data = [{"delivery_id": row.delivery_id, "event_id": row.event_id, "event_type": row.type,
             "attempt": row.attempt, "at": iso(row.at), "status": row.status, "error": row.error,
             "duration_ms": row.duration_ms, "state": row.state,
             "next_attempt_at": iso(row.next_attempt_at) if row.state == "pending" else None} for row in page]
    next_cursor = f"att_{page[-1].id}" if len(rows) > limit else None
    return jsonify(data=data, next_cursor=next_cursor)


# --- helpers ------------------------------------------------------------------------------------------------------

def new_id() -> str:
    return "hook_" + tokens._random(20)


def find(session, token, hook_id: str) -> Hook:
    hook = session.get(Hook, hook_id) if len(hook_id) <= 32 else None
    if hook is None or hook.token_id != token.id:
        raise messages.hook_not_found()
    return hook


def delete(connection, hook_id: str, reason: str, now: datetime, last_error: str | None = None) -> bool:
    """Mark a hook deleted and cancel its pending deliveries, in the caller's transaction. False if it already was."""
    deleted = connection.execute(update(HOOKS).where(HOOKS.c.id == hook_id, HOOKS.c.deleted_at.is_(None))
                                 .values(deleted_at=now, deleted_reason=reason)).rowcount == 1
    connection.execute(update(DELIVERIES).where(and_(DELIVERIES.c.hook_id == hook_id, DELIVERIES.c.state == "pending"))
                       .values(state="cancelled", lease_until=None, lease_owner=None,
                               last_error=last_error or messages.DELIVERY_HOOK_DELETED))
    return deleted


def describe(hook: Hook) -> dict:
    """A hook as schemas/hook.json says."""
    return {"id": hook.id, "target_url": hook.target_url, "event_types": list(hook.event_types),
            "filter": {"user": hook.filter_user}, "status": "deleted" if hook.deleted_at else "active",
            "deleted_reason": hook.deleted_reason, "created_at": iso(hook.created_at), "deleted_at": iso(hook.deleted_at),
            "deliveries_url": f"/v1/relay/hooks/{hook.id}/deliveries"}


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else as_utc(moment).isoformat().replace("+00:00", "Z")


def _only_args(known: list[str]):
    unknown = sorted(set(request.args) - set(known))
    if unknown:
        raise messages.validation([messages.field_error(name, messages.HOOK_UNKNOWN_QUERY.format(
            name=name, known=", ".join(known))) for name in unknown])


def _limit(value) -> int:
    if value in (None, ""):
        return 50
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 100:
        raise messages.invalid_query("limit", messages.HOOK_LIMIT_QUERY)
    return int(value)


def _cursor(value) -> int | None:
    if value in (None, ""):
        return None
    number = value.removeprefix("att_")
    if not value.startswith("att_") or not (number.isascii() and number.isdigit()) or len(number) > 18:
        raise messages.invalid_query("cursor", messages.HOOK_CURSOR)
    return int(number)
