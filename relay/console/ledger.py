"""Ledger pages of the console: search, row detail, export and the ambiguous view (issue 17, helper E).

This first version lists the newest ledger rows only."""

from flask import render_template
from sqlalchemy import select

from .. import db
from ..models import LedgerEntry
from . import bp


@bp.get("/ledger")
def ledger():
    with db.read() as read:
        rows = list(read.scalars(select(LedgerEntry).order_by(LedgerEntry.id.desc()).limit(50)))
    return render_template("console/ledger.html", rows=rows)
