"""The admin audit log: who changed which token, when, how and from where (console, CLI or admin API).

An entry never holds a secret. `changes` keeps only token setting names (schemas/token-settings.json) and their
values, which are limits and labels; a token's secret, its hash and the admin key have no setting name, so they
cannot get in even if a caller passes them by mistake.
"""

from datetime import datetime

from sqlalchemy import select

from . import db, money, tokens, validation
from .models import AuditEntry, utcnow

VIA = ("console", "cli", "admin_api")
# Actions on tokens, then the console's own (sign-ins are audited: a guessed admin key shows up here), then the one
# operator action that sends money calls: `ledger resolve` re-sends stranded keys to Paywalls.
ACTIONS = ("token.created", "token.updated", "token.rotated", "token.revoked", "token.disabled", "token.enabled",
           "console.signed_in", "console.signed_out", "console.sign_in_failed", "ledger.resolved")
# What a `ledger.resolved` entry keeps: how many keys ended in each outcome (money.resolve's counts). Numbers only.
RESOLVE_COUNTS = (*money.OUTCOMES, "unresolvable")
MAX_VALUE_CHARS = 500


def _settings() -> frozenset:
    return frozenset(validation.load_schema(tokens.SETTINGS_SCHEMA)["properties"])


def clean(changes: dict | None, action: str | None = None) -> dict | None:
    """Only token setting names survive, each value cut to a readable length; for `ledger.resolved`, only counts."""
    if not changes:
        return None
    if action == "ledger.resolved":
        return {name: changes[name] for name in RESOLVE_COUNTS
                if type(changes.get(name)) is int and changes[name] > 0} or None
    allowed = _settings()
    kept = {}
    for name, value in changes.items():
        if name not in allowed:
            continue
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            value = value[:MAX_VALUE_CHARS] + "…"
        kept[name] = value
    return kept or None


def record(session, via: str, origin: str | None, action: str, token_id: str | None = None,
           changes: dict | None = None, at: datetime | None = None) -> AuditEntry:
    """Add one entry in the caller's transaction, so an action and its entry commit (or roll back) together."""
    if via not in VIA:
        raise ValueError(f"via must be one of {VIA}")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}")
    entry = AuditEntry(at=at or utcnow(), via=via, origin=(origin or "")[:200] or None, action=action,
                       token_id=token_id, changes=clean(changes, action))
    session.add(entry)
    return entry


def resolved(counts: dict) -> bool:
    """A `ledger resolve` run that handled at least one key (one that found nothing to do leaves no entry: a schedule
    running it every few minutes would bury the log)."""
    return any(counts.get(name, 0) > 0 for name in RESOLVE_COUNTS)


def record_resolve(via: str, origin: str | None, counts: dict, at: datetime | None = None):
    """The entry of a `ledger resolve` run (money.resolve's counts), in a transaction of its own, if it handled any
    key: the command's and the console's."""
    if resolved(counts):
        with db.transaction() as session:
            record(session, via, origin, "ledger.resolved", changes=counts, at=at)


def settings_of(token) -> dict:
    """A token's settings by their setting names, as tokens.describe shows them (no secret, no hash)."""
    described = tokens.describe(token)
    limits = described["limits"]
    return {
        "label": described["label"], "notes": described["notes"], "operations": described["operations"],
        "max_amount": limits["max_amount"], "daily_cap": limits["daily_cap"], "monthly_cap": limits["monthly_cap"],
        "user_pattern": limits["user_pattern"], "required_metadata": limits["required_metadata"],
        "rate_limit": limits["rate_limit"], "dedupe_on": limits["dedupe_on"], "namespace": described["namespace"],
        "feed": described["feed"], "disabled": bool(token.disabled), "expires_at": described["expires_at"],
    }


def created(token) -> dict:
    """What a new token was given: its settings that are set."""
    return {name: value for name, value in settings_of(token).items() if value not in (None, [], False)}


def changed(before: dict, after: dict) -> dict:
    """{setting: {"from": old, "to": new}} for each setting that differs."""
    return {name: {"from": before.get(name), "to": value} for name, value in after.items() if before.get(name) != value}


def update_action(changes: dict) -> str:
    """Disabling or enabling alone is its own action, so the log reads as the operator acted."""
    if set(changes) == {"disabled"}:
        return "token.disabled" if changes["disabled"]["to"] else "token.enabled"
    return "token.updated"


def recent(session, limit: int = 100, before_id: int | None = None, token_id: str | None = None,
           action: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if token_id:
        query = query.where(AuditEntry.token_id == token_id)
    if action:
        query = query.where(AuditEntry.action == action)
    return list(session.scalars(query))
