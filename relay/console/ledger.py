"""The console's ledger pages: search with cursor pages, one row with every stored field, CSV and JSONL export of
the current search, and the calls whose outcome is still unknown with what to do about them (issue 17).

The search and the export are relay/ledger.py's, the same code as `paywalls-relay ledger export`: what the console
downloads is byte for byte what the CLI writes for the same filter, spreadsheet-safe CSV included.
"""

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from flask import Response, abort, current_app, flash, redirect, render_template, request, stream_with_context, url_for
from sqlalchemy import inspect, select
from werkzeug.routing import BuildError

from .. import audit, claims, clock, dates, db, ledger as ledger_rows, money
from ..models import LedgerEntry, Token, as_utc
from ..tokens import iso
from . import bp
from .auth import client_address

PAGE_SIZE = 50
AMBIGUOUS_SHOWN = 200
RESOLVE_LIMIT = 20  # keys re-sent per click: each may wait for Paywalls up to RELAY_UPSTREAM_BUDGET
FIELD_LABELS = {"user": "User", "token": "Token", "outcome": "Outcome", "from": "From", "to": "To",
                "ref": "Key or reference", "cursor": "Page"}


@dataclass
class Filter:
    """The search form as the operator filled it in (values echoed back into the form), the ledger.Search it
    means, and the fields it got wrong (shown beside each field)."""

    values: dict
    search: ledger_rows.Search
    errors: dict = field(default_factory=dict)

    def query_args(self) -> dict:
        """The filter as URL parameters (for export links and page links): only what the operator set."""
        return {name: value for name, value in self.values.items() if value not in (None, "", [])}


def read_filter(args) -> Filter:
    values = {name: (args.get(name) or "").strip() for name in ("user", "token", "from", "to", "ref")}
    values["outcome"] = [item.strip() for value in args.getlist("outcome") for item in value.split(",") if item.strip()]
    errors = {}
    unknown = [item for item in values["outcome"] if item not in ledger_rows.OUTCOMES]
    if unknown:
        errors["outcome"] = (f"Unknown outcome {', '.join(map(repr, unknown))}: choose from "
                             f"{', '.join(ledger_rows.OUTCOMES)}.")
    since = _moment(values["from"], "from", errors)
    until = _moment(values["to"], "to", errors)
    if until is not None and len(values["to"]) == 10:
        # A day typed as "To" is included: the search ends at the next midnight (UTC); after 9999-12-31, nothing.
        until = until + timedelta(days=1) if until.date() < date.max else None
    if since is not None and until is not None and until <= since and "to" not in errors:
        errors["to"] = "must be on or after From."
    for name, limit in (("user", 128), ("ref", 255), ("token", 16)):
        if "\x00" in values[name]:
            errors[name] = "cannot contain the NUL character (U+0000): no stored value holds it."
        elif len(values[name]) > limit:
            errors[name] = f"is at most {limit} characters long: no stored value is longer."
    search = ledger_rows.Search(user=values["user"] or None, token_id=values["token"] or None,
                                outcomes=tuple(values["outcome"]), since=since, until=until,
                                reference=values["ref"] or None)
    return Filter(values, search, errors)


def _moment(text: str, name: str, errors: dict) -> datetime | None:
    if not text:
        return None
    try:
        return dates.parse(text)
    except dates.DateError as error:
        errors[name] = f"{error} (UTC unless an offset is given)."
        return None


def _cursor(name: str, errors: dict) -> int | None:
    try:
        return ledger_rows.parse_cursor(request.args.get(name))
    except ValueError:
        errors["cursor"] = (f"The page link's {name}= is not a ledger row id such as led_42. Start again from the "
                            "first page.")
        return None


def _tokens(read) -> list:
    """Every token, revoked ones too (their rows stay in the ledger), for the token filter."""
    return list(read.execute(select(Token.id, Token.label, Token.revoked_at).order_by(Token.label, Token.id)))


@bp.get("/ledger")
def ledger():
    chosen = read_filter(request.args)
    before, after = _cursor("before", chosen.errors), _cursor("after", chosen.errors)
    with db.read() as read:
        tokens = _tokens(read)
        page = None if chosen.errors else ledger_rows.page(read, chosen.search, before=before, after=after,
                                                           limit=PAGE_SIZE)
    status = 400 if chosen.errors else 200
    return render_template("console/ledger.html", filter=chosen, page=page, tokens=tokens,
                           outcomes=ledger_rows.OUTCOMES, labels=FIELD_LABELS, when=when), status


def when(moment: datetime) -> str:
    """A row's time as the pages show it: UTC, whatever time zone the database session reports it in."""
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S")


@bp.get("/ledger/export")
def ledger_export():
    """The current search, oldest first, as a file: ?format=csv (default) or jsonl."""
    fmt = request.args.get("format", "csv")
    if fmt not in ("csv", "jsonl"):
        abort(400, description="format must be csv or jsonl.")
    chosen = read_filter(request.args)
    if chosen.errors:
        return ledger()  # the search page, with the errors beside the fields
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")

    def body():
        # A month can be large: rows are sent as they are read, from one read transaction (one consistent view).
        with db.read() as read:
            yield from ledger_rows.export_chunks(ledger_rows.search_rows(read, chosen.search), fmt)

    kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return Response(stream_with_context(body()), content_type=f"{kind}; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="ledger-{stamp}.{fmt}"'})


@bp.get("/ledger/<entry_id>")
def ledger_entry(entry_id: str):
    try:
        row_id = ledger_rows.parse_cursor(entry_id)
    except ValueError:
        row_id = None
    with db.read() as read:
        entry = read.get(LedgerEntry, row_id) if row_id else None
        if entry is None:
            return render_template("console/error.html", title="No such ledger row",
                                   detail=f"There is no ledger row {entry_id!r}. Row ids look like led_42: search "
                                          "the ledger to find one."), 404
        original = ledger_rows.replayed_from(read, entry)
        replays = ledger_rows.replays_of(read, entry)
        token = read.get(Token, entry.token_id)
    return render_template("console/ledger_entry.html", entry=entry, fields=stored_fields(entry), original=original,
                           replays=replays, token_url=token_url(token.id) if token else None, when=when,
                           entry_id=ledger_rows.entry_id)


def token_url(token_id: str) -> str | None:
    """The token's page in the console (pages.py), if this console has one."""
    try:
        return url_for("console.token_detail", token_id=token_id)
    except BuildError:
        return None


def stored_fields(entry: LedgerEntry) -> list[tuple[str, str, object]]:
    """(column, label, value) for every column of the row, in the table's order: nothing stored is left out."""
    labels = {"id": "Row", "created_at": "Counts at (UTC)", "recorded_at": "Recorded at (UTC)",
              "metadata": "Metadata", "amount_micros": "Amount (millionths)"}
    shown = []
    for attribute in inspect(LedgerEntry).column_attrs:  # attribute keys: metadata is mapped as metadata_
        column = attribute.columns[0]
        value = getattr(entry, attribute.key)
        if column.name == "id":
            value = ledger_rows.entry_id(entry)
        elif isinstance(value, datetime):
            value = iso(value)
        elif column.name == "metadata" and value is not None:
            value = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
        shown.append((column.name, labels.get(column.name, column.name.replace("_", " ").capitalize()), value))
    return shown


@bp.get("/ledger/ambiguous")
def ledger_ambiguous():
    """Calls whose outcome is still unknown and that nobody is working on: exactly what `ledger resolve` takes."""
    config = current_app.config["RELAY"]
    with db.read() as read:
        rows = claims.stranded(read, clock.now(), config["RELAY_LOCK_TIMEOUT"], AMBIGUOUS_SHOWN + 1)
        labels = dict(read.execute(select(Token.id, Token.label)).all()) if rows else {}
    keys = [_stranded_view(row, labels) for row in rows[:AMBIGUOUS_SHOWN]]
    return render_template("console/ledger_ambiguous.html", keys=keys, more=len(rows) > AMBIGUOUS_SHOWN,
                           lock_timeout=config["RELAY_LOCK_TIMEOUT"], resolve_limit=RESOLVE_LIMIT)


def _stranded_view(row, labels: dict) -> dict:
    try:
        body = json.loads(row.request_body) if row.request_body else None
    except ValueError:
        body = None
    token_id = row.reserved_token_id or row.token_id
    return {"key": row.key, "scope": row.scope, "operation": row.operation, "state": row.state,
            "token_id": token_id, "token_label": labels.get(token_id), "since": iso(row.created_at),
            "locked_at": iso(row.locked_at) if row.locked_at else None,
            "user": body.get("user") if body else None, "amount": body.get("amount") if body else None,
            "metadata": json.dumps(body["metadata"], ensure_ascii=False, sort_keys=True)
            if body and body.get("metadata") is not None else None,
            "resolvable": body is not None}


@bp.post("/ledger/resolve")
def ledger_resolve():
    """`paywalls-relay ledger resolve` from the console, a few keys per click."""
    counts = money.resolve(RESOLVE_LIMIT)
    audit.record_resolve("console", client_address(), counts, at=clock.now())
    handled = sum(counts[name] for name in money.OUTCOMES)
    flash(f"Resolved {handled} key{'s' if handled != 1 else ''}: "
          + ", ".join(f"{counts[name]} {name.replace('_', ' ')}" for name in money.OUTCOMES) + ".")
    if counts["ambiguous"]:
        flash(f"{counts['ambiguous']} {'is' if counts['ambiguous'] == 1 else 'are'} still ambiguous (Paywalls did not "
              "confirm): resolve again later.")
    if counts["unresolvable"]:
        flash(f"{counts['unresolvable']} {'was' if counts['unresolvable'] == 1 else 'were'} stored before request bodies "
              "were kept and need a person: look each one up in the Paywalls dashboard by user and amount.")
    return redirect(url_for("console.ledger_ambiguous"))
