"""The operations ledger: every call the relay made on a balance, the record Paywalls does not expose.

Outcomes: credited, charged, declined (charge answered success:false), rejected (Paywalls 4xx),
failed (nothing applied), ambiguous (may have applied; a retry or `ledger resolve` settles it), replayed,
read (balance look-ups), dry_run (a deposit or charge checked with ?dry_run=true: nothing was sent or reserved; never
in the deposits feed). Which money outcome writes which row is money.py's outcome table.

A money row's created_at is when the money counts (the moment its cap reservation was made, caps.py), so
an export by date agrees with the caps; recorded_at is when the row was written.
"""

import csv
import json
import re
from datetime import datetime

from sqlalchemy import bindparam, insert, select

from . import amounts, metrics
from .models import LedgerEntry, Token, utcnow
from .tokens import iso

OUTCOMES = ("credited", "charged", "declined", "rejected", "failed", "ambiguous", "replayed", "read", "dry_run")
EXPORT_COLUMNS = ["id", "created_at", "operation", "outcome", "user", "amount", "metadata", "idempotency_key",
                  "client_key", "upstream_key", "upstream_status", "latency_ms", "balance_formatted", "token_id",
                  "token_label", "request_id", "recorded_at"]


_INSERT = insert(LedgerEntry.__table__)  # built once; a Core insert skips the ORM flush on the request path
_TOKEN = select(Token.__table__.c.id, Token.__table__.c.label).where(Token.__table__.c.id == bindparam("tid"))


def record(session, token, operation: str, outcome: str, created_at=None, **fields) -> int:
    """Write one ledger row; its id (relay-made events are named after it, events.py)."""
    created_at = created_at or utcnow()
    values = {"created_at": created_at, "recorded_at": fields.pop("recorded_at", None) or created_at,
              "token_id": token.id, "token_label": token.label, "operation": operation, "outcome": outcome, **fields}
    if "metadata_" in values:
        values["metadata"] = values.pop("metadata_")
    if values.get("amount") is not None:
        values["amount_micros"] = amounts.to_micros(values["amount"])  # summed as usage (caps.usage)
    result = session.execute(_INSERT, values)
    metrics.OUTCOMES.labels(operation, outcome).inc()
    return result.inserted_primary_key[0]


def token_for(connection, token_id: str):
    """The id and label a ledger row names, for rows written without a request (ledger resolve)."""
    return connection.execute(_TOKEN, {"tid": token_id}).first()


def entry_id(entry: LedgerEntry) -> str:
    return f"led_{entry.id}"


CURSOR = re.compile(r"led_[1-9][0-9]{0,18}")  # as entry_id writes them: no sign, no leading zero, no led_0


def parse_cursor(cursor: str | None) -> int | None:
    if cursor in (None, ""):
        return None
    if not CURSOR.fullmatch(cursor):
        raise ValueError(cursor)
    entry = int(cursor[4:])
    if entry > 2**63 - 1:  # past any row id; the database could not even compare it
        raise ValueError(cursor)
    return entry


def cursor_handed_out(session, before_id: int, user=None, since: datetime | None = None) -> bool:
    """Whether a page of this query could have handed out `led_<before_id>`: every cursor names a credit the
    query itself returned or scanned. Anything else (led_0, a charge's id, an id past the newest row, another
    user's row) would start a page nobody asked for, such as the first page again."""
    query = select(LedgerEntry.id).where(LedgerEntry.id == before_id, LedgerEntry.operation == "deposit",
                                         LedgerEntry.outcome == "credited")
    if user:
        query = query.where(LedgerEntry.user == user)
    if since:
        query = query.where(LedgerEntry.created_at >= since)
    return session.execute(query).first() is not None


def deposits(session, *, user=None, since: datetime | None = None, limit=50, before_id=None,
             allowed=lambda user: True, token=None) -> tuple[list[dict], str | None]:
    """Credits the relay applied, newest first, with a cursor for the next page. A token sees the credits of its
    namespace's tokens, or its own when it has none; all of them only with feed "all"."""
    query = select(LedgerEntry).where(LedgerEntry.operation == "deposit", LedgerEntry.outcome == "credited")
    if token is not None and token.feed != "all":
        if token.namespace:
            same = select(Token.__table__.c.id).where(Token.__table__.c.namespace == token.namespace)
            query = query.where(LedgerEntry.token_id.in_(same))
        else:
            query = query.where(LedgerEntry.token_id == token.id)
    if user:
        query = query.where(LedgerEntry.user == user)
    if since:
        query = query.where(LedgerEntry.created_at >= since)
    if before_id:
        query = query.where(LedgerEntry.id < before_id)
    # A token only sees users its pattern allows: scan a bounded window of rows; when the window
    # runs out first, the cursor resumes after the last row scanned.
    scan, page, last, seen = limit * 20, [], None, 0
    for entry in session.scalars(query.order_by(LedgerEntry.id.desc()).limit(scan + 1)):
        seen += 1
        if seen > scan:
            return _views(page), entry_id(last)
        if len(page) == limit:
            return _views(page), entry_id(page[-1])
        last = entry
        if allowed(entry.user):
            page.append(entry)
    return _views(page), None


def _views(entries) -> list[dict]:
    return [deposit_view(entry) for entry in entries]


def deposit_view(entry: LedgerEntry) -> dict:
    return {
        "id": entry_id(entry),
        "created_at": iso(entry.created_at),
        "user": entry.user,
        "amount": entry.amount,
        "metadata": entry.metadata_ or {},
        "idempotency_key": entry.idempotency_key,
        "token_id": entry.token_id,
        "token_label": entry.token_label,
        "balance_formatted": entry.balance_formatted,
    }


def export_rows(session, since: datetime, until: datetime | None = None, outcomes=None):
    query = select(LedgerEntry).where(LedgerEntry.created_at >= since)
    if until:
        query = query.where(LedgerEntry.created_at < until)
    if outcomes:
        query = query.where(LedgerEntry.outcome.in_(outcomes))
    for entry in session.scalars(query.order_by(LedgerEntry.id).execution_options(yield_per=500)):
        yield {
            "id": entry_id(entry), "created_at": iso(entry.created_at), "operation": entry.operation,
            "outcome": entry.outcome, "user": entry.user, "amount": entry.amount, "metadata": entry.metadata_,
            "idempotency_key": entry.idempotency_key, "client_key": entry.client_key,
            "upstream_key": entry.upstream_key, "upstream_status": entry.upstream_status,
            "latency_ms": entry.latency_ms, "balance_formatted": entry.balance_formatted,
            "token_id": entry.token_id, "token_label": entry.token_label, "request_id": entry.request_id,
            "recorded_at": iso(entry.recorded_at),
        }


def write_export(rows, out, fmt: str):
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    # RFC 4180's CRLF: the csv module quotes a field holding any character of the line terminator, so a value with a
    # lone CR (a label written before labels were one line) stays inside its quoted cell instead of splitting the row.
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        row = dict(row, metadata=json.dumps(row["metadata"], ensure_ascii=False, sort_keys=True)
                   if row["metadata"] is not None else "")
        writer.writerow({name: spreadsheet_safe(value) for name, value in row.items()})


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet shows as text, never runs: request ids, users, labels and metadata come from
    callers, and a cell starting with = + - @ tab or CR is a formula in Excel, LibreOffice and Sheets (OWASP's
    "CSV injection": prefix such cells with a single quote). JSONL is for programs and stays raw."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
