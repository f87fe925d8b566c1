"""Daily and monthly caps: reserved before Paywalls is called, then settled or released.

A reservation belongs to the claim that made it: the key's row records how much, against which
token and in which periods, and only the transition that ends the attempt (money.py) settles or
releases exactly that. A call counts in the UTC day and month of its reservation: a retry after
midnight of a call that may already have landed still counts in the old day (and its ledger row is
dated then), so the cap a finance person reads agrees with the ledger's dates.
"""

from datetime import datetime

from sqlalchemy import bindparam, select, update

from . import amounts, messages
from .db import dialect_name
from .models import Usage

USAGE = Usage.__table__


def periods(moment: datetime) -> dict[str, str]:
    return {"d": "d:" + moment.strftime("%Y-%m-%d"), "m": "m:" + moment.strftime("%Y-%m")}


# Built once: constructing a statement costs far more than running it (see bench/results.md).
_ONE_PERIOD = (USAGE.c.token_id == bindparam("tid"), USAGE.c.period == bindparam("per"))
_SETTLE = update(USAGE).where(*_ONE_PERIOD).values(reserved_micros=USAGE.c.reserved_micros - bindparam("micros"),
                                                   settled_micros=USAGE.c.settled_micros + bindparam("micros"))
_RELEASE = update(USAGE).where(*_ONE_PERIOD).values(reserved_micros=USAGE.c.reserved_micros - bindparam("micros"))
_USED = select(USAGE.c.settled_micros + USAGE.c.reserved_micros) \
    .where(USAGE.c.token_id == bindparam("tid"), USAGE.c.period == bindparam("per"))
_UPSERTS: dict = {}


def _reserve_statement(dialect: str, kind: str):
    """INSERT the period's row with the reservation, or add to it; "capped": only while under the cap;
    "both": no RETURNING, for a token without caps, run once for the day's and the month's rows. One
    statement instead of an insert-if-missing and an update per period. (A multi-row VALUES would make
    one statement of both rows, but SQLAlchemy cannot cache its compiled form.)"""
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
        if kind != "both":
            statement = statement.returning(USAGE.c.token_id)
        _UPSERTS[(dialect, kind)] = statement
    return statement


def reserve(connection, token, micros: int, moment: datetime) -> list[str]:
    """Reserve `micros` against the token's caps for the day and month of `moment`, or raise 403 with what
    remains (which rolls the caller's transaction back). The conditional upsert is atomic in both
    databases, so concurrent calls, in one process or many, can never take a token past a cap."""
    dialect = dialect_name(connection)
    current = periods(moment)
    if token.daily_cap_micros is None and token.monthly_cap_micros is None:
        reserved = [current["d"], current["m"]]
        _each_period(connection, _reserve_statement(dialect, "both"), token.id, micros, reserved)
        return reserved
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


def usage(connection, token, moment: datetime) -> dict:
    today, month = periods(moment)["d"], periods(moment)["m"]
    used_today, used_month = _used(connection, token.id, today), _used(connection, token.id, month)

    def left(cap, used):
        return None if cap is None else amounts.from_micros(max(0, cap - used))

    return {
        "usage": {"today": amounts.from_micros(used_today), "this_month": amounts.from_micros(used_month)},
        "remaining": {"today": left(token.daily_cap_micros, used_today),
                      "this_month": left(token.monthly_cap_micros, used_month)},
    }
