"""Events out: the fan-out (each stored event becomes one delivery per matching hook) and the delivery worker (each
delivery POSTed to its hook's target, at least once, retried with backoff until a 2xx or 24 hours).

Why a database queue and leases, as bulk batches have (batches.py): the relay runs as several gunicorn workers on
one or more machines, any of which may die mid-delivery. A delivery is a row of `deliveries`; a worker claims it by
taking the next lease (a fencing counter) until `lease_until`, POSTs, and records the answer only while it still
holds that lease. A worker killed mid-POST never records; once its lease runs out another worker claims the delivery
and POSTs again: at least once, which is why the event id is in the body and in X-Relay-Event-Id. On PostgreSQL both
the fan-out and the claim are SELECT ... FOR UPDATE SKIP LOCKED, so two processes never take the same event or
delivery at once; on SQLite their write transactions (BEGIN IMMEDIATE) serialise them. The lease is longer than the
whole POST may take (RELAY_HOOKS_TIMEOUT, cut by the watchdog), so a live worker never loses a delivery it is sending.

Who receives what, decided at fan-out and checked again before each POST: the hook is active, the event's type is
one of its event_types ("*" for all, "paywall.balance.*" for a family), its filter.user (if any) is the event's user,
the hook's token is active with the `events` operation, and a token with a user pattern covers the event's user (a
pattern-limited token never receives user-less events). An event is fanned out to the hooks that exist when it is
stored, not to hooks made later.

Only serving processes run the worker (gunicorn workers, `paywalls-relay run`, `dev-stack`), as for bulk batches.
"""

import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from urllib.parse import quote

from prometheus_client import Counter
from sqlalchemy import and_, func, or_, select, text, update

from . import __version__, clock, db, events, hooks, messages, targets, tokens
from .models import Delivery, DeliveryAttempt, Event, Hook, Token, as_utc

log = logging.getLogger("relay.deliveries")

EVENTS, HOOKS, DELIVERIES, ATTEMPTS, TOKENS = (Event.__table__, Hook.__table__, Delivery.__table__,
                                                DeliveryAttempt.__table__, Token.__table__)
# Seconds to wait after the 1st, 2nd, ... failed attempt: a receiver's short hiccup costs seconds, a long outage is
# tried hourly; after GIVE_UP from the delivery's creation it is failed.
BACKOFF = (1, 5, 30, 120, 600, 1800, 3600)
JITTER = 0.2  # each wait is stretched or shrunk by up to 20%, so targets that failed together are not retried together
GIVE_UP = timedelta(hours=24)
POLL_SECONDS = 1.0  # an idle worker looks for work this often (an event stored in this process wakes it)
# A woken worker waits this long before it looks, so one pass fans out every event stored meanwhile. Woken at once
# for each event, it ran four reads and a write transaction per deposit (on SQLite a disk flush, under the lock every
# deposit queues on): a third of a busy relay's CPU, most of it with no hook at all (bench/profile-*.txt).
COALESCE_SECONDS = 0.5
FAN_OUT_BATCH = 200
CANDIDATES_PER_SLOT = 8  # due deliveries read per free sender, to find ones of different hooks
USER_AGENT = f"paywalls-relay/{__version__} (hooks)"
DELIVERED = Counter("relay_hook_deliveries_total", "POSTs to hook targets, by result", ["result"])


@dataclass(frozen=True)
class Held:
    """The lease a worker holds on a delivery: only with it may the worker record the delivery's outcome."""
    delivery_id: int
    lease: int


def _skip_locked(query, connection):
    return query.with_for_update(skip_locked=True) if connection.dialect.name == "postgresql" else query


# Written as the partial index ix_events_pending_fanout says it: `fanned_out IS false` (PostgreSQL) or `= 0` (SQLite)
# is not matched to that index, and every idle poll scanned the whole events table, which grows with every deposit.
NOT_FANNED_OUT = text("NOT events.fanned_out")


# --- who receives what -------------------------------------------------------------------------------------------

def type_matches(event_types: list, event_type: str) -> bool:
    for wanted in event_types:
        if wanted == "*" or wanted == event_type or \
                (wanted.endswith(".*") and event_type.startswith(wanted[:-1])):
            return True
    return False


def token_receives(token, user: str | None, now: datetime) -> str | None:
    """None when the token may receive an event of this user now; else why not (the delivery log's words)."""
    if token is None or token.revoked_at is not None or token.disabled or \
            (token.expires_at is not None and as_utc(token.expires_at) <= now) or "events" not in token.operations:
        return messages.DELIVERY_TOKEN_UNUSABLE
    if token.user_pattern and (user is None or not tokens.user_allowed(token, user)):
        return messages.DELIVERY_USER_NOT_ALLOWED
    return None


def hook_wants(hook, event) -> bool:
    return type_matches(hook.event_types, event.type) and \
        (hook.filter_user is None or hook.filter_user == event.user) and \
        as_utc(hook.created_at) <= as_utc(event.received_at)


# --- fan-out -------------------------------------------------------------------------------------------------------

def unfanned(limit: int):
    """The oldest events not fanned out yet, through the partial index, which is ordered by received_at alone: cheap
    however many events are stored (ordered by id too, PostgreSQL walked ix_events_received from the oldest event)."""
    return select(EVENTS.c.id, EVENTS.c.type, EVENTS.c.user, EVENTS.c.received_at).where(NOT_FANNED_OUT) \
        .order_by(EVENTS.c.received_at).limit(limit)


def fan_out(connection, now: datetime, limit: int = FAN_OUT_BATCH) -> int:
    """Turn up to `limit` stored events not fanned out yet into deliveries, and mark them fanned out, in the caller's
    transaction. The number of events handled."""
    events = connection.execute(_skip_locked(unfanned(limit), connection)).all()
    if not events:
        return 0
    active = connection.execute(select(HOOKS.c.id, HOOKS.c.token_id, HOOKS.c.event_types, HOOKS.c.filter_user,
                                       HOOKS.c.created_at).where(HOOKS.c.deleted_at.is_(None))).all()
    owners = {hook.token_id for hook in active}
    token_rows = connection.execute(select(TOKENS).where(TOKENS.c.id.in_(owners))).all() if owners else []
    by_id = {row.id: SimpleNamespace(**row._mapping) for row in token_rows}
    rows = []
    for event in events:
        for hook in active:
            if hook_wants(hook, event) and token_receives(by_id.get(hook.token_id), event.user, now) is None:
                rows.append({"hook_id": hook.id, "event_id": event.id, "state": "pending", "attempts": 0,
                             "next_attempt_at": now, "lease": 0, "created_at": now})
    if rows:
        # The unique (hook, event) pair makes a second fan-out of the same event (a crash between insert and mark,
        # on SQLite) deliver nothing twice.
        connection.execute(_insert_ignore(connection), rows)
    connection.execute(update(EVENTS).where(EVENTS.c.id.in_([event.id for event in events])).values(fanned_out=True))
    return len(events)


def _insert_ignore(connection):
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(DELIVERIES).on_conflict_do_nothing(index_elements=["hook_id", "event_id"])


# --- the lease ---------------------------------------------------------------------------------------------------

def _due(now: datetime):
    return and_(DELIVERIES.c.state == "pending", DELIVERIES.c.next_attempt_at <= now,
                or_(DELIVERIES.c.lease_until.is_(None), DELIVERIES.c.lease_until < now))


def claim(connection, owner: str, now: datetime, lease_seconds: float, limit: int) -> list[Held]:
    """Take up to `limit` due deliveries: pending, due, and not leased (or leased by a worker that died), at most one
    per hook, and none of a hook with a delivery being sent: a slow or failing target holds one sender, not all of
    them, so one broken workflow does not delay every other's events (and a hook's events go out one at a time)."""
    busy = DELIVERIES.alias("busy")
    sending = select(busy.c.hook_id).where(busy.c.state == "pending", busy.c.lease_until >= now)
    rows = connection.execute(_skip_locked(
        select(DELIVERIES.c.id, DELIVERIES.c.lease, DELIVERIES.c.hook_id)
        .where(_due(now), DELIVERIES.c.hook_id.not_in(sending))
        .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id).limit(limit * CANDIDATES_PER_SLOT), connection)).all()
    held, hooks_taken = [], set()
    for row in rows:
        if len(held) == limit:
            break
        if row.hook_id in hooks_taken:
            continue
        taken = connection.execute(
            update(DELIVERIES).where(DELIVERIES.c.id == row.id, DELIVERIES.c.lease == row.lease)
            .values(lease=row.lease + 1, lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds)))
        if taken.rowcount == 1:
            held.append(Held(row.id, row.lease + 1))
            hooks_taken.add(row.hook_id)
    return held


def _fenced(held: Held):
    return update(DELIVERIES).where(DELIVERIES.c.id == held.delivery_id, DELIVERIES.c.lease == held.lease,
                                    DELIVERIES.c.state == "pending")


def backoff(attempts: int, rng=random) -> float:
    """Seconds before the next attempt, after `attempts` failed ones (1 for the first)."""
    base = BACKOFF[min(attempts, len(BACKOFF)) - 1]
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


def record(connection, held: Held, delivery, now: datetime, answer: targets.Answer, duration_ms: int | None,
           rng=random) -> str:
    """Write one attempt to the delivery log and the delivery's new state (only while the lease is held); the state."""
    attempt = delivery.attempts + 1
    connection.execute(ATTEMPTS.insert().values(
        delivery_id=delivery.id, hook_id=delivery.hook_id, event_id=delivery.event_id, attempt=attempt, at=now,
        status=answer.status, error=answer.error, duration_ms=duration_ms))
    common = {"attempts": attempt, "last_status": answer.status, "last_error": answer.error, "lease_until": None,
              "lease_owner": None}
    if answer.status is not None and 200 <= answer.status < 300:
        state, values = "delivered", {"state": "delivered", "delivered_at": now, "last_error": None}
    elif answer.status == 410:
        state, values = "failed", {"state": "failed", "last_error": messages.DELIVERY_HOOK_GONE}
    else:
        next_at = now + timedelta(seconds=backoff(attempt, rng))
        if next_at - as_utc(delivery.created_at) > GIVE_UP:
            state, values = "failed", {"state": "failed", "last_error": f"{messages.DELIVERY_GAVE_UP} "
                                                                       f"(last: {_last(answer)})"}
        else:
            state, values = "pending", {"next_attempt_at": next_at}
    if connection.execute(_fenced(held).values(**{**common, **values})).rowcount != 1:
        return "lost"  # another worker took the delivery over (or the hook was deleted meanwhile): its log stays
    if answer.status == 410:
        hooks.delete(connection, delivery.hook_id, "gone", now, messages.DELIVERY_HOOK_GONE)
    return state


def _last(answer: targets.Answer) -> str:
    return f"HTTP {answer.status}" if answer.status is not None else (answer.error or "no answer")


def cancel(connection, held: Held, why: str) -> bool:
    return connection.execute(_fenced(held).values(state="cancelled", last_error=why, lease_until=None,
                                                   lease_owner=None)).rowcount == 1


def deliver(held: Held, settings: dict, resolver=None) -> str:
    """POST one claimed delivery and record the outcome. Needs an app context. The resulting state."""
    with db.read() as session:
        delivery = session.execute(select(DELIVERIES).where(DELIVERIES.c.id == held.delivery_id)).one()
        hook = session.execute(select(HOOKS).where(HOOKS.c.id == delivery.hook_id)).one()
        event = session.execute(select(EVENTS).where(EVENTS.c.id == delivery.event_id)).one_or_none()
        token_row = session.execute(select(TOKENS).where(TOKENS.c.id == hook.token_id)).one_or_none()
    now = clock.now()
    token = SimpleNamespace(**token_row._mapping) if token_row is not None else None
    why = messages.DELIVERY_HOOK_DELETED if hook.deleted_at is not None or event is None else \
        token_receives(token, event.user, now)
    if why is not None:  # things changed since the fan-out: nothing is sent
        with db.write() as connection:
            cancel(connection, held, why)
        DELIVERED.labels("cancelled").inc()
        return "cancelled"
    production = settings["RELAY_ENV"] == "production"
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "X-Relay-Event-Id": header_value(event.id),
               "X-Relay-Event-Type": header_value(event.type), "X-Relay-Hook-Id": hook.id,
               "X-Relay-Delivery-Attempt": str(delivery.attempts + 1)}
    started = time.monotonic()
    try:
        target = targets.parse(hook.target_url, production)
    except targets.Refused as refusal:  # a hook made on a development relay now served as production
        answer = targets.Answer(None, str(refusal))
    else:
        answer = targets.post(target, event.payload.encode("utf-8"), headers, production,
                              settings["RELAY_HOOKS_TIMEOUT"], resolver)
    duration_ms = int((time.monotonic() - started) * 1000)
    with db.write() as connection:
        state = record(connection, held, delivery, clock.now(), answer, duration_ms)
    DELIVERED.labels("2xx" if state == "delivered" else "410" if answer.status == 410 else "failed").inc()
    # The target's host only: its path and query string may carry a secret (a Zapier or n8n hook URL does).
    log.info("hook delivery", extra={"fields": {
        "message": "hook delivery", "hook_id": hook.id, "event_id": event.id, "event_type": event.type,
        "attempt": delivery.attempts + 1, "status": answer.status, "error": answer.error, "state": state,
        "target_host": _host(hook.target_url), "duration_ms": duration_ms}})
    return state


def header_value(text: str) -> str:
    """An event's id or type as a header value: as it is when it is printable ASCII (every id and type Paywalls and
    the relay make), else percent-encoded. An id is whatever a signed delivery said, and a line break in a header
    would be refused by the HTTP client on every retry (or, by a laxer one, start a header of its own)."""
    return text if text.isascii() and text.isprintable() and text else quote(text, safe="")


def _host(url: str) -> str | None:
    try:
        return targets.parse(url, production=False).host
    except targets.Refused:
        return None


def pending_work(connection, now: datetime) -> tuple[bool, datetime | None]:
    """(events wait to be fanned out, when the next pending delivery is due): two cheap reads, so an idle worker
    never takes the write lock (on SQLite, the one every deposit queues on)."""
    waiting = connection.execute(unfanned(1)).first()
    due = connection.execute(select(func.min(DELIVERIES.c.next_attempt_at)).where(
        DELIVERIES.c.state == "pending", or_(DELIVERIES.c.lease_until.is_(None), DELIVERIES.c.lease_until < now))
    ).scalar()
    return waiting is not None, None if due is None else as_utc(due)


def purge(connection, older_than: datetime) -> int:
    """Forget finished deliveries (delivered, failed, cancelled) made before `older_than`, and their delivery log:
    `idempotency purge`, with the same retention. Pending ones are never touched. The number of deliveries removed."""
    finished = select(DELIVERIES.c.id).where(DELIVERIES.c.state != "pending", DELIVERIES.c.created_at < older_than)
    connection.execute(ATTEMPTS.delete().where(ATTEMPTS.c.delivery_id.in_(finished)))
    return connection.execute(DELIVERIES.delete().where(DELIVERIES.c.state != "pending",
                                                        DELIVERIES.c.created_at < older_than)).rowcount


# --- the worker ----------------------------------------------------------------------------------------------------

class Worker:
    """One per serving process: a thread that fans events out and hands due deliveries to a few sender threads."""

    def __init__(self, app, poll: float = POLL_SECONDS, resolver=None, coalesce: float = COALESCE_SECONDS):
        self.app = app
        self.poll = poll
        self.coalesce = coalesce
        self.resolver = resolver  # tests only: a stand-in for DNS
        self.settings = app.config["RELAY"]
        self.concurrency = self.settings["RELAY_HOOKS_CONCURRENCY"]
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # events.store() sets it when an event is stored in this process; a sender finishing sets it too.
        self.wake = events.wake
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self._in_flight = 0
        self._lock = threading.Lock()
        self._senders: list[threading.Thread] = []

    def start(self) -> "Worker":
        self.thread = threading.Thread(target=self.run_forever, name="relay-hooks-worker", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float | None = None):
        """Claim nothing more; the POSTs in flight finish (each within RELAY_HOOKS_TIMEOUT)."""
        self.stopping.set()
        self.wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.thread is not None:
            self.thread.join(timeout)
        for sender in list(self._senders):
            sender.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def run_forever(self):
        while not self.stopping.is_set():
            try:
                wait = self.run_once()
            except Exception:  # a database blip must not end the thread: the next poll tries again
                log.exception("hooks worker: fanning out or claiming deliveries failed")
                wait = self.poll
            if wait > 0:
                woken = self.wake.wait(wait)
                if woken and self.coalesce:
                    self.stopping.wait(self.coalesce)
                self.wake.clear()

    def run_once(self) -> float:
        """Fan out, claim what is due and start sending it; how long to wait before looking again."""
        with self.app.app_context():
            now = clock.now()
            with db.read_connection() as connection:
                unfanned, due = pending_work(connection, now)
            backlog = False
            if unfanned:
                with db.write() as connection:
                    handled = fan_out(connection, clock.now())
                with db.read_connection() as connection:
                    unfanned, due = pending_work(connection, clock.now())
                # Only a full batch goes on at once. Events stored during the pass woke this worker already: they
                # wait out COALESCE_SECONDS with the next ones, else under steady load the worker looped from pass
                # to pass, a few events each (a tenth of the relay's CPU on PostgreSQL, bench/cpu-per-deposit.md).
                backlog = unfanned and handled >= FAN_OUT_BATCH
            if due is not None and due <= clock.now():
                free = self.concurrency - self._in_flight
                if free <= 0:
                    return self.poll  # a sender finishing wakes the loop at once
                with db.write() as connection:
                    held = claim(connection, self.owner, clock.now(), self.settings["RELAY_HOOKS_LEASE"], free)
                for one in held:
                    self._send(one)
                if held or backlog:
                    return 0
                return self.poll  # due, but of hooks being sent to (a sender finishing wakes the loop) or claimed elsewhere
            return 0 if backlog else self._idle(due)

    def _idle(self, due: datetime | None) -> float:
        if due is None:
            return self.poll
        return max(0.0, min(self.poll, (due - clock.now()).total_seconds()))

    def _send(self, held: Held):
        with self._lock:
            self._in_flight += 1

        def run():
            try:
                with self.app.app_context():
                    deliver(held, self.settings, self.resolver)
            except Exception:
                log.exception("hooks worker: a delivery failed", extra={"fields": {
                    "message": "hooks worker: a delivery failed", "delivery_id": held.delivery_id}})
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._senders = [t for t in self._senders if t is not threading.current_thread()]
                self.wake.set()  # a slot is free

        sender = threading.Thread(target=run, name="relay-hooks-sender", daemon=True)
        with self._lock:
            self._senders.append(sender)
        sender.start()


# --- one worker per serving process ----------------------------------------------------------------------------------

_lock = threading.Lock()
_workers: list[Worker] = []


def start(app) -> Worker:
    """Start this app's delivery worker (once). Called only where the app serves requests."""
    with _lock:
        worker = app.extensions.get("relay.hooks_worker")
        if worker is None:
            worker = app.extensions["relay.hooks_worker"] = Worker(app).start()
            _workers.append(worker)
        return worker


def wake():
    """An event was stored (and committed): the workers of this process need not wait for their next poll."""
    events.wake.set()


def stop(app, timeout: float | None = None):
    worker = app.extensions.get("relay.hooks_worker")
    if worker is not None:
        worker.stop(timeout)


def stop_all(timeout: float | None = None):
    """Every worker of this process (gunicorn's worker_exit hook)."""
    for worker in list(_workers):
        worker.stop(timeout)
