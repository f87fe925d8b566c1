"""Token management over HTTP: /v1/admin/tokens, behind RELAY_ADMIN_KEY only (never a relay token)."""

import hmac

from flask import Blueprint, current_app, jsonify, request

from . import audit, caps, clock, db, messages, tokens, validation
from .messages import Problem
from .models import Token

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")


@bp.before_request
def require_admin_key():
    admin_key = current_app.config["RELAY"]["RELAY_ADMIN_KEY"]
    if not admin_key:
        raise messages.admin_disabled()
    presented = tokens.bearer(request.headers.get("Authorization")) or ""
    with current_app.extensions["relay.ratelimits"].guarding_auth(request.remote_addr or "-"):
        if not hmac.compare_digest(presented.encode(), admin_key.encode()):
            raise messages.admin_unauthorized()


def _spec() -> dict:
    """The settings object, read with the same rules as a deposit body: size (413), media type (415), duplicate keys,
    UTF-8 and nesting (400). schemas/token-settings.json then checks each field (tokens.parse_spec)."""
    return validation.parse_json_object(validation.read_body(), request.content_type)


def _invalid(error: tokens.SpecError) -> Problem:
    return messages.validation(error.errors)


def _audit(session, action: str, token_id: str, changes: dict | None = None):
    audit.record(session, "admin_api", request.remote_addr, action, token_id, changes, at=clock.now())


def _find(session, token_id: str, lock: bool = False):
    # A change locks the row first, so two admins changing one token at once are audited with true "from" values.
    token = session.get(Token, token_id, with_for_update=True) if lock else tokens.get(session, token_id)
    if token is None:
        raise messages.not_found(f"Token {token_id}")
    return token


@bp.post("/tokens")
def create():
    spec = _spec()
    try:
        with db.transaction() as session:
            token, text = tokens.create(session, spec)
            described = tokens.describe(token, clock.now())
            _audit(session, "token.created", token.id, audit.created(token))
    except tokens.SpecError as error:
        raise _invalid(error) from None
    return jsonify(**described, token=text), 201


@bp.get("/tokens")
def list_tokens():
    with db.read() as session:
        return jsonify(data=[tokens.describe(t, clock.now()) for t in tokens.all_tokens(session)])


@bp.get("/tokens/<token_id>")
def show(token_id):
    with db.read() as session:
        token = _find(session, token_id)
        return jsonify(**tokens.describe(token, clock.now()), **caps.usage(session, token, clock.now()))


@bp.patch("/tokens/<token_id>")
def update(token_id):
    spec = _spec()
    try:
        with db.transaction() as session:
            token = _find(session, token_id, lock=True)
            before = audit.settings_of(token)
            tokens.update_token(session, token, spec, clock.now())
            changes = audit.changed(before, audit.settings_of(token))
            if changes:
                _audit(session, audit.update_action(changes), token.id, changes)
            return jsonify(tokens.describe(token, clock.now()))
    except tokens.SpecError as error:
        raise _invalid(error) from None


@bp.post("/tokens/<token_id>/revoke")
def revoke(token_id):
    with db.transaction() as session:
        token = _find(session, token_id, lock=True)
        if token.revoked_at is None:
            _audit(session, "token.revoked", token.id)
        tokens.revoke(token, clock.now())
        return jsonify(tokens.describe(token, clock.now()))


@bp.post("/tokens/<token_id>/rotate")
def rotate(token_id):
    with db.transaction() as session:
        token = _find(session, token_id, lock=True)
        text = tokens.rotate(token, clock.now())
        _audit(session, "token.rotated", token.id)
        return jsonify(**tokens.describe(token, clock.now()), token=text)
