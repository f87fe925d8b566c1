"""Idempotency: the field-derived key (schemas/idempotency.md) and the claim on it.

The derivation is a product contract shared byte for byte with the Zapier app and the
n8n node; schemas/idempotency-vectors.json is its test.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime

import rfc8785
from sqlalchemy import bindparam, delete, select, update

from . import amounts, messages, tokens
from .db import insert_ignore_returning
from .models import IdempotencyKey, as_utc, utcnow

DEFAULT_FIELDS = ("user", "amount", "metadata")
KEY_PREFIX = "pwk1_"


def value_at(body, path: str):
    value = body
    for segment in path.split("."):
        if not isinstance(value, dict) or segment not in value:
            return None
        value = value[segment]
    return value


def derive_key(op: str, body: dict, fields=DEFAULT_FIELDS) -> str:
    picked = {}
    for path in fields:
        value = value_at(body, path)
        if path == "amount" and value is not None:
            value = amounts.canonical(value)
        picked[path] = value
    document = {"v": 1, "op": op, "fields": picked}
    return KEY_PREFIX + hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def fingerprint(op: str, body: dict) -> str:
    return derive_key(op, body, DEFAULT_FIELDS)


# --- the header --------------------------------------------------------------------------------------------

def header_key(value: str | None) -> str | None:
    """The client's Idempotency-Key, bare or as a structured-field string; None when absent."""
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not 1 <= len(value) <= 255 or not all(" " <= ch <= "~" for ch in value):
        raise messages.bad_idempotency_key()
    return value


def upstream_key(scope: str, key: str, generation: int) -> str:
    """Deterministic, so a retry after a crash or an ambiguous failure re-sends the same key."""
    return "pwr1_" + hashlib.sha256(f"{scope}\n{key}\n{generation}".encode()).hexdigest()


# --- the claim: phase 1 of a deposit or charge -------------------------------------------------------------

@dataclass
class Claim:
    row_id: int
    scope: str
    key: str
    generation: int
    reserved_micros: int
    reserved_periods: list

    @property
    def upstream_key(self) -> str:
        return upstream_key(self.scope, self.key, self.generation)


@dataclass
class Replay:
    status: int
    body: str


class InFlight(Exception):
    pass


KEYS = IdempotencyKey.__table__
# Built once: constructing a statement costs far more than running it (see bench/results.md).
_LOCK_ROW = select(KEYS.c.id, KEYS.c.fingerprint, KEYS.c.state, KEYS.c.locked_at, KEYS.c.generation,
                   KEYS.c.reserved_micros, KEYS.c.reserved_periods, KEYS.c.response_status, KEYS.c.response_body) \
    .where(KEYS.c.scope == bindparam("scope"), KEYS.c.key == bindparam("key")).with_for_update()
_TAKE_OVER = update(KEYS).where(KEYS.c.id == bindparam("row_id")) \
    .values(state="in_flight", locked_at=bindparam("now"))
_TAKE_OVER_RESERVING = _TAKE_OVER.values(reserved_micros=bindparam("micros"), reserved_periods=bindparam("periods"))
# Both also write the row's reservation: _FINISH clears it (drop_reservation() follows), _REOPEN clears or keeps it.
_FINISH = update(KEYS).where(KEYS.c.id == bindparam("row_id")).values(
    state="done", locked_at=None, response_status=bindparam("status"), response_body=bindparam("body"),
    finished_at=bindparam("finished"), reserved_micros=bindparam("micros"), reserved_periods=bindparam("periods"))
_REOPEN = update(KEYS).where(KEYS.c.id == bindparam("row_id")).values(
    state="open", locked_at=None, generation=bindparam("generation"), reserved_micros=bindparam("micros"),
    reserved_periods=bindparam("periods"))


def claim(session, token, op: str, key: str, fingerprint: str, micros: int, now: datetime,
          lock_timeout: float) -> Claim | Replay:
    """Own the key (and reserve the caps), or learn its stored answer. One transaction, atomic
    across processes: the unique (scope, key) row decides who calls Paywalls."""
    scope = f"ns:{token.namespace}" if token.namespace else token.id
    periods = list(tokens.periods(now).values())
    fresh = {"scope": scope, "key": key, "fingerprint": fingerprint, "token_id": token.id, "operation": op,
             "state": "in_flight", "locked_at": now, "generation": 0, "reserved_micros": micros,
             "reserved_periods": periods, "created_at": now}
    inserted = insert_ignore_returning(session, IdempotencyKey, fresh)
    if inserted is not None:
        # New: ours. Reserving may refuse (over a cap), which rolls the insert back with it.
        tokens.reserve(session, token, micros, now)
        return Claim(inserted[0], scope, key, 0, micros, periods)
    row = session.execute(_LOCK_ROW, {"scope": scope, "key": key}).one()
    if row.fingerprint != fingerprint:
        raise messages.key_reused()
    if row.state == "done":
        return Replay(row.response_status, row.response_body)
    if row.state == "in_flight" and _age(row.locked_at, now) < lock_timeout:
        raise InFlight()
    # Open after an unconfirmed attempt, or abandoned by a dead process: ours now.
    if row.reserved_micros == 0:
        reserved = tokens.reserve(session, token, micros, now)
        session.execute(_TAKE_OVER_RESERVING, {"row_id": row.id, "now": now, "micros": micros, "periods": reserved})
        return Claim(row.id, scope, key, row.generation, micros, reserved)
    session.execute(_TAKE_OVER, {"row_id": row.id, "now": now})
    return Claim(row.id, scope, key, row.generation, row.reserved_micros, list(row.reserved_periods))


def _age(moment: datetime | None, now: datetime) -> float:
    if moment is None:
        return float("inf")
    return (now - as_utc(moment)).total_seconds()


# --- recording the outcome: phase 3 --------------------------------------------------------------------------

_CLEARED = {"micros": 0, "periods": []}  # the key row's reservation once drop_reservation() has run


def finish(session, claim: Claim, status: int, body: str):
    """A definite answer: stored and replayed from now on. The caller drops the reservation (last)."""
    session.execute(_FINISH, {"row_id": claim.row_id, "status": status, "body": body, "finished": utcnow(),
                              **_CLEARED})


def reopen(session, claim: Claim, *, keep_reservation: bool, next_generation: bool = False):
    """Not final: the next retry takes the key over and calls Paywalls again. Without keep_reservation,
    the caller drops the reservation (last)."""
    generation = claim.generation + 1 if next_generation else claim.generation
    reservation = {"micros": claim.reserved_micros, "periods": claim.reserved_periods} if keep_reservation \
        else _CLEARED
    session.execute(_REOPEN, {"row_id": claim.row_id, "generation": generation, **reservation})


def drop_reservation(session, claim: Claim, token_id: str, *, settled: bool):
    """Settle or release the caps' reservation, in the transaction that cleared it from the key's row
    (finish() or reopen())."""
    (tokens.settle if settled else tokens.release)(session, token_id, claim.reserved_micros, claim.reserved_periods)


def purge(session, older_than: datetime) -> int:
    """Forget finished and open keys created before `older_than` (in-flight ones stay)."""
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < older_than,
                                                          IdempotencyKey.state != "in_flight"))
    return result.rowcount
