"""The operations ledger: every call the relay made on a balance, the record Paywalls does not expose.

Outcomes: credited, charged, declined (charge answered success:false), rejected (Paywalls 4xx),
failed (nothing applied), ambiguous (may have applied; a retry or `ledger resolve` settles it), replayed,
read (balance look-ups), dry_run (a deposit or charge checked with ?dry_run=true: nothing was sent or reserved; never
in the deposits feed). Which money outcome writes which row is money.py's outcome table.

A money row's created_at is when the money counts (the moment its cap reservation was made, caps.py), so
an export by date agrees with the caps; recorded_at is when the row was written.
"""

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, String, bindparam, insert, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

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
    """`ledger export`: the rows of a date range, optionally of some outcomes, oldest first."""
    return search_rows(session, Search(since=since, until=until, outcomes=tuple(outcomes or ())))


def search_rows(session, search: "Search"):
    """Every row a search finds, oldest first, as export rows (streamed: a month can be large)."""
    query = search.where(select(LedgerEntry)).order_by(LedgerEntry.id)
    for entry in session.scalars(query.execution_options(yield_per=500)):
        yield export_view(entry)


def export_view(entry: LedgerEntry) -> dict:
    """A row as `ledger export` writes it: EXPORT_COLUMNS, in that order."""
    return {
        "id": entry_id(entry), "created_at": iso(entry.created_at), "operation": entry.operation,
        "outcome": entry.outcome, "user": entry.user, "amount": entry.amount, "metadata": entry.metadata_,
        "idempotency_key": entry.idempotency_key, "client_key": entry.client_key,
        "upstream_key": entry.upstream_key, "upstream_status": entry.upstream_status,
        "latency_ms": entry.latency_ms, "balance_formatted": entry.balance_formatted,
        "token_id": entry.token_id, "token_label": entry.token_label, "request_id": entry.request_id,
        "recorded_at": iso(entry.recorded_at),
    }


# --- search, for the console's ledger pages ------------------------------------------------------------------

@dataclass(frozen=True)
class Search:
    """A ledger filter: every given condition must hold. `since` is inclusive and `until` exclusive, on created_at
    (when the money counts, as `ledger export` filters). `reference` finds a row by any key that names it: the
    event's idempotency key, the client's Idempotency-Key, the upstream key, or a metadata value (e.g. the invoice
    number a workflow mapped into metadata.reference), matched exactly."""

    user: str | None = None
    token_id: str | None = None
    outcomes: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    reference: str | None = None

    def where(self, query):
        if self.user:
            query = query.where(LedgerEntry.user == self.user)
        if self.token_id:
            query = query.where(LedgerEntry.token_id == self.token_id)
        if self.outcomes:
            query = query.where(LedgerEntry.outcome.in_(self.outcomes))
        if self.since:
            query = query.where(LedgerEntry.created_at >= self.since)
        if self.until:
            query = query.where(LedgerEntry.created_at < self.until)
        if self.reference:
            query = query.where(or_(LedgerEntry.idempotency_key == self.reference,
                                    LedgerEntry.client_key == self.reference,
                                    LedgerEntry.upstream_key == self.reference,
                                    _metadata_holds(self.reference)))
        return query


def _metadata_holds(value: str):
    """Whether any string in a row's metadata, at any depth, equals `value`. Matched by the database's own JSON
    functions (not a LIKE over the JSON text), so quoting, escapes and key order cannot make it miss or mis-match."""
    return _MetadataHolds(LedgerEntry.__table__.c.metadata, literal(value, String),
                          literal(json.dumps({"v": value}), String))


class _MetadataHolds(FunctionElement):
    """A boolean condition rendered per dialect: (metadata column, the value, the value as jsonpath variables)."""

    type = Boolean()
    inherit_cache = True
    name = "metadata_holds"


@compiles(_MetadataHolds, "postgresql")
def _metadata_holds_postgresql(element, compiler, **kw):
    column, _, variables = (compiler.process(clause, **kw) for clause in element.clauses.clauses)
    # The column is json, which keeps a \u0000 escape that jsonb refuses: casting such a row would fail the whole
    # search. Those rows (and any whose text merely holds the characters \u0000) are skipped by this condition
    # alone; the other filters still find them.
    return (f"CASE WHEN strpos(CAST({column} AS text), '\\u0000') > 0 THEN false ELSE "
            f"jsonb_path_exists(CAST({column} AS jsonb), '$.** ? (@ == $v)', CAST({variables} AS jsonb)) END")


@compiles(_MetadataHolds)
def _metadata_holds_sqlite(element, compiler, **kw):
    column, value, _ = (compiler.process(clause, **kw) for clause in element.clauses.clauses)
    return f"EXISTS (SELECT 1 FROM json_tree({column}) AS member WHERE member.type = 'text' AND member.atom = {value})"


@dataclass
class Page:
    entries: list
    older: str | None  # the cursor of the next page back in time, if there is one
    newer: str | None  # the cursor of the page before this one, if there is one


def page(session, search: Search, before: int | None = None, after: int | None = None, limit: int = 50) -> Page:
    """One page of a search, newest first. `before=<id>` pages back in time from a row; `after=<id>` forward."""
    query = search.where(select(LedgerEntry))
    if after is not None:
        found = list(session.scalars(query.where(LedgerEntry.id > after).order_by(LedgerEntry.id).limit(limit + 1)))
        entries = list(reversed(found[:limit]))
        newer = entry_id(entries[0]) if len(found) > limit else None
        older = entry_id(entries[-1]) if entries and _exists(session, query.where(LedgerEntry.id < entries[-1].id)) \
            else None
        if not entries:  # nothing newer than the cursor: the newest page is where the reader is going
            return page(session, search, limit=limit)
        return Page(entries, older, newer)
    if before is not None:
        query_page = query.where(LedgerEntry.id < before)
    else:
        query_page = query
    found = list(session.scalars(query_page.order_by(LedgerEntry.id.desc()).limit(limit + 1)))
    entries = found[:limit]
    older = entry_id(entries[-1]) if len(found) > limit else None
    newer = entry_id(entries[0]) if before is not None and entries and \
        _exists(session, query.where(LedgerEntry.id > entries[0].id)) else None
    return Page(entries, older, newer)


def _exists(session, query) -> bool:
    return session.execute(query.with_only_columns(LedgerEntry.id).limit(1)).first() is not None


APPLIED_OR_REFUSED = ("credited", "charged", "declined", "rejected")  # the settled answers a replay can repeat


def replayed_from(session, entry: LedgerEntry) -> LedgerEntry | None:
    """The row whose answer a `replayed` row repeated: the latest settled row of the same event key, operation and
    idempotency scope (the token's own, or its namespace's tokens') written before it. None for other rows, or when
    the original is gone (a purge, or the token's namespace changed since)."""
    if entry.outcome != "replayed" or not entry.idempotency_key:
        return None
    token = session.get(Token, entry.token_id)
    if token is not None and token.namespace:
        scope = select(Token.id).where(Token.namespace == token.namespace)
        same_scope = LedgerEntry.token_id.in_(scope)
    else:
        same_scope = LedgerEntry.token_id == entry.token_id
    query = select(LedgerEntry).where(LedgerEntry.idempotency_key == entry.idempotency_key,
                                      LedgerEntry.operation == entry.operation, same_scope,
                                      LedgerEntry.outcome.in_(APPLIED_OR_REFUSED), LedgerEntry.id < entry.id)
    return session.scalars(query.order_by(LedgerEntry.id.desc()).limit(1)).first()


def replays_of(session, entry: LedgerEntry, limit: int = 20) -> list:
    """The `replayed` rows that repeated this row's answer (those replayed_from would link back here)."""
    if entry.outcome not in APPLIED_OR_REFUSED or not entry.idempotency_key:
        return []
    query = select(LedgerEntry).where(LedgerEntry.idempotency_key == entry.idempotency_key,
                                      LedgerEntry.operation == entry.operation, LedgerEntry.outcome == "replayed",
                                      LedgerEntry.id > entry.id).order_by(LedgerEntry.id).limit(limit)
    return [row for row in session.scalars(query) if (original := replayed_from(session, row)) and original.id == entry.id]


def write_export(rows, out, fmt: str):
    for chunk in export_chunks(rows, fmt):
        out.write(chunk)


def export_chunks(rows, fmt: str):
    """The export as text, a line at a time: `ledger export` writes it to stdout, the console streams it."""
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row, ensure_ascii=False) + "\n"
        return
    # RFC 4180's CRLF: the csv module quotes a field holding any character of the line terminator, so a value with a
    # lone CR (a label written before labels were one line) stays inside its quoted cell instead of splitting the row.
    line = io.StringIO()
    writer = csv.DictWriter(line, fieldnames=EXPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        row = dict(row, metadata=json.dumps(row["metadata"], ensure_ascii=False, sort_keys=True)
                   if row["metadata"] is not None else "")
        writer.writerow({name: spreadsheet_safe(value) for name, value in row.items()})
        yield line.getvalue()
        line.seek(0)
        line.truncate()
    yield line.getvalue()  # the header alone, when there was no row


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet shows as text, never runs: request ids, users, labels and metadata come from
    callers, and a cell starting with = + - @ tab or CR is a formula in Excel, LibreOffice and Sheets (OWASP's
    "CSV injection": prefix such cells with a single quote). JSONL is for programs and stays raw."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
