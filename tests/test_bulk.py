"""Bulk deposits and charges from a file (relay/bulk.py, `paywalls-relay bulk`): every row through the money path."""

import csv
import io
import threading

import pytest

from conftest import create_token, credits, deposit
from relay import bulk, db

MIGRATION = (b"user,amount,reason,reference,metadata.source\r\n"
             b"acme:alice,10,migration,old-1,billing-v1\r\n"
             b"acme:bob,2.50,migration,old-2,billing-v1\r\n"
             b"acme:carol,7,migration,old-3,billing-v1\r\n")


def read(app, content, op="deposit"):
    with app.app_context():
        return bulk.read_rows(content, op)


def go(app, token_id, content, op="deposit", **options):
    with app.app_context():
        rows, problems = bulk.read_rows(content, op)
        token = bulk.load_token(token_id)
        return bulk.run(token, op, rows, problems, bulk.batch_id(content, options.pop("batch", None)), **options)


def plan_of(app, token_id, content, op="deposit", batch=None):
    with app.app_context():
        rows, problems = bulk.read_rows(content, op)
        return bulk.plan(bulk.load_token(token_id), op, rows, problems, bulk.batch_id(content, batch))


def test_a_file_is_credited_once_and_a_rerun_replays_every_row(app, sandbox):
    token_id, _ = create_token(app)
    report = go(app, token_id, MIGRATION)
    assert [(r.line, r.user, r.amount, r.outcome) for r in report.rows] == [
        (2, "acme:alice", "10", "credited"), (3, "acme:bob", "2.5", "credited"), (4, "acme:carol", "7", "credited")]
    assert report.ok and report.rows[0].balance_after
    assert report.rows[0].idempotency_key == f"bulk:{bulk.batch_id(MIGRATION)}:2"
    again = go(app, token_id, MIGRATION)
    assert [r.outcome for r in again.rows] == ["replayed"] * 3 and again.ok
    assert len(credits(sandbox)) == 3
