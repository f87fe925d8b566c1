"""A deposit or a charge, as a state machine. Read top to bottom: the states, the one outcome table, then the
three phases of a call, each with its own transaction: claim the event, call Paywalls, record the outcome. A dry run
(rehearse) does phase 1's reads only and stops there: it claims nothing, reserves nothing and calls nobody.

An event's key row is in one of four states:

    (new) ──claim──► in_flight ──outcome──► done       final: every repeat gets the stored answer
                        ▲  │                open       nothing applied: the next request calls Paywalls again
                        │  │                ambiguous  it may have applied: the next request, or
                        │  │                           `ledger resolve`, re-sends the same upstream key
                        └──┴── claim (open, ambiguous, or in_flight whose lease ran out)

Only the holder of the current lease may end an attempt (claims.end_attempt is fenced), and only the table
below decides what an outcome does: the key's next state, the ledger's outcome, what happens to the caps'
reservation, and what the caller is answered.
"""

import json
import logging
from dataclasses import dataclass

from flask import current_app

from . import amounts, caps, claims, clock, db, events, keys, ledger, messages, metrics, tokens
from .claims import Claim, Replay

log = logging.getLogger("relay.money")

STATES = ("in_flight", "open", "ambiguous", "done")
PATHS = {"deposit": "/user/balance/deposit", "charge": "/user/charge"}
APPLIED = {"deposit": "credited", "charge": "charged"}


@dataclass(frozen=True)
class Transition:
    state: str            # the key's next state
    ledger: str           # the ledger row's outcome ("applied": credited or charged)
    reservation: str      # settle | release | keep
    answer: str           # "upstream": Paywalls' own body; otherwise the Problem to answer with
    next_generation: bool = False  # a new upstream key for the next attempt (nothing was applied)
    # When an earlier attempt of the event may have landed, this answer to the re-sent call proves nothing about
    # it: the event stays ambiguous, with its reservation, until Paywalls confirms it (None: no difference).
    after_maybe_landed: str | None = None


# The one place that maps a classified upstream outcome to what it does.
OUTCOMES = {
    "applied":     Transition("done",      "applied",   "settle",  "upstream"),
    # Nothing was charged: answer as Paywalls did; a later retry (after a top-up) is a new attempt. It settles a
    # re-sent call too: it is Paywalls' own answer for this upstream key, which it would have answered with the
    # earlier success had that attempt charged.
    "declined":    Transition("open",      "declined",  "release", "upstream", next_generation=True),
    "rejected":    Transition("done",      "rejected",  "release", "rejected", after_maybe_landed="ambiguous"),
    "not_applied": Transition("open",      "failed",    "release", "not_applied", after_maybe_landed="ambiguous"),
    "misdirected": Transition("open",      "failed",    "release", "misdirected", after_maybe_landed="ambiguous"),
    "ambiguous":   Transition("ambiguous", "ambiguous", "keep",    "ambiguous"),
}


def transition_for(result: str, maybe_landed: bool) -> tuple[str, Transition]:
    transition = OUTCOMES[result]
    if maybe_landed and transition.after_maybe_landed:
        result = transition.after_maybe_landed
        transition = OUTCOMES[result]
    return result, transition

# The upstream client's transport outcomes that need no look at the body.
_BY_KIND = {"rejected": "rejected", "not_applied": "not_applied", "ambiguous": "ambiguous",
            "redirected": "misdirected"}
MAX_BALANCE_TEXT = 64  # the ledger's balance_formatted column


def classify(op: str, outcome) -> tuple[str, str]:
    """(a key of OUTCOMES, why). Only a 2xx whose body has the documented shape is a success."""
    if outcome.kind != "ok":
        return _BY_KIND[outcome.kind], outcome.message
    body = outcome.body
    if op == "deposit":
        balance = body.get("balanceFormatted")
        if isinstance(balance, str) and 0 < len(balance) <= MAX_BALANCE_TEXT:
            return "applied", ""
    elif body.get("success") is True:
        return "applied", ""
    elif body.get("success") is False:  # only the boolean: "false" as a string is not a documented answer
        return "declined", ""
    return "ambiguous", messages.UPSTREAM_ODD_SHAPE.format(status=outcome.status)


def answer(transition: Transition, outcome, why: str) -> tuple[int, str]:
    if transition.answer == "upstream":
        return outcome.status, json.dumps(outcome.body)
    problem = {
        "rejected": lambda: messages.upstream_rejected(outcome.status, outcome.message),
        "not_applied": lambda: messages.upstream_unavailable(outcome.message),
        "misdirected": lambda: messages.upstream_misdirected(outcome.status),
        "ambiguous": lambda: messages.upstream_ambiguous(504 if outcome.timed_out else 502, why),
    }[transition.answer]()
    return problem.status, json.dumps(problem.body())


@dataclass(frozen=True)
class Identity:
    """Which event a request is, and which key its answer names."""
    fingerprint: str
    event_key: str
    client_key: str | None

    @property
    def shown_key(self) -> str:  # the Idempotency-Key response header: the client's own key, or the event key
        return self.client_key or self.event_key


def identify(token, op: str, body: dict, client_key: str | None) -> Identity:
    fingerprint = keys.fingerprint(op, body)
    return Identity(fingerprint, keys.event_key(token, op, body, fingerprint), client_key)


@dataclass
class Answer:
    status: int
    text: str
    key: str  # Identity.shown_key
    replayed: bool


def settings() -> dict:
    return current_app.config["RELAY"]


def upstream():
    return current_app.extensions["relay.upstream"]


def perform(token, op: str, body: dict, identity: Identity, request_id: str | None) -> Answer:
    # Phase 1: claim the event and reserve the caps, in one transaction (or replay the stored answer).
    claimed = claim_or_wait(token, op, body, identity.event_key, identity.client_key, identity.fingerprint, request_id)
    if isinstance(claimed, Replay):
        return Answer(claimed.status, claimed.body, identity.shown_key, replayed=True)

    # Phase 2: the call to Paywalls, under its hard deadline. No transaction is open while it runs.
    outcome = upstream().call("POST", PATHS[op], json=body, idempotency_key=claimed.upstream_key)

    # Phase 3: record the outcome, settle or release the caps, in one transaction (retried if the database fails).
    status, text = record(token, op, body, claimed, outcome, identity.client_key, request_id)
    return Answer(status, text, identity.shown_key, replayed=False)


# --- a dry run: phase 1 read only; no claim, no reservation, no call ----------------------------------------------

WOULD = {"deposit": "credit", "charge": "charge"}


def rehearse(token, op: str, body: dict, identity: Identity, request_id: str | None) -> dict:
    """What perform() would do, found with reads only: the same refusals (422, 409 after the same wait, 403 over a
    cap), or what it would do and what would remain of the caps. The ledger records it as dry_run."""
    config, time = settings(), clock.current()
    micros = amounts.to_micros(body["amount"])
    deadline = time.monotonic() + config["RELAY_INFLIGHT_WAIT"]
    while True:
        now = time.now()
        try:
            with db.read() as session:
                plan = claims.peek(session, token, identity.event_key, identity.client_key, identity.fingerprint,
                                   micros, now, config["RELAY_LOCK_TIMEOUT"])
                remaining = caps.check(session, token, plan.reserve_micros, plan.reserve_at or now)
            break
        except claims.InFlight:
            # As a real call would: wait for the call in flight to end, then say what this one would do.
            if time.monotonic() >= deadline:
                raise messages.in_flight(retry_after=1) from None
            time.sleep(0.05)
    with db.write() as connection:
        tokens.touch(connection, token, now)
        ledger.record(connection, token, op, "dry_run", created_at=now, recorded_at=now,
                      **_entry(body, identity.event_key, identity.client_key, None, request_id=request_id))
    would = "replay" if plan.would == "replay" else WOULD[op]
    return {"dry_run": True, "would": would, "idempotency_key": identity.shown_key, "remaining": remaining,
            "request": body}


def claim_or_wait(token, op: str, body: dict, event_key: str, client_key: str | None, fingerprint: str,
                  request_id: str | None) -> Claim | Replay:
    """Claim the event; while another claim holds it, wait briefly for its answer, then 409."""
    config, time = settings(), clock.current()
    micros = amounts.to_micros(body["amount"])
    request_body = json.dumps(body, sort_keys=True, separators=(",", ":"))
    deadline = time.monotonic() + config["RELAY_INFLIGHT_WAIT"]
    waiting = False
    try:
        while True:
            now = time.now()
            try:
                with db.write() as connection:
                    result = claims.claim(connection, token, op, event_key, client_key, fingerprint, request_body,
                                          micros, now, config["RELAY_LOCK_TIMEOUT"])
                    tokens.touch(connection, token, now)
                    if isinstance(result, Replay):
                        ledger.record(connection, token, op, "replayed", created_at=now, recorded_at=now,
                                      **_entry(body, event_key, client_key, None, request_id=request_id))
                        if not result.new_binding:
                            db.without_flush(connection)  # the answer is stored already; this row is a note
                    return result
            except claims.InFlight:
                if time.monotonic() >= deadline:
                    raise messages.in_flight(retry_after=1) from None
                if not waiting:
                    waiting = True
                    metrics.CLAIMS_WAITING.inc()
                time.sleep(0.05)
    finally:
        if waiting:
            metrics.CLAIMS_WAITING.dec()


def record(token, op: str, body: dict, claimed: Claim, outcome, client_key: str | None,
           request_id: str | None) -> tuple[int, str]:
    classified, why = classify(op, outcome)
    result, transition = transition_for(classified, claimed.maybe_landed)
    if result != classified:
        why = messages.UPSTREAM_UNCONFIRMED.format(message=(why or f"HTTP {outcome.status}").rstrip("."))
    status, text = answer(transition, outcome, why)
    ledger_outcome = APPLIED[op] if transition.ledger == "applied" else transition.ledger
    balance = outcome.body.get("balanceFormatted") if result == "applied" and op == "deposit" else None
    entry = _entry(body, claimed.key, client_key, claimed.upstream_key, upstream_status=outcome.status,
                   latency_ms=outcome.latency_ms, request_id=request_id, balance_formatted=balance)
    time = clock.current()
    deadline, pause = time.monotonic() + settings()["RELAY_RECORD_BUDGET"], 0.05
    while True:
        now = time.now()
        try:
            with db.write() as connection:
                claims.end_attempt(connection, claimed, transition.state,
                                   keep_reservation=transition.reservation == "keep",
                                   next_generation=transition.next_generation,
                                   status=status if transition.state == "done" else None,
                                   body=text if transition.state == "done" else None, now=now)
                # The money counts when it was reserved (caps.py), and the ledger dates it then.
                ledger_id = ledger.record(connection, token, op, ledger_outcome, created_at=claimed.reserved_at,
                                          recorded_at=now, **entry)
                # Its event (a credit, a charge, a decline, an ambiguous call) in the same transaction: there is
                # one exactly when the row is.
                made = events.from_ledger(connection, settings(), token, op, ledger_outcome, ledger_id, entry,
                                          outcome.body, now)
                # The token's usage rows last: every call on the token needs them, so they stay locked only
                # until COMMIT.
                if transition.reservation == "settle":
                    caps.settle(connection, claimed.reserved_token_id, claimed.reserved_micros, claimed.reserved_periods)
                elif transition.reservation == "release":
                    caps.release(connection, claimed.reserved_token_id, claimed.reserved_micros, claimed.reserved_periods)
            if made:
                events.wake.set()  # committed now: the delivery worker can see it
            return status, text
        except claims.LeaseLost:
            # A newer claim owns the event (this attempt outlived its lease): its outcome is the one recorded.
            log.error("attempt outlived its lease; its outcome was not recorded",
                      extra={"fields": {"message": "lease lost", "idempotency_key": claimed.key,
                                        "outcome": result, "request_id": request_id}})
            break
        except db.FAILURES:
            if time.monotonic() + pause >= deadline:
                # The key stays in flight with its reservation: after the lease, a retry or `ledger resolve`
                # re-sends the same upstream key and records what Paywalls answers.
                log.error("could not record Paywalls' answer; the key stays in flight for a retry or ledger resolve",
                          exc_info=True, extra={"fields": {"message": "record failed", "idempotency_key": claimed.key,
                                                           "outcome": result, "request_id": request_id}})
                break
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
    problem = messages.outcome_unrecorded()
    return problem.status, json.dumps(problem.body())


def resolve(limit: int = 1000) -> dict:
    """Complete every stranded key: re-send it with its own upstream key and record what Paywalls answers.
    For `paywalls-relay ledger resolve`, run by the operator or on a schedule."""
    config, time = settings(), clock.current()
    counts = {name: 0 for name in OUTCOMES} | {"unresolvable": 0, "skipped": 0}
    with db.read() as session:
        stranded = claims.stranded(session, time.now(), config["RELAY_LOCK_TIMEOUT"], limit)
    for row in stranded:
        with db.write() as connection:
            taken = claims.take_over_stranded(connection, row.id, time.now(), config["RELAY_LOCK_TIMEOUT"])
            token = ledger.token_for(connection, taken[0].reserved_token_id) if taken else None
            if taken is not None and (taken[1].request_body is None or token is None):
                # Stored before request bodies were kept: nothing to re-send. It stays ambiguous for a person.
                claims.end_attempt(connection, taken[0], "ambiguous", keep_reservation=True, now=time.now())
                counts["unresolvable"] += 1
                continue
        if taken is None:
            counts["skipped"] += 1
            continue
        claimed, row = taken
        body = json.loads(row.request_body)
        outcome = upstream().call("POST", PATHS[row.operation], json=body, idempotency_key=claimed.upstream_key)
        result, _ = transition_for(classify(row.operation, outcome)[0], claimed.maybe_landed)
        record(token, row.operation, body, claimed, outcome, None, "ledger-resolve")
        counts[result] += 1
    return counts


def _entry(body: dict, event_key: str, client_key: str | None, upstream_key: str | None, **more) -> dict:
    return {"user": body["user"], "amount": body["amount"], "metadata_": body.get("metadata"),
            "idempotency_key": event_key, "client_key": client_key, "upstream_key": upstream_key, **more}
