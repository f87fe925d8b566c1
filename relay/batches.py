"""Bulk batches over HTTP: POST /v1/relay/bulk stores a file, a background runner in each serving process claims
it from the database and runs it through relay/bulk.run, the same money path as every call, row by row.

Why a database queue and a lease, not a thread started by the request: the relay runs as several gunicorn workers
on one or more machines, any of which may die mid-batch. A batch is a row of bulk_batches; a runner claims it by
taking the next lease (a fencing counter, as money.py's keys do) until `lease_until`, renews it every few seconds
while the rows run, and writes progress and the report only while it still holds that lease. A runner that dies
stops renewing; after RELAY_BULK_LEASE another claims the batch and runs it again from the top: every row's
idempotency key binds it to the batch (bulk.py), so the rows already credited are replays and only the others
reach Paywalls. On PostgreSQL the claim is SELECT ... FOR UPDATE SKIP LOCKED, so two processes polling at once
never take the same batch; on SQLite the claim's write transaction (BEGIN IMMEDIATE) serialises them.

Only serving processes run batches (gunicorn workers, `paywalls-relay run`, `dev-stack`): the CLI's other commands
and tests build apps too, and a thread of theirs would run batches nobody asked them to.
"""

import io
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import and_, or_, select, update

from . import bulk, clock, db, messages, tokens
from .models import BulkBatch, Token, as_utc

log = logging.getLogger("relay.batches")

MAX_ROWS = 10_000
# 10,000 rows of a few metadata columns; far above what a valid batch needs, far below what would hurt a worker.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
POLL_SECONDS = 1.0  # an idle runner looks for a queued batch this often (a POST in this process wakes it at once)
FINAL_OK = ("credited", "charged", "replayed")

BATCHES = BulkBatch.__table__
COLUMNS = BATCHES.c


@dataclass(frozen=True)
class Held:
    """The lease a runner holds on a batch: only with it may the runner write the batch's progress and report."""
    batch_id: str
    lease: int


def new_id() -> str:
    return "blk_" + tokens._random(20)


# --- storing and reading batches (the request path) ---------------------------------------------------------

def submit(session, token, operation: str, content: str, batch_key: str, total_rows: int, skip_invalid: bool,
           now: datetime) -> tuple[dict, bool]:
    """(the batch, whether this call queued it). The same file (or batch id) sent again by the same token names the
    same batch: while it runs, the answer is that batch; once it finished, it is queued again, and the rerun
    credits only the rows not credited yet (the others replay)."""
    existing = session.execute(select(BATCHES).where(COLUMNS.token_id == token.id, COLUMNS.operation == operation,
                                                     COLUMNS.batch_key == batch_key)).first()
    if existing is None:
        batch_id = new_id()
        inserted = db.insert_ignore_returning(session, BulkBatch, {
            "id": batch_id, "token_id": token.id, "operation": operation, "batch_key": batch_key, "content": content,
            "skip_invalid": skip_invalid, "total_rows": total_rows, "state": "queued", "lease": 0,
            "progress": None, "created_at": now})
        existing = session.execute(select(BATCHES).where(
            COLUMNS.token_id == token.id, COLUMNS.operation == operation, COLUMNS.batch_key == batch_key)).first()
        if inserted is not None:
            return dict(existing._mapping), True
    batch = dict(existing._mapping)
    if batch["content"] != content:
        raise messages.bulk_batch_reused(batch_key)
    if batch["state"] == "done":
        session.execute(update(BATCHES).where(COLUMNS.id == batch["id"], COLUMNS.state == "done")
                        .values(state="queued", skip_invalid=skip_invalid, finished_at=None, error=None))
        batch.update(state="queued", finished_at=None, error=None)
        return batch, True
    return batch, False


def find(session, token, batch_id: str) -> dict:
    """A batch of this token; another token's batch is as unknown as a batch that does not exist."""
    row = session.execute(select(BATCHES).where(COLUMNS.id == batch_id, COLUMNS.token_id == token.id)).first()
    if row is None:
        raise messages.bulk_not_found()
    return dict(row._mapping)


def describe(batch: dict, with_report: bool = True) -> dict:
    """The answer of GET /v1/relay/bulk/<id> (schemas/bulk-batch.json)."""
    progress = batch["progress"] or {}
    described = {
        "id": batch["id"], "operation": batch["operation"], "batch_key": batch["batch_key"], "state": batch["state"],
        "rows": batch["total_rows"], "done": progress.get("done", 0), "counts": progress.get("counts", {}),
        "rows_per_second": progress.get("rows_per_second"),
        "created_at": _iso(batch["created_at"]), "started_at": _iso(batch["started_at"]),
        "finished_at": _iso(batch["finished_at"]), "error": batch["error"],
        "status_url": f"/v1/relay/bulk/{batch['id']}",
    }
    if with_report:
        described["report"] = json.loads(batch["report"]) if batch["report"] else None
    return described


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else as_utc(moment).isoformat().replace("+00:00", "Z")


def purge(connection, older_than: datetime) -> int:
    """Forget finished batches (their files and reports) finished before `older_than`: `idempotency purge`, with the
    same retention as the keys that make their rows exactly-once. Queued and running batches are never touched."""
    return connection.execute(BATCHES.delete().where(COLUMNS.state == "done",
                                                     COLUMNS.finished_at < older_than)).rowcount


# --- the lease -----------------------------------------------------------------------------------------------------

def claim(connection, owner: str, now: datetime, lease_seconds: float) -> Held | None:
    """Take the oldest batch that is queued, or running under a lease that ran out (its runner died)."""
    query = (select(COLUMNS.id, COLUMNS.lease)
             .where(or_(COLUMNS.state == "queued",
                        and_(COLUMNS.state == "running", COLUMNS.lease_until < now)))
             .order_by(COLUMNS.created_at).limit(1))
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = connection.execute(query).first()
    if row is None:
        return None
    taken = connection.execute(
        update(BATCHES).where(COLUMNS.id == row.id, COLUMNS.lease == row.lease)
        .values(state="running", lease=row.lease + 1, lease_owner=owner,
                lease_until=now + timedelta(seconds=lease_seconds),
                started_at=db_coalesce(COLUMNS.started_at, now)))
    return Held(row.id, row.lease + 1) if taken.rowcount == 1 else None


def db_coalesce(column, value):
    from sqlalchemy import func
    return func.coalesce(column, value)


def _fenced(held: Held):
    return update(BATCHES).where(COLUMNS.id == held.batch_id, COLUMNS.lease == held.lease,
                                 COLUMNS.state == "running")


def renew(connection, held: Held, now: datetime, lease_seconds: float, progress: dict | None) -> bool:
    """Extend the lease (and write the progress so far); False when another runner holds the batch now."""
    values = {"lease_until": now + timedelta(seconds=lease_seconds)}
    if progress is not None:
        values["progress"] = progress
    return connection.execute(_fenced(held).values(**values)).rowcount == 1


def finish(connection, held: Held, now: datetime, progress: dict, report: list[dict] | None,
           error: str | None = None) -> bool:
    return connection.execute(_fenced(held).values(
        state="done", progress=progress, report=None if report is None else json.dumps(report), error=error,
        finished_at=now, lease_until=None, lease_owner=None)).rowcount == 1


def hand_back(connection, held: Held) -> bool:
    """A runner stopping (its process shutting down) queues its batch again, so another takes it at once instead
    of after the lease."""
    return connection.execute(_fenced(held).values(state="queued", lease_until=None, lease_owner=None)).rowcount == 1


# --- the runner ----------------------------------------------------------------------------------------------------

class Runner:
    """One per serving process: a daemon thread that claims batches and runs them, one at a time."""

    def __init__(self, app, poll: float = POLL_SECONDS):
        self.app = app
        self.poll = poll
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.claims = 0  # batches this runner claimed (tests and logs)
        self.running_stop: threading.Event | None = None  # the stop event of the batch running now

    def start(self) -> "Runner":
        self.thread = threading.Thread(target=self.run_forever, name="relay-bulk-runner", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float | None = None):
        """Finish the rows in flight, hand the batch back, and end the thread."""
        self.stopping.set()
        self.wake.set()
        if self.running_stop is not None:
            self.running_stop.set()  # the run finishes its calls in flight and reports the rest skipped
        if self.thread is not None:
            self.thread.join(timeout)

    def run_forever(self):
        while not self.stopping.is_set():
            try:
                ran = self.run_once()
            except Exception:  # a database blip must not end the thread: the next poll tries again
                log.exception("bulk runner: claiming or running a batch failed")
                ran = False
            if not ran:
                self.wake.wait(self.poll)
                self.wake.clear()

    def run_once(self) -> bool:
        """Claim one batch and run it to the end (or until stopped); False when none was waiting."""
        with self.app.app_context():
            settings = self.app.config["RELAY"]
            with db.write() as connection:
                held = claim(connection, self.owner, clock.now(), settings["RELAY_BULK_LEASE"])
            if held is None:
                return False
            self.claims += 1
            self.execute(held, settings)
            return True

    def execute(self, held: Held, settings: dict):
        with db.read() as session:
            batch = dict(session.execute(select(BATCHES).where(COLUMNS.id == held.batch_id)).one()._mapping)
        operation, lease_seconds = batch["operation"], settings["RELAY_BULK_LEASE"]
        token = current_token(batch["token_id"], operation)
        if token is None:
            self._finish(held, {"done": 0, "counts": {}}, None, messages.BULK_TOKEN_GONE.format(operation=operation))
            return
        stop = threading.Event()
        started = time.monotonic()
        latest = {"progress": {"done": 0, "counts": {}, "rows_per_second": None}}
        lost = threading.Event()
        changed = threading.Event()

        counts: dict = {}

        def on_progress(_report, row):
            # Counted row by row: report.counts walks every row, and on each of 10,000 rows that was quadratic.
            counts[row.outcome] = counts.get(row.outcome, 0) + 1
            latest["progress"] = progress_of(counts, started)

        def heartbeat():
            # Renew the lease (and save the progress so far) every second or quarter lease; stop the run when the
            # lease is lost or the token may no longer run the batch.
            interval = min(1.0, lease_seconds / 4)
            while not stop.wait(interval):
                try:
                    with db.write() as connection:
                        if not renew(connection, held, clock.now(), lease_seconds, latest["progress"]):
                            lost.set()
                    fresh = current_token(batch["token_id"], operation)
                    if fresh is None:
                        lost.set()
                    elif _settings(fresh) != _settings(token):
                        changed.set()  # an HTTP call would run under the new settings: so do the rest of the rows
                except Exception:
                    log.exception("bulk runner: renewing the lease failed")
                if lost.is_set() or changed.is_set() or self.stopping.is_set():
                    stop.set()

        self.running_stop = stop
        if self.stopping.is_set():
            stop.set()
        beating = threading.Thread(target=_in_context(self.app, heartbeat), name="relay-bulk-lease", daemon=True)
        beating.start()
        report, refused = None, None
        try:
            report = bulk_run(token, operation, batch, settings, on_progress, stop)
        except bulk.Refused as refusal:  # the token, its caps or its keys changed since it was queued
            plan = refusal.plan
            refused = plan.refusal.detail if plan.refusal is not None else messages.bulk_refused_on_resume(
                [f"{p['line']} ({p['field']}): {p['message']}" for p in plan.problems])
        except Exception:
            # Not retried forever by every runner in turn: the batch ends with an error, and the same POST runs it
            # again (its rows already credited replay).
            log.exception("bulk runner: a batch failed", extra={"fields": {"batch_id": held.batch_id}})
            refused = messages.BULK_FAILED
        finally:
            stop.set()
            beating.join()
            self.running_stop = None
        if lost.is_set():
            if current_token(batch["token_id"], operation) is None:
                self._finish(held, latest["progress"], report.row_dicts() if report else None,
                             messages.BULK_TOKEN_GONE.format(operation=operation))
            else:
                log.error("bulk batch taken over by another runner",
                          extra={"fields": {"message": messages.BULK_LEASE_LOST, "batch_id": held.batch_id}})
            return
        if refused is not None:
            self._finish(held, latest["progress"], report.row_dicts() if report else None, refused)
            return
        if report.stopped and (self.stopping.is_set() or changed.is_set()):
            # Queued again at once: the next claim (this runner's, or another's) reads the token anew, plans the rest
            # of the rows under its new settings, and replays the rows already done.
            with db.write() as connection:
                hand_back(connection, held)
            return
        self._finish(held, summary_of(report), report.row_dicts(), None)

    def _finish(self, held: Held, progress: dict, report, error: str | None):
        with db.write() as connection:
            finish(connection, held, clock.now(), progress, report, error)


def _in_context(app, func):
    def wrapped():
        with app.app_context():
            func()
    return wrapped


def _settings(token) -> dict:
    return {name: value for name, value in vars(token).items() if name != "last_used_at"}


def current_token(token_id: str, operation: str):
    """The batch's token as a call would see it now, or None once it may no longer run the batch."""
    with db.read_connection() as connection:
        row = connection.execute(select(Token.__table__).where(Token.__table__.c.id == token_id)).one_or_none()
    if row is None:
        return None
    token = SimpleNamespace(**row._mapping)
    now = clock.now()
    if token.revoked_at is not None or token.disabled or \
            (token.expires_at is not None and as_utc(token.expires_at) <= now) or \
            "bulk" not in token.operations or operation not in token.operations:
        return None
    return token


# --- relay/bulk.py, the shared core: how a batch's rows run and what is said about them ---------------------------

def bulk_run(token, operation: str, batch: dict, settings: dict, on_progress, stop):
    rows, problems = bulk.read_rows(batch["content"], operation, settings["RELAY_AMOUNT_DECIMALS"])
    return bulk.run(token, operation, rows, problems, batch["batch_key"], concurrency=settings["RELAY_BULK_CONCURRENCY"],
                    on_progress=on_progress, stop_event=stop, skip_invalid=batch["skip_invalid"])


def progress_of(counts: dict, started: float) -> dict:
    counts = dict(counts)
    done = sum(counts.values())
    elapsed = time.monotonic() - started
    return {"done": done, "counts": counts, "rows_per_second": round(done / elapsed, 1) if elapsed > 0 else None}


def summary_of(report) -> dict:
    counts = {name: count for name, count in report.counts.items() if count}
    done = sum(counts.values())
    return {"done": done, "counts": counts,
            "rows_per_second": round(done / report.seconds, 1) if report.seconds > 0 else None}


def report_csv(batch: dict, rows: list[dict]) -> str:
    """The report as bulk.Report.write_csv writes it for the CLI: one row per input line, spreadsheet-safe."""
    report = bulk.Report(batch["operation"], batch["batch_key"],
                         rows=[bulk.ReportRow(**{name: row.get(name) for name in bulk.REPORT_COLUMNS}) for row in rows])
    stream = io.StringIO()
    report.write_csv(stream)
    return stream.getvalue()


def plan_json(plan) -> dict:
    """The answer of a dry run (schemas/bulk-plan.json)."""
    return {"dry_run": True, "operation": plan.op, "batch_id": plan.batch_id, "rows": len(plan.rows),
            "problems": [messages.bulk_row_error(p["line"], p["field"], p["message"]) for p in plan.problems],
            "invalid_lines": len(plan.invalid_lines), "to_send": plan.to_send, "to_replay": plan.to_replay,
            "in_flight": plan.in_flight, "total": plan.total, "totals": plan.totals,
            "refusal": plan.refusal.body() if plan.refusal is not None else None, "remaining": plan.remaining}


# --- one runner per serving process ----------------------------------------------------------------------------------

_lock = threading.Lock()
_runners: list[Runner] = []


def start(app) -> Runner:
    """Start this app's runner (once). Called only where the app serves requests."""
    with _lock:
        runner = app.extensions.get("relay.bulk_runner")
        if runner is None:
            runner = app.extensions["relay.bulk_runner"] = Runner(app).start()
            _runners.append(runner)
        return runner


def wake(app):
    """A batch was queued: this process's runner, if it has one, need not wait for its next poll."""
    runner = app.extensions.get("relay.bulk_runner")
    if runner is not None:
        runner.wake.set()


def stop(app, timeout: float | None = None):
    runner = app.extensions.get("relay.bulk_runner")
    if runner is not None:
        runner.stop(timeout)


def stop_all(timeout: float | None = None):
    """Every runner of this process (gunicorn's worker_exit hook)."""
    for runner in list(_runners):
        runner.stop(timeout)
