"""Daily and monthly caps: reserved before Paywalls is called, then settled or released.

A reservation belongs to the claim that made it: the key's row records how much, against which
token and in which periods, and only the transition that ends the attempt (money.py) settles or
releases exactly that. A call counts in the UTC day and month of its reservation: a retry after
midnight of a call that may already have landed still counts in the old day (and its ledger row is
dated then), so the cap a finance person reads agrees with the ledger's dates.

Only a token with a cap reserves in its usage rows: those rows are what makes a cap atomic, and every call on
the token locks them until COMMIT. A token without caps writes no shared row on the money path (one busy
token would otherwise serialise every process on PostgreSQL): its usage is read from the ledger (the indexed
sum of what was applied) plus the amounts its calls in flight or ambiguous still hold on their key rows, so a
call whose outcome is unknown is counted as it is for a capped token.
"""

from datetime import datetime, timedelta, timezone

from sqlalchemy import bindparam, delete, func, insert, select, update

from . import amounts, messages
from .db import dialect_name
from .models import APPLIED_OUTCOMES, IdempotencyKey, LedgerEntry, Usage

USAGE = Usage.__table__
LEDGER = LedgerEntry.__table__
KEYS = IdempotencyKey.__table__


def periods(moment: datetime) -> dict[str, str]:
    return {"d": "d:" + moment.strftime("%Y-%m-%d"), "m": "m:" + moment.strftime("%Y-%m")}


def capped(token) -> bool:
    return token.daily_cap_micros is not None or token.monthly_cap_micros is not None


def to_reserve(token, moment: datetime) -> list[str]:
    """The usage rows a call on this token reserves in: none for a token without caps."""
    return list(periods(moment).values()) if capped(token) else []


def bounds(moment: datetime) -> dict[str, tuple[datetime, datetime]]:
    """The UTC day and month of `moment`, as [start, end) instants (what periods() names)."""
    moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return {"d": (day, day + timedelta(days=1)), "m": (month, next_month)}


# Built once: constructing a statement costs far more than running it (see bench/results.md).
_ONE_PERIOD = (USAGE.c.token_id == bindparam("tid"), USAGE.c.period == bindparam("per"))
_SETTLE = update(USAGE).where(*_ONE_PERIOD).values(reserved_micros=USAGE.c.reserved_micros - bindparam("micros"),
                                                   settled_micros=USAGE.c.settled_micros + bindparam("micros"))
_RELEASE = update(USAGE).where(*_ONE_PERIOD).values(reserved_micros=USAGE.c.reserved_micros - bindparam("micros"))
_USED = select(USAGE.c.settled_micros + USAGE.c.reserved_micros) \
    .where(USAGE.c.token_id == bindparam("tid"), USAGE.c.period == bindparam("per"))
_UPSERTS: dict = {}


def _reserve_statement(dialect: str, kind: str):
    """INSERT the period's row with the reservation, or add to it; "capped": only while under the cap. One
    statement instead of an insert-if-missing and an update per period."""
    statement = _UPSERTS.get((dialect, kind))
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(USAGE).values(token_id=bindparam("tid"), period=bindparam("per"), settled_micros=0,
                                         reserved_micros=bindparam("micros"))
        where = None
        if kind == "capped":
            where = USAGE.c.settled_micros + USAGE.c.reserved_micros + statement.excluded.reserved_micros <= bindparam("cap")
        statement = statement.on_conflict_do_update(
            index_elements=[USAGE.c.token_id, USAGE.c.period],
            set_={"reserved_micros": USAGE.c.reserved_micros + statement.excluded.reserved_micros},
            where=where)
        statement = statement.returning(USAGE.c.token_id)
        _UPSERTS[(dialect, kind)] = statement
    return statement


def reserve(connection, token, micros: int, moment: datetime) -> list[str]:
    """Reserve `micros` against the token's caps for the day and month of `moment`, or raise 403 with what
    remains (which rolls the caller's transaction back). The conditional upsert is atomic in both
    databases, so concurrent calls, in one process or many, can never take a token past a cap."""
    if not capped(token):
        return []  # nothing to guard: usage() reads the ledger and the key rows instead
    dialect = dialect_name(connection)
    current = periods(moment)
    reserved = []
    for kind, period in current.items():
        cap = {"d": token.daily_cap_micros, "m": token.monthly_cap_micros}[kind]
        params = {"tid": token.id, "per": period, "micros": micros}
        if cap is None:
            done = connection.execute(_reserve_statement(dialect, "plain"), params).first()
        else:
            # A new row is inserted without the cap's test: a single call over the cap never gets there.
            done = micros <= cap and connection.execute(_reserve_statement(dialect, "capped"), {**params, "cap": cap}).first()
        if not done:
            used = _used(connection, token.id, period)
            raise messages.over_cap(kind, amounts.from_micros(max(0, cap - used)), amounts.from_micros(cap))
        reserved.append(period)
    return reserved


def check(connection, token, micros: int, moment: datetime) -> dict:
    """reserve()'s decision, read only (a dry run): the same 403 with what remains, or what would remain of each
    cap once `micros` were reserved (None: no cap)."""
    left = {}
    for kind, period in periods(moment).items():
        cap = {"d": token.daily_cap_micros, "m": token.monthly_cap_micros}[kind]
        if cap is None:
            left[kind] = None
            continue
        used = _used(connection, token.id, period)
        if micros > cap or used + micros > cap:
            raise messages.over_cap(kind, amounts.from_micros(max(0, cap - used)), amounts.from_micros(cap))
        left[kind] = amounts.from_micros(cap - used - micros)
    return {"today": left["d"], "this_month": left["m"]}


def settle(connection, token_id: str, micros: int, reserved_periods: list[str]):
    _each_period(connection, _SETTLE, token_id, micros, reserved_periods)


def release(connection, token_id: str, micros: int, reserved_periods: list[str]):
    _each_period(connection, _RELEASE, token_id, micros, reserved_periods)


def _each_period(connection, statement, token_id: str, micros: int, reserved_periods: list[str]):
    # One row per parameter set, in reserve()'s order (day, then month): on PostgreSQL a
    # single UPDATE .. IN (day, month) locks the rows in whatever order it scans them, and deadlocked
    # against concurrent reservations under load (found by make bench).
    if reserved_periods and micros:
        connection.execute(statement, [{"tid": token_id, "per": period, "micros": micros} for period in reserved_periods])


def _used(connection, token_id: str, period: str) -> int:
    return connection.execute(_USED, {"tid": token_id, "per": period}).scalar() or 0


# A token without caps: what was applied in the period (the ledger dates money when it was reserved), plus what
# its calls whose outcome is unknown still hold. Both sums run on partial indexes (models.py).
_APPLIED_SUM = select(func.coalesce(func.sum(LEDGER.c.amount_micros), 0)).where(
    LEDGER.c.token_id == bindparam("tid"), LEDGER.c.outcome.in_(APPLIED_OUTCOMES),
    LEDGER.c.created_at >= bindparam("start"), LEDGER.c.created_at < bindparam("end"))
_HELD_SUM = select(func.coalesce(func.sum(KEYS.c.reserved_micros), 0)).where(
    KEYS.c.reserved_token_id == bindparam("tid"), KEYS.c.reserved_micros > 0,
    KEYS.c.reserved_at >= bindparam("start"), KEYS.c.reserved_at < bindparam("end"))


def ledger_usage(connection, token_id: str, start: datetime, end: datetime) -> tuple[int, int]:
    """(applied, held) in [start, end)."""
    params = {"tid": token_id, "start": start, "end": end}
    return (connection.execute(_APPLIED_SUM, params).scalar() or 0), (connection.execute(_HELD_SUM, params).scalar() or 0)


def start_capping(connection, token, moment: datetime):
    """A token that had no caps gets one: its day's and month's usage rows are written from the ledger and its
    calls in flight, since those calls reserved nothing. Run while claims are held (claims.hold_new_claims, from
    tokens.update_token), so no claim that read the token uncapped is still writing. A call in flight now ends
    without touching the rows (it reserved none): its amount stays counted as held, so until the period ends usage
    may count a call that then failed, never miss one that was applied."""
    for kind, period in periods(moment).items():
        start, end = bounds(moment)[kind]
        applied, held = ledger_usage(connection, token.id, start, end)
        connection.execute(delete(USAGE).where(USAGE.c.token_id == token.id, USAGE.c.period == period))
        connection.execute(insert(USAGE).values(token_id=token.id, period=period, settled_micros=applied,
                                                reserved_micros=held))


def usage(connection, token, moment: datetime) -> dict:
    if capped(token):
        today, month = periods(moment)["d"], periods(moment)["m"]
        used_today, used_month = _used(connection, token.id, today), _used(connection, token.id, month)
    else:
        used_today, used_month = (sum(ledger_usage(connection, token.id, *bounds(moment)[kind])) for kind in ("d", "m"))

    def left(cap, used):
        return None if cap is None else amounts.from_micros(max(0, cap - used))

    return {
        "usage": {"today": amounts.from_micros(used_today), "this_month": amounts.from_micros(used_month)},
        "remaining": {"today": left(token.daily_cap_micros, used_today),
                      "this_month": left(token.monthly_cap_micros, used_month)},
    }
