"""Token pages: list with usage bars, create (the token shown once), detail with the 30-day chart, edit, and the
confirmed actions rotate, revoke, disable and enable. Each change is audited in its own transaction."""

import secrets

from flask import abort, flash, redirect, render_template, request, session, url_for
from sqlalchemy import select

from .. import audit, caps, clock, db, messages, tokens
from ..models import LedgerEntry, Token
from . import bp, charts, forms
from .auth import client_address

ACTIONS = {
    "rotate": {"title": "Rotate", "button": "Rotate the secret", "danger": True,
               "explain": "The token gets a new secret. The old secret stops working at once: every Zap, n8n "
                          "workflow or scenario using it gets 401 until you paste the new one. Its settings, "
                          "usage and ledger stay."},
    "revoke": {"title": "Revoke", "button": "Revoke for good", "danger": True,
               "explain": "The token is refused from its next request on, for good: it cannot be enabled or "
                          "rotated again. Its ledger rows stay. Create a new token to replace it."},
    "disable": {"title": "Disable", "button": "Disable", "danger": True,
                "explain": "The token is refused until you enable it again. Nothing else changes."},
    "enable": {"title": "Enable", "button": "Enable", "danger": False,
               "explain": "The token works again from its next request, with the same secret and settings."},
}
SPENT_FORMS_KEPT = 20  # form nonces remembered per session, so a reload of a POST does not create twice
RECENT_ROWS = 20


def _now():
    return clock.now()


def _audit(write, action: str, token_id: str, changes: dict | None = None):
    audit.record(write, "console", client_address(), action, token_id, changes, at=_now())


def _problem_errors(problem: messages.Problem) -> dict:
    """A refusal of the whole change (a namespace rule, a locked identity), shown beside the field it is about."""
    fields = problem.extra.get("limit")
    field = fields[0] if isinstance(fields, list) and fields else "namespace" if "namespace" in problem.name else "form"
    return {field: problem.detail}


def _find(session, token_id: str, lock: bool = False):
    """The token, or a 404 page. A change locks its row first, so two operators changing one token at once are
    audited with true "from" values."""
    token = session.get(Token, token_id[:64], with_for_update=lock)
    if token is None:
        abort(404)
    return token


def _spent(nonce: str) -> str | None:
    return (session.get("spent") or {}).get(nonce)


def _spend(nonce: str, token_id: str):
    spent = dict(session.get("spent") or {})
    spent[nonce] = token_id
    session["spent"] = dict(list(spent.items())[-SPENT_FORMS_KEPT:])


def _usage_view(read, token, now) -> dict:
    used = caps.usage(read, token, now)["usage"]
    return {"today": charts.bar(charts.micros(used["today"]), token.daily_cap_micros),
            "month": charts.bar(charts.micros(used["this_month"]), token.monthly_cap_micros)}


@bp.get("/tokens")
def token_list():
    now = _now()
    with db.read() as read:
        rows = [{"token": tokens.describe(token, now), "usage": _usage_view(read, token, now)}
                for token in tokens.all_tokens(read)]
    order = {"active": 0, "disabled": 1, "expired": 2, "revoked": 3}
    rows.sort(key=lambda row: (order.get(row["token"]["status"], 9), row["token"]["label"].lower()))
    return render_template("console/tokens.html", rows=rows)


def _form_page(values, errors, nonce=None, status=200):
    return render_template("console/token_form.html", values=values, errors=errors, creating=True,
                           operations=tokens.OPERATIONS, nonce=nonce or secrets.token_urlsafe(16)), status


@bp.get("/tokens/new")
def token_new():
    return _form_page(forms.DEFAULT_VALUES, {})


@bp.post("/tokens/new")
def token_create():
    nonce = request.form.get("once", "")[:64]
    already = _spent(nonce) if nonce else None
    if already:
        flash("That form was already sent: the token was created once, and its secret was shown then. "
              "Rotate it if you did not copy the secret.", "notice")
        return redirect(url_for("console.token_detail", token_id=already))
    spec = forms.spec_from(request.form, creating=True)
    try:
        with db.transaction() as write:
            token, text = tokens.create(write, spec, _now())
            _audit(write, "token.created", token.id, audit.created(token))
            described = tokens.describe(token, _now())
    except tokens.SpecError as error:
        return _form_page(forms.values_from(request.form), forms.errors_by_field(error.errors), nonce, 422)
    except messages.Problem as problem:
        return _form_page(forms.values_from(request.form), _problem_errors(problem), nonce, 422)
    if nonce:
        _spend(nonce, token.id)
    # Rendered from the POST itself, never redirected or flashed: the secret goes to this page and nowhere else
    # (the session cookie is signed, not encrypted).
    return render_template("console/token_secret.html", token=described, secret=text, created=True,
                           relay_url=request.url_root.rstrip("/"))


@bp.get("/tokens/<token_id>")
def token_detail(token_id):
    now = _now()
    with db.read() as read:
        token = _find(read, token_id)
        described = tokens.describe(token, now)
        usage = caps.usage(read, token, now)
        bars = _usage_view(read, token, now)
        recent = list(read.scalars(select(LedgerEntry).where(LedgerEntry.token_id == token.id)
                                   .order_by(LedgerEntry.id.desc()).limit(RECENT_ROWS)))
        chart = charts.chart(charts.credits_per_day(read, token.id, now.date()))
        history = audit.recent(read, limit=10, token_id=token.id)
    return render_template("console/token_detail.html", token=described, usage=usage, bars=bars, rows=recent,
                           chart=chart, history=history, actions=_actions_for(described["status"]))


def _actions_for(status: str) -> list[str]:
    return {"active": ["rotate", "disable", "revoke"], "disabled": ["enable", "rotate", "revoke"],
            "expired": ["revoke"]}.get(status, [])


@bp.get("/tokens/<token_id>/edit")
def token_edit(token_id):
    with db.read() as read:
        described = tokens.describe(_find(read, token_id), _now())
    if described["status"] == "revoked":
        abort(404)
    return render_template("console/token_form.html", values=forms.values_of(described), errors={}, creating=False,
                           token=described, operations=tokens.OPERATIONS)


@bp.post("/tokens/<token_id>/edit")
def token_update(token_id):
    spec = forms.spec_from(request.form, creating=False)
    try:
        with db.transaction() as write:
            token = _find(write, token_id, lock=True)
            if token.revoked_at is not None:
                abort(404)
            before = audit.settings_of(token)
            tokens.update_token(write, token, spec, _now())
            changes = audit.changed(before, audit.settings_of(token))
            if changes:
                _audit(write, audit.update_action(changes), token.id, changes)
    except (tokens.SpecError, messages.Problem) as error:
        errors = forms.errors_by_field(error.errors) if isinstance(error, tokens.SpecError) else _problem_errors(error)
        with db.read() as read:
            described = tokens.describe(_find(read, token_id), _now())
        return render_template("console/token_form.html", values=forms.values_from(request.form), errors=errors,
                               creating=False, token=described, operations=tokens.OPERATIONS), 422
    flash("Saved: " + (", ".join(sorted(changes)) + " changed." if changes else "nothing changed."), "notice")
    return redirect(url_for("console.token_detail", token_id=token_id))


@bp.get("/tokens/<token_id>/<action>")
def token_confirm(token_id, action):
    if action not in ACTIONS:
        abort(404)
    with db.read() as read:
        described = tokens.describe(_find(read, token_id), _now())
    if action not in _actions_for(described["status"]):
        flash(f"This token is {described['status']}: it cannot be {_done(action)}.", "error")
        return redirect(url_for("console.token_detail", token_id=token_id))
    return render_template("console/token_confirm.html", token=described, action=action, info=ACTIONS[action],
                           nonce=secrets.token_urlsafe(16))


def _done(action: str) -> str:
    return {"rotate": "rotated", "revoke": "revoked", "disable": "disabled", "enable": "enabled"}[action]


@bp.post("/tokens/<token_id>/<action>")
def token_act(token_id, action):
    if action not in ACTIONS:
        abort(404)
    nonce = request.form.get("once", "")[:64]
    if nonce and _spent(nonce):
        flash(f"That confirmation was already sent: the token was {_done(action)} once.", "notice")
        return redirect(url_for("console.token_detail", token_id=token_id))
    now = _now()
    text = None
    with db.transaction() as write:
        token = _find(write, token_id, lock=True)
        status = tokens.describe(token, now)["status"]
        if action not in _actions_for(status):
            refused = f"This token is {status}: it cannot be {_done(action)}."
        else:
            refused = None
            if action == "rotate":
                text = tokens.rotate(token, now)
                _audit(write, "token.rotated", token.id)
            elif action == "revoke":
                tokens.revoke(token, now)
                _audit(write, "token.revoked", token.id)
            else:
                before = audit.settings_of(token)
                tokens.update_token(write, token, {"disabled": action == "disable"}, now)
                _audit(write, audit.update_action(audit.changed(before, audit.settings_of(token))), token.id,
                       audit.changed(before, audit.settings_of(token)))
            described = tokens.describe(token, now)
    if refused:
        flash(refused, "error")
        return redirect(url_for("console.token_detail", token_id=token_id))
    if nonce:
        _spend(nonce, token_id)
    if text:
        return render_template("console/token_secret.html", token=described, secret=text, created=False,
                               relay_url=request.url_root.rstrip("/"))
    flash(f"Token {_done(action)}.", "notice")
    return redirect(url_for("console.token_detail", token_id=token_id))
