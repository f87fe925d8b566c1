"""Tables. Amounts are integers of millionths (see amounts.py) so every database compares them exactly."""

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BigInt = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrement needs INTEGER


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive ones (as SQLite returns them, or typed without an offset) are UTC."""
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public id, embedded in the token
    secret_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    operations: Mapped[list] = mapped_column(JSON)
    max_amount_micros: Mapped[int | None] = mapped_column(BigInteger)
    daily_cap_micros: Mapped[int | None] = mapped_column(BigInteger)
    monthly_cap_micros: Mapped[int | None] = mapped_column(BigInteger)
    user_pattern: Mapped[str | None] = mapped_column(String(200))
    required_metadata: Mapped[list] = mapped_column(JSON, default=list)
    rate_limit: Mapped[str | None] = mapped_column(String(50))
    dedupe_on: Mapped[list] = mapped_column(JSON)
    namespace: Mapped[str | None] = mapped_column(String(100))
    feed: Mapped[str | None] = mapped_column(String(8))  # the deposits feed: "all", or None/"own" (least privilege)
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None]


class Usage(Base):
    """Per token and period ("d:2026-11-26", "m:2026-11"): settled plus reserved amounts."""

    __tablename__ = "usage"

    token_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    settled_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)


class IdempotencyKey(Base):
    """One money event per scope: its claim, its lease and its answer. The states and what moves between
    them are in money.py."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(120))  # the token id, or "ns:<namespace>"
    key: Mapped[str] = mapped_column(String(255))  # the event key (keys.py)
    fingerprint: Mapped[str] = mapped_column(String(80))
    token_id: Mapped[str] = mapped_column(String(16))  # the token that first claimed it
    operation: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))  # in_flight | open | ambiguous | done
    locked_at: Mapped[datetime | None]
    # The fencing token: every claim of the row takes the next lease, and only the holder of the current lease
    # may record an outcome.
    lease: Mapped[int] = mapped_column(Integer, default=0)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    nonce: Mapped[str | None] = mapped_column(String(32))  # part of the upstream key (keys.upstream_key)
    request_body: Mapped[str | None] = mapped_column(Text)  # what to re-send when `ledger resolve` completes it
    # What the current attempt reserved against the caps: how much, on which token's usage, in which periods,
    # and the moment those periods were taken from (the ledger dates the outcome then).
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_periods: Mapped[list] = mapped_column(JSON, default=list)
    reserved_token_id: Mapped[str | None] = mapped_column(String(16))
    reserved_at: Mapped[datetime | None]
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


Index("ix_idempotency_created", IdempotencyKey.created_at)
# The calls whose outcome is unknown yet (in flight or ambiguous) still hold their amount: counted in usage.
Index("ix_idempotency_reserved", IdempotencyKey.reserved_token_id, IdempotencyKey.reserved_at,
      postgresql_where=IdempotencyKey.reserved_micros > 0, sqlite_where=IdempotencyKey.reserved_micros > 0)
Index("ix_idempotency_state", IdempotencyKey.state)


class ClientKey(Base):
    """A client's Idempotency-Key, bound to the one event it first named in its scope."""

    __tablename__ = "client_keys"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_client_keys_scope_key"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(120))
    key: Mapped[str] = mapped_column(String(255))
    event_id: Mapped[int] = mapped_column(BigInteger)
    fingerprint: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


Index("ix_client_keys_event", ClientKey.event_id)


class LedgerEntry(Base):
    """Every operation the relay performed: the record Paywalls does not expose."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    token_id: Mapped[str] = mapped_column(String(16))
    token_label: Mapped[str] = mapped_column(String(200))
    operation: Mapped[str] = mapped_column(String(16))
    user: Mapped[str | None] = mapped_column(String(128))
    amount: Mapped[str | None] = mapped_column(String(32))
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))  # the event key
    client_key: Mapped[str | None] = mapped_column(String(255))  # the request's Idempotency-Key, if it sent one
    upstream_key: Mapped[str | None] = mapped_column(String(80))
    upstream_status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    # credited | charged | declined | rejected | failed | ambiguous | replayed | read | dry_run
    outcome: Mapped[str] = mapped_column(String(16))
    balance_formatted: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    # created_at is when the money counts (the reservation's moment, see caps.py); recorded_at is when the row
    # was written. They differ only for a call retried or resolved later.
    recorded_at: Mapped[datetime | None]
    # The amount in millionths, for the indexed sum that is an uncapped token's usage (caps.usage).
    amount_micros: Mapped[int | None] = mapped_column(BigInteger)


# What caps.usage sums for a token without caps: its applied amounts by date (partial: only those rows).
APPLIED_OUTCOMES = ("credited", "charged")
Index("ix_ledger_token_applied", LedgerEntry.token_id, LedgerEntry.created_at,
      postgresql_where=LedgerEntry.outcome.in_(APPLIED_OUTCOMES), sqlite_where=LedgerEntry.outcome.in_(APPLIED_OUTCOMES))
Index("ix_ledger_outcome_id", LedgerEntry.outcome, LedgerEntry.id)
Index("ix_ledger_created", LedgerEntry.created_at)
Index("ix_ledger_user", LedgerEntry.user)


class BulkBatch(Base):
    """A file of deposits or charges sent to POST /v1/relay/bulk, run in the background by batches.py: its content,
    who runs it (a lease, renewed while it runs, so a dead process's batch is resumed), its progress and report."""

    __tablename__ = "bulk_batches"
    __table_args__ = (UniqueConstraint("token_id", "operation", "batch_key", name="uq_bulk_batches_token_key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # blk_ + random: what GET /v1/relay/bulk/<id> names
    token_id: Mapped[str] = mapped_column(String(16))
    operation: Mapped[str] = mapped_column(String(16))  # deposit | charge
    # The batch identity the rows' idempotency keys derive from (bulk.py): file:<content hash>, or the caller's own.
    batch_key: Mapped[str] = mapped_column(String(120))
    content: Mapped[str] = mapped_column(Text)  # the file as sent (CSV or a JSON array), read again by the runner
    skip_invalid: Mapped[bool] = mapped_column(Boolean, default=False)
    total_rows: Mapped[int] = mapped_column(Integer)
    # queued -> running -> done; running again (resumed) when its lease runs out; queued again when re-sent.
    state: Mapped[str] = mapped_column(String(16))
    # The fencing token: every claim takes the next lease, and only its holder may write progress or the report.
    lease: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_until: Mapped[datetime | None]
    progress: Mapped[dict | None] = mapped_column(JSON)  # counts by outcome, rows done, rows/s
    report: Mapped[str | None] = mapped_column(Text)  # JSON list: one entry per input line, once it ran
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


Index("ix_bulk_batches_state", BulkBatch.state, BulkBatch.lease_until)


class Event(Base):
    """A Paywalls event, received on POST /v1/webhooks/paywalls (source "paywalls"), or one the relay made from its
    own ledger (source "relay"). Stored once per id: a delivery seen again is acknowledged and not fanned out again.
    The fan-out (hooks.py) turns each event into one delivery per matching hook, then sets fanned_out."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # Paywalls' event id, or evt_relay_<...>
    type: Mapped[str] = mapped_column(String(100))  # paywall.balance.deposit.created, ...
    source: Mapped[str] = mapped_column(String(16))  # paywalls | relay
    user: Mapped[str | None] = mapped_column(String(128))  # data.externalUserId, else data.user
    payload: Mapped[str] = mapped_column(Text)  # the event object as JSON: what a hook target receives
    token_id: Mapped[str | None] = mapped_column(String(16))  # the token whose call made it (relay events only)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)  # the event's createdAt
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False)


Index("ix_events_received", Event.received_at, Event.id)
Index("ix_events_pending_fanout", Event.received_at,
      postgresql_where=text("NOT fanned_out"), sqlite_where=text("NOT fanned_out"))


class WebhookSubscription(Base):
    """A subscription the relay registered with Paywalls (`paywalls-relay webhooks subscribe`): Paywalls shows its
    whsec_ secret once, and the relay keeps it, encrypted, to verify what Paywalls sends."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # Paywalls' subscription id
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list] = mapped_column(JSON)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    secret_suffix: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deactivated_at: Mapped[datetime | None]


class Hook(Base):
    """A REST-hook subscription (POST /v1/relay/hooks): where to POST which events, made by a token with the
    `events` operation. Zapier's performSubscribe and n8n's trigger create one per Zap or workflow."""

    __tablename__ = "hooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # hook_ + random
    token_id: Mapped[str] = mapped_column(String(16))
    target_url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list] = mapped_column(JSON)  # names, or ["*"]
    filter_user: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
    deleted_reason: Mapped[str | None] = mapped_column(String(32))  # unsubscribed | gone (the target said 410)


Index("ix_hooks_token", Hook.token_id)


class Delivery(Base):
    """One event to one hook's target, at least once: claimed by a worker with a lease (FOR UPDATE SKIP LOCKED on
    PostgreSQL), retried with backoff until delivered or given up."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("hook_id", "event_id", name="uq_deliveries_hook_event"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    hook_id: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_until: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


Index("ix_deliveries_due", Delivery.state, Delivery.next_attempt_at)


class DeliveryAttempt(Base):
    """The delivery log: every POST to a target, kept per hook (GET /v1/relay/hooks/<id>/deliveries)."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger)
    hook_id: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[int | None] = mapped_column(Integer)  # the target's HTTP status; None when it never answered
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)


Index("ix_delivery_attempts_hook", DeliveryAttempt.hook_id, DeliveryAttempt.id)


class AuditEntry(Base):
    """An admin action on a token, from the console, the CLI or the admin API: when, what changed, from where.
    Never a secret: changes hold setting names and values, not token secrets or the admin key."""

    __tablename__ = "admin_audit"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    via: Mapped[str] = mapped_column(String(16))  # console | cli | admin_api
    origin: Mapped[str | None] = mapped_column(String(200))  # the remote address, or the CLI's user@host
    action: Mapped[str] = mapped_column(String(32))  # token.created | token.updated | token.rotated | token.revoked ...
    token_id: Mapped[str | None] = mapped_column(String(16))
    changes: Mapped[dict | None] = mapped_column(JSON)


Index("ix_admin_audit_at", AuditEntry.at)
Index("ix_admin_audit_token", AuditEntry.token_id, AuditEntry.id)


class ConsoleSession(Base):
    """A signed-in console session. The cookie carries a random secret; only its SHA-256 is stored, so a copy of
    the database signs nobody in. Kept server-side so that logout ends the session even for a copied cookie."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie's secret
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    origin: Mapped[str | None] = mapped_column(String(200))
