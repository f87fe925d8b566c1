"""The claim on an event, in the database: phase 1 of a money call (own it, or learn its answer), the fenced
write that ends an attempt (phase 3), and the housekeeping around them (purge, stranded keys).

Which state follows which outcome is not decided here: money.py's outcome table says, and this module
only writes what it is told, under the lease it holds.
"""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, func, or_, select, text, update
from sqlalchemy.exc import OperationalError

from . import caps, keys, messages
from .db import dialect_name, insert_ignore_returning
from .models import ClientKey, IdempotencyKey, Token, as_utc

KEYS = IdempotencyKey.__table__
CLIENT_KEYS = ClientKey.__table__
TOKENS = Token.__table__


@dataclass
class Claim:
    """This process's right to call Paywalls for one event, until `lease` is superseded."""
    row_id: int
    scope: str
    key: str
    generation: int
    lease: int
    nonce: str | None
    reserved_token_id: str
    reserved_micros: int
    reserved_periods: list
    reserved_at: datetime
    # An earlier attempt may have reached Paywalls with this upstream key (the event was ambiguous, or its owner
    # died mid-call): only a success can settle it then (money.OUTCOMES, after_maybe_landed).
    maybe_landed: bool = False

    @property
    def upstream_key(self) -> str:
        return keys.upstream_key(self.scope, self.key, self.generation, self.nonce)


@dataclass
class Replay:
    status: int
    body: str
    new_binding: bool = False  # a client key was bound to the event by this request (that row must be flushed)


class InFlight(Exception):
    """Another claim holds the event's lease: its call may still be running."""


class LeaseLost(Exception):
    """The row moved on under a newer lease: this attempt's outcome must not be recorded over it."""


# Built once: constructing a statement costs far more than running it (see bench/results.md).
_ROW_COLUMNS = (KEYS.c.id, KEYS.c.key, KEYS.c.fingerprint, KEYS.c.token_id, KEYS.c.state, KEYS.c.locked_at,
                KEYS.c.lease, KEYS.c.generation, KEYS.c.nonce, KEYS.c.reserved_micros, KEYS.c.reserved_periods,
                KEYS.c.reserved_token_id, KEYS.c.reserved_at, KEYS.c.response_status, KEYS.c.response_body,
                KEYS.c.created_at, KEYS.c.scope, KEYS.c.operation, KEYS.c.request_body)
_LOCK_ROW = select(*_ROW_COLUMNS).where(KEYS.c.scope == bindparam("scope"), KEYS.c.key == bindparam("key")) \
    .with_for_update()
_LOCK_BY_ID = select(*_ROW_COLUMNS).where(KEYS.c.id == bindparam("row_id")).with_for_update()
# A dry run's reads: the same rows, never locked.
_ROW = select(*_ROW_COLUMNS).where(KEYS.c.scope == bindparam("scope"), KEYS.c.key == bindparam("key"))
_ROW_BY_ID = select(*_ROW_COLUMNS).where(KEYS.c.id == bindparam("row_id"))
_CLIENT_KEY = select(CLIENT_KEYS.c.fingerprint, CLIENT_KEYS.c.event_id) \
    .where(CLIENT_KEYS.c.scope == bindparam("scope"), CLIENT_KEYS.c.key == bindparam("key"))
# Read without a row lock: a lock on the token's row (FOR KEY SHARE) made one busy token a hot row on PostgreSQL, a
# multixact and a rewritten tuple per claim (bench/cpu-per-deposit.md). What orders a claim against the edits it
# must not overlap is the keys table's lock instead (hold_new_claims): this runs after the claim's first
# statement on the keys table, which waits while such an edit holds it, so it reads the edit's committed values.
_TOKEN_IDENTITY = select(TOKENS.c.namespace, TOKENS.c.dedupe_on, TOKENS.c.daily_cap_micros,
                         TOKENS.c.monthly_cap_micros).where(TOKENS.c.id == bindparam("tid"))
_TAKE_OVER = update(KEYS).where(KEYS.c.id == bindparam("row_id")).values(
    state="in_flight", locked_at=bindparam("now"), lease=bindparam("next_lease"),
    reserved_micros=bindparam("micros"), reserved_periods=bindparam("periods"),
    reserved_token_id=bindparam("owner"), reserved_at=bindparam("reserved_at"))
# The fence: the write lands only while the row is still in flight under this attempt's lease.
# The nonce too: SQLite may give a purged row's id to a new event, whose lease then starts at 1 again.
_END_ATTEMPT = update(KEYS).where(KEYS.c.id == bindparam("row_id"), KEYS.c.lease == bindparam("held_lease"),
                                  KEYS.c.nonce.is_not_distinct_from(bindparam("held_nonce")),
                                  KEYS.c.state == "in_flight").values(
    state=bindparam("state"), locked_at=None, generation=bindparam("generation"),
    response_status=bindparam("status"), response_body=bindparam("body"), finished_at=bindparam("finished"),
    reserved_micros=bindparam("micros"), reserved_periods=bindparam("periods"),
    reserved_token_id=bindparam("owner"), reserved_at=bindparam("reserved_at"))


def _bound_event(connection, scope: str, client_key: str | None, fingerprint: str, by_id):
    """The event row a client key is already bound to (read with `by_id`: locked for claim(), plain for peek()), or
    None. A bound key names its event, whatever this request's event key is (another token of the namespace may
    derive another one): the request is that event, or it is refused."""
    if client_key is None:
        return None
    bound = connection.execute(_CLIENT_KEY, {"scope": scope, "key": client_key}).first()
    if bound is None:
        return None
    if bound.fingerprint != fingerprint:
        raise messages.key_reused()
    return connection.execute(by_id, {"row_id": bound.event_id}).first()


def claim(connection, token, op: str, event_key: str, client_key: str | None, fingerprint: str,
          request_body: str, micros: int, now: datetime, lease_seconds: float) -> Claim | Replay:
    """Own the event (and reserve the caps), or learn its stored answer. One transaction, atomic across
    processes: the unique (scope, event key) row decides who calls Paywalls, and the client key is bound to
    that row in the same transaction, so neither key can lead to a second call."""
    scope = keys.scope_of(token)
    row = _bound_event(connection, scope, client_key, fingerprint, _LOCK_BY_ID)
    for _ in range(5 if row is None else 0):  # a purge may delete the row between our insert and our lock
        fresh = {"scope": scope, "key": event_key, "fingerprint": fingerprint, "token_id": token.id,
                 "operation": op, "state": "in_flight", "locked_at": now, "lease": 1, "generation": 0,
                 "nonce": secrets.token_hex(16), "request_body": request_body, "reserved_micros": micros,
                 "reserved_periods": caps.to_reserve(token, now), "reserved_token_id": token.id,
                 "reserved_at": now, "created_at": now}
        inserted = insert_ignore_returning(connection, IdempotencyKey, fresh)
        if inserted is not None:
            _check_identity(connection, token)
            # Reserving may refuse (over a cap), which rolls the insert back with it.
            caps.reserve(connection, token, micros, now)
            _bind_client_key(connection, scope, client_key, inserted[0], fingerprint, now)
            return Claim(inserted[0], scope, event_key, 0, 1, fresh["nonce"], token.id, micros,
                         fresh["reserved_periods"], now)
        row = connection.execute(_LOCK_ROW, {"scope": scope, "key": event_key}).first()
        if row is not None:
            break
    if row is None:
        raise messages.claim_contended()
    if row.fingerprint != fingerprint:
        raise messages.event_reused(token.dedupe_on)
    new_binding = _bind_client_key(connection, scope, client_key, row.id, fingerprint, now)
    if row.state == "done":
        return Replay(row.response_status, row.response_body, new_binding)
    if row.state == "in_flight" and _age(row.locked_at, now) < lease_seconds:
        raise InFlight()
    return _take_over(connection, token, row, micros, now)


@dataclass
class Rehearsal:
    """What claim() would do with a request, learnt without writing: a dry run's phase 1."""
    would: str                    # "call": Paywalls would be called (a new event, or one to re-send); "replay"
    reserve_micros: int = 0       # what the call would reserve against the token's caps (0: nothing new)
    reserve_at: datetime | None = None  # in which day and month


def peek(connection, token, event_key: str, client_key: str | None, fingerprint: str, micros: int, now: datetime,
         lease_seconds: float) -> Rehearsal:
    """claim()'s decisions, in its order, read only: the same refusals (422 reused key or event), InFlight while a
    live claim holds the event, else what the claim would reserve. Nothing is inserted, locked or bound."""
    scope = keys.scope_of(token)
    row = _bound_event(connection, scope, client_key, fingerprint, _ROW_BY_ID)
    if row is None:
        row = connection.execute(_ROW, {"scope": scope, "key": event_key}).first()
    if row is None:
        return Rehearsal("call", micros, now)
    if row.fingerprint != fingerprint:
        raise messages.event_reused(token.dedupe_on)
    if row.state == "done":
        return Rehearsal("replay")
    if row.state == "in_flight" and _age(row.locked_at, now) < lease_seconds:
        raise InFlight()
    if not row.reserved_micros:
        return Rehearsal("call", micros, now)
    if (row.reserved_token_id or row.token_id) != token.id:  # _take_over moves the reservation to this token
        return Rehearsal("call", row.reserved_micros, as_utc(row.reserved_at or row.created_at))
    return Rehearsal("call")  # it keeps the reservation it has


def _take_over(connection, token, row, micros: int, now: datetime) -> Claim:
    """The event is open (nothing landed), ambiguous (it may have), or its owner's lease ran out."""
    _check_identity(connection, token)
    if row.reserved_micros:
        # It may have landed: it keeps counting in the periods it was first reserved in.
        owner, periods = row.reserved_token_id or row.token_id, list(row.reserved_periods)
        reserved_at = as_utc(row.reserved_at or row.created_at)
        if owner != token.id:
            # Another token of the namespace takes it over: the reservation moves to this token's caps (or the
            # claim is refused, and it stays where it was: the release rolls back with the refusal). The two
            # tokens' usage rows are locked in the order of their ids, whichever token claims: two takeovers in
            # opposite directions, each in its own order, deadlocked on PostgreSQL.
            if token.id < owner:
                taken = caps.reserve(connection, token, row.reserved_micros, reserved_at)
                caps.release(connection, owner, row.reserved_micros, periods)
            else:
                caps.release(connection, owner, row.reserved_micros, periods)
                taken = caps.reserve(connection, token, row.reserved_micros, reserved_at)
            owner, periods = token.id, taken
        micros = row.reserved_micros
    else:
        owner, reserved_at = token.id, now
        periods = caps.reserve(connection, token, micros, now)
    lease = row.lease + 1
    connection.execute(_TAKE_OVER, {"row_id": row.id, "now": now, "next_lease": lease, "micros": micros,
                                    "periods": periods, "owner": owner, "reserved_at": reserved_at})
    return Claim(row.id, row.scope, row.key, row.generation, lease, row.nonce, owner, micros, periods, reserved_at,
                 maybe_landed=row.state != "open")


def _bind_client_key(connection, scope: str, client_key: str | None, event_id: int, fingerprint: str,
                     now: datetime) -> bool:
    """A client's Idempotency-Key names one event for as long as it is kept: the first it was sent with. Bound
    even when it equals the event key, since another token of the namespace may derive another event key.
    True when this call bound it."""
    if client_key is None:
        return False
    inserted = insert_ignore_returning(connection, ClientKey, {"scope": scope, "key": client_key, "event_id": event_id,
                                                               "fingerprint": fingerprint, "created_at": now})
    if inserted is not None:
        return True
    bound = connection.execute(_CLIENT_KEY, {"scope": scope, "key": client_key}).first()
    if bound is not None and bound.fingerprint != fingerprint:
        raise messages.key_reused()
    if bound is not None and bound.event_id != event_id:
        # Bound a moment ago, by a concurrent request, to another event: retrying finds that event.
        raise messages.claim_contended()
    return False


def _check_identity(connection, token):
    """A new event is stored under the token's namespace and dedupe fields as this request read them. If an
    edit changed them since (tokens.update_token refuses that only while keys exist), start over. The same if
    the token got its first cap since: this request would reserve nothing against it (caps.to_reserve)."""
    current = connection.execute(_TOKEN_IDENTITY, {"tid": token.id}).first()
    if current is None or current.namespace != token.namespace or list(current.dedupe_on) != list(token.dedupe_on) \
            or caps.capped(current) != caps.capped(token):
        raise messages.token_changed()


# How long a token edit waits for the claims in flight before it gives up. New claims on every token queue behind
# a waiting edit, so it must be short; the claims it waits for are short transactions (no call to Paywalls).
EDIT_WAIT = "3s"


def hold_new_claims(connection):
    """For the rest of a token edit's transaction, no claim on any token writes or locks a key, and the claims that
    already do have ended: the edit then counts a scope's keys (an identity change) or the calls in flight (a first
    cap) knowing that no claim stored under the old settings can appear after it. A claim reads its token only
    after its first statement on the keys table (_check_identity), so one held up here reads the edit's values.

    EXCLUSIVE mode conflicts with a claim's INSERT (ROW EXCLUSIVE) and its FOR UPDATE on a key (ROW SHARE), never
    with a plain read. It replaces a share lock on the token's row taken by every claim: the edits that need it are
    rare, the claims that paid for it were not. SQLite needs nothing: its writers run one at a time."""
    if dialect_name(connection) != "postgresql":
        return
    connection.execute(text(f"SET LOCAL lock_timeout = '{EDIT_WAIT}'"))
    try:
        connection.execute(text(f"LOCK TABLE {KEYS.name} IN EXCLUSIVE MODE"))
    except OperationalError as error:
        if getattr(error.orig, "sqlstate", None) == "55P03":  # lock_not_available: the calls in flight did not end
            raise messages.token_edit_waited() from None
        raise
    connection.execute(text("SET LOCAL lock_timeout = DEFAULT"))


def _age(moment: datetime | None, now: datetime) -> float:
    if moment is None:
        return float("inf")
    return (now - as_utc(moment)).total_seconds()


# --- ending an attempt: phase 3 -----------------------------------------------------------------------------

def end_attempt(connection, claim: Claim, state: str, *, keep_reservation: bool, next_generation: bool = False,
                status: int | None = None, body: str | None = None, now: datetime):
    """Move the row out of in_flight, under the fence. Raises LeaseLost if a newer claim owns it."""
    keep = {"micros": claim.reserved_micros, "periods": claim.reserved_periods, "owner": claim.reserved_token_id,
            "reserved_at": claim.reserved_at} if keep_reservation else \
        {"micros": 0, "periods": [], "owner": None, "reserved_at": None}
    result = connection.execute(_END_ATTEMPT, {
        "row_id": claim.row_id, "held_lease": claim.lease, "held_nonce": claim.nonce, "state": state,
        "generation": claim.generation + 1 if next_generation else claim.generation,
        "status": status, "body": body, "finished": now if state == "done" else None, **keep})
    if result.rowcount != 1:
        raise LeaseLost()


# --- stranded keys and `ledger resolve` -----------------------------------------------------------------------

def stranded(connection, now: datetime, lease_seconds: float, limit: int = 1000) -> list:
    """Keys whose outcome is unknown and that nobody is working on: ambiguous ones, and in-flight ones whose
    lease has run out (the process died, or could not record Paywalls' answer)."""
    expired = now - timedelta(seconds=lease_seconds)
    query = select(*_ROW_COLUMNS).where(or_(KEYS.c.state == "ambiguous",
                                            (KEYS.c.state == "in_flight") & (KEYS.c.locked_at < expired))) \
        .order_by(KEYS.c.id).limit(limit)
    return list(connection.execute(query))


def take_over_stranded(connection, row_id: int, now: datetime, lease_seconds: float) -> tuple[Claim, object] | None:
    """Claim a stranded key for `ledger resolve`, keeping its reservation; None if it is no longer stranded."""
    row = connection.execute(_LOCK_BY_ID, {"row_id": row_id}).first()
    if row is None or not (row.state == "ambiguous" or row.state == "in_flight"
                           and _age(row.locked_at, now) >= lease_seconds):
        return None
    lease = row.lease + 1
    owner = row.reserved_token_id or row.token_id
    reserved_at = as_utc(row.reserved_at or row.created_at)
    connection.execute(_TAKE_OVER, {"row_id": row.id, "now": now, "next_lease": lease, "micros": row.reserved_micros,
                                    "periods": list(row.reserved_periods), "owner": owner, "reserved_at": reserved_at})
    return Claim(row.id, row.scope, row.key, row.generation, lease, row.nonce, owner, row.reserved_micros,
                 list(row.reserved_periods), reserved_at, maybe_landed=True), row


# --- retention ------------------------------------------------------------------------------------------------

def purge(connection, older_than: datetime, batch: int = 500) -> int:
    """Forget finished events created before `older_than`, with the client keys bound to them. Keys in flight,
    open or ambiguous, and any key still holding a reservation, are never touched. Rows a claim has locked are
    skipped (PostgreSQL), so a purge never races a claim; a claim that loses the race inserts the event anew.

    Forgetting is safe for the ledger: a forgotten event's fields, sent again, are a new call with a new upstream
    key (keys.upstream_key), which Paywalls applies and the ledger records truthfully as a new credit."""
    candidates = select(KEYS.c.id).where(KEYS.c.state == "done", KEYS.c.reserved_micros == 0,
                                         KEYS.c.created_at < older_than).order_by(KEYS.c.id).limit(batch)
    if dialect_name(connection) == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    removed = 0
    while True:
        ids = list(connection.execute(candidates).scalars())
        if not ids:
            return removed
        connection.execute(delete(CLIENT_KEYS).where(CLIENT_KEYS.c.event_id.in_(ids)))
        connection.execute(delete(KEYS).where(KEYS.c.id.in_(ids), KEYS.c.state == "done"))
        removed += len(ids)
        if len(ids) < batch:
            return removed


def stored_keys(connection, scope: str) -> tuple[int, datetime | None]:
    """How many events a scope holds (they bind replays until purged), and when the newest was created."""
    row = connection.execute(select(func.count(), func.max(KEYS.c.created_at)).where(KEYS.c.scope == scope)).one()
    return row[0], (as_utc(row[1]) if row[1] is not None else None)
