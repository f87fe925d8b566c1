"""Issue 11, attacked by property: a Hypothesis state machine drives the money path (relay/money.py) through
random interleavings of what broke exactly-once by hand (tests/test_exactly_once.py), on SQLite and PostgreSQL.

What it does (the rules). Every run starts with two tools (tokens) sharing a namespace; more tokens come, in it
or on their own, with or without a daily cap, deduping on the default fields or on user and reference. Deposits
and charges go out over a small pool of users, amounts and references (so events collide), without an
Idempotency-Key, with the derived one or with a client key from a small pool (so one key meets several bodies),
each maybe behind an upstream fault: one that lands and loses the answer (a dropped connection, odd 2xx shapes,
408/409, a trickled answer cut off at the budget) or one that applies nothing (500, 400, 401, 429, a 302); maybe
with the database failing while the outcome is recorded; maybe followed by the tool's immediate retry, with a
fault of its own. Earlier requests are repeated exactly, half a minute later, or through another token. Tokens'
namespace and dedupe fields are edited; events are purged; a process dies after claiming (before or after its
call landed) and may come back to record long after; `ledger resolve` runs, maybe meeting a fault; the clock
passes the lease or moves to just before UTC midnight. On PostgreSQL the database also restarts (its server
kills the relay's connections) between steps and while Paywalls is being called.

What it asserts after every step:
1. Paywalls applies each event at most once: each upstream key at most once, and at most one applied call per
   stored event (its row id and nonce: one row's lifetime). And, by a model independent of the relay's own key
   derivation: two calls Paywalls applied for one (operation, scope, dedupe field values) have a purge of that
   event between them, and one client key (in one scope) never sends two such events to Paywalls.
2. The ledger agrees with Paywalls: every upstream key has at most one `credited` (`charged`) row, every such
   row's key is one Paywalls applied, and every call Paywalls applied is in the ledger or its event is still
   unresolved (in flight or ambiguous: a retry or `ledger resolve` will record it).
3. No cap is exceeded: settled + reserved <= the cap, in every daily row of every capped token.
4. Settled usage equals the ledger: per token and day (and month), settled_micros is the sum of the token's
   `credited` and `charged` amounts dated in that period.
And no request is answered 500. Then, after quiescing (faults cleared, the clock past the lease, `ledger
resolve` until nothing is stranded), in teardown:
2'. the ledger's applied rows and Paywalls' applied calls are the same set of upstream keys;
5. no key is in flight, no key holds a reservation, and every usage row has nothing reserved.

The shortest failing examples the machine found are replayed, step by step, by the tests at the end.
"""

import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import requests
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, MultipleResults, RuleBasedStateMachine, consumes, initialize, invariant,
                                 multiple, rule, run_state_machine_as_test)
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

from conftest import auth, base_settings, manual_clock
from relay import caps as relay_caps, claims, db, keys, messages, migrate, money, tokens
from relay.app import create_app
from relay.models import ClientKey, IdempotencyKey, LedgerEntry, Usage, as_utc

SETTINGS = settings(max_examples=60, stateful_step_count=15, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
START = datetime(2026, 11, 30, 23, 59, 0, tzinfo=timezone.utc)  # a month's last minute: periods roll over early
LEASE = 30.0
RELAY = {"RELAY_UPSTREAM_RETRIES": 0, "RELAY_UPSTREAM_BUDGET": 0.5, "RELAY_READ_TIMEOUT": 0.4,
         "RELAY_RECORD_BUDGET": 0.2, "RELAY_LOCK_TIMEOUT": LEASE, "RELAY_INFLIGHT_WAIT": 0.2}
TABLES = ("idempotency_keys", "client_keys", "ledger", "usage", "tokens")
PATHS = {"deposit": "/v1/user/balance/deposit", "charge": "/v1/user/charge"}
APPLIED = {"deposit": ("deposits", "credited"), "charge": ("charges", "charged")}
DEFAULT, BY_REFERENCE = list(keys.DEFAULT_FIELDS), ["user", "metadata.reference"]
JSON_TYPE = {"Content-Type": "application/json"}
FAULTS = {
    "500": {"kind": "status", "status": 500},  # before applying
    "400": {"kind": "status", "status": 400},
    "401": {"kind": "status", "status": 401},
    "429": {"kind": "rate_limit", "retry_after": 1},
    "drop_after_credit": {"kind": "drop_after_credit"},
    "weird_2xx": {"kind": "respond", "status": 200, "apply": True, "body": '{"weird": 1}', "headers": JSON_TYPE},
    "object_balance_2xx": {"kind": "respond", "status": 200, "apply": True, "headers": JSON_TYPE,
                           "body": '{"balanceFormatted": {"x": 1}}'},
    "302": {"kind": "respond", "status": 302, "body": "", "headers": {"Location": "https://elsewhere.invalid/v1"}},
    "408": {"kind": "respond", "status": 408, "apply": True, "body": '{"error": "try again"}', "headers": JSON_TYPE},
    "409": {"kind": "respond", "status": 409, "apply": True, "body": '{"error": "conflict"}', "headers": JSON_TYPE},
    "trickle": {"kind": "trickle", "interval": 0.2},  # applied, then cut off at RELAY_UPSTREAM_BUDGET
}
EDITS = [{"namespace": "shared"}, {"namespace": None}, {"namespace": "other"},
         {"dedupe_on": BY_REFERENCE}, {"dedupe_on": DEFAULT}]


def make_body(user, amount, reference):
    return {"user": user, "amount": amount, "metadata": {"reference": reference}}


OPERATIONS = st.sampled_from(["deposit", "charge"])  # for processes that die (requests have a rule for each)
BODIES = st.builds(make_body, st.sampled_from(["u1", "u2"]), st.sampled_from(["10", "30"]),
                   st.sampled_from(["r1", "r2"]))
CLIENT_KEYS = st.sampled_from(["none", "derived", "k1", "k2"])
# No fault, or one of two kinds, then which: the kind decides what the relay must do.
LANDED_UNCONFIRMED = ["drop_after_credit", "weird_2xx", "object_balance_2xx", "408", "409", "trickle"]
NOT_APPLIED = ["500", "401", "429", "302", "400"]  # the sandbox answers these before applying anything
MAYBE_FAULT = st.none() | st.sampled_from(LANDED_UNCONFIRMED) | st.sampled_from(NOT_APPLIED)
MAYBE_RETRIED = st.none() | st.just("without a fault") | st.sampled_from(LANDED_UNCONFIRMED) \
    | st.sampled_from(NOT_APPLIED)
DAILY_CAPS = st.sampled_from([None, "25", "40"])
RECORD_FAILURES = st.just(0) | st.sampled_from([2, 3])  # RELAY_RECORD_BUDGET=0.2 survives 2, not 3


# --- the model ---------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Tok:
    id: str
    text: str
    namespace: str | None
    dedupe_on: list
    daily_cap_micros: int | None

    @property
    def scope(self) -> str:
        return f"ns:{self.namespace}" if self.namespace else self.id


def field_at(body, path):
    for segment in path.split("."):
        body = body.get(segment) if isinstance(body, dict) else None
    return body


def identity(tok: Tok, op: str, body: dict) -> tuple:
    """What makes two requests one event, by the contract (schemas/idempotency.md), not by relay/keys.py."""
    return op, tok.scope, tuple((path, repr(field_at(body, path))) for path in tok.dedupe_on)


@dataclass(frozen=True)
class Context:
    """Who is calling Paywalls right now: the model's event, and the client key the request carried."""
    identity: tuple
    scope: str
    client_key: str | None


@dataclass(eq=False)
class Sent:
    tok: Tok
    op: str
    body: dict
    client_key: str | None


@dataclass(eq=False)
class Dead:
    """A process that claimed an event and stopped; it may come back later and try to record."""
    token: object  # the token as that process read it
    op: str
    body: dict
    client_key: str | None
    claim: claims.Claim
    context: Context


def client_key_for(key: str, op: str, body: dict) -> str | None:
    return {"none": None, "derived": keys.derive_key(op, body)}.get(key, key)


# --- the environment: one app and one database per test, emptied between examples ----------------------------

class Env:
    def __init__(self, url: str, sandbox, monkeypatch):
        migrate.upgrade(url)
        self.app = create_app(base_settings(url, sandbox.url, **RELAY))
        self.app.testing = True
        self.sandbox, self.faults = sandbox, requests.Session()
        self.machine = None
        self.record_failures = 0
        self.restart_during_call = False
        self.admin = create_engine(db.make_engine(url).url, isolation_level="AUTOCOMMIT") \
            if url.startswith("postgresql") else None
        upstream = self.app.extensions["relay.upstream"]
        real_call, real_end = upstream.call, claims.end_attempt

        def watched_call(method, path, **kwargs):
            if self.machine is not None and kwargs.get("idempotency_key"):
                self.machine.saw_upstream_call(kwargs["idempotency_key"])
            if self.restart_during_call:  # the claim is committed; the record will meet the restarted database
                self.restart_during_call = False
                self.kill_connections()
            return real_call(method, path, **kwargs)

        def failing_end_attempt(*args, **kwargs):
            if self.record_failures > 0:
                self.record_failures -= 1
                raise OperationalError("UPDATE idempotency_keys", {}, Exception("server closed the connection"))
            return real_end(*args, **kwargs)

        upstream.call = watched_call
        monkeypatch.setattr(claims, "end_attempt", failing_end_attempt)

    def reset(self):
        with self.app.app_context(), db.write() as connection:
            for table in TABLES:  # a few rows each: far cheaper than TRUNCATE on PostgreSQL
                connection.execute(text(f"DELETE FROM {table}"))
        with self.sandbox.state.lock:
            self.sandbox.state.reset()

    def inject(self, fault: str | None, endpoint: str | None):
        if fault:
            spec = {**FAULTS[fault], "count": 1, **({"endpoint": endpoint} if endpoint else {})}
            url = self.sandbox.url.replace("/v1", "/_sandbox/faults")
            self.faults.post(url, json=spec, timeout=5).raise_for_status()

    def clear_faults(self):
        with self.sandbox.state.lock:
            self.sandbox.state.faults.clear()

    def kill_connections(self):
        """Terminate every connection of the relay's database (a failover, a restart) and wait until they are gone."""
        with self.admin.connect() as connection:
            others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            connection.execute(text(f"SELECT pg_terminate_backend(pid) {others}"))
            for _ in range(250):
                if not connection.execute(text(f"SELECT count(*) {others}")).scalar():
                    return
                connection.execute(text("SELECT pg_sleep(0.02)"))
        raise AssertionError("the relay's connections did not go away")

    def wait_until_ready(self, client):
        """The relay's readiness probe meets the restart first, as a load balancer's would. (About one pre-ping in
        forty on a killed psycopg connection raises instead of reconnecting: SQLAlchemy 2.1's do_ping resets
        autocommit on the dead connection. /readyz answers 503 then, and the pool recovers on the next checkout.)"""
        statuses = []
        while 200 not in statuses:
            assert len(statuses) < 5, f"the relay did not recover from a database restart: /readyz said {statuses}"
            statuses.append(client.get("/readyz").status_code)

    def stop(self):
        self.faults.close()
        self.app.extensions["relay.engine"].dispose()
        self.app.extensions["relay.reader"].dispose()
        if self.admin is not None:
            self.admin.dispose()


# --- the machine --------------------------------------------------------------------------------------------

class MoneyMachine(RuleBasedStateMachine):
    toks = Bundle("tokens")
    sent = Bundle("sent")
    dead = Bundle("dead")

    def __init__(self, env: Env):
        super().__init__()
        self.env, self.app = env, env.app
        env.reset()
        env.machine = self
        self.clock = manual_clock(self.app, START)
        self.client = self.app.test_client()
        self.context: Context | None = None
        self.tokens: list[Tok] = []
        self.first_sent: dict[str, tuple] = {}     # upstream key -> the model event that first sent it
        self.forgotten = Counter()                 # model event -> purges that deleted its stored row
        self.landed: dict[tuple, int] = {}         # model event -> forgotten[event] when Paywalls last applied it
        self.client_key_events = defaultdict(set)  # (scope, client key) -> model events it sent to Paywalls
        self.owners: dict[str, tuple] = {}         # upstream key -> (row id, nonce): the stored event sending it
        self.seen = {"deposits": 0, "charges": 0}  # how many of Paywalls' applied calls the model has checked
        self.problems: list[str] = []              # found while the relay was calling: raised by the invariant

    # -- rules --------------------------------------------------------------------------------------------------

    # Every run starts with two tools sharing a namespace (where tokens meet each other's events); more tokens,
    # in the namespace or on their own, come as it goes.
    @initialize(target=toks, first_cap=DAILY_CAPS, first_by_reference=st.booleans(), second_cap=DAILY_CAPS,
                second_by_reference=st.booleans())
    def two_tools_in_one_namespace(self, first_cap, first_by_reference, second_cap, second_by_reference):
        return multiple(self.create_token(True, first_cap, first_by_reference),
                        self.create_token(True, second_cap, second_by_reference))

    @rule(target=toks, shared=st.booleans(), daily_cap=DAILY_CAPS, by_reference=st.booleans())
    def create_token(self, shared, daily_cap, by_reference):
        spec = {"label": "t", "operations": list(tokens.OPERATIONS), "daily_cap": daily_cap,
                "namespace": "shared" if shared else None, "dedupe_on": BY_REFERENCE if by_reference else DEFAULT}
        rule = next((tok.dedupe_on for tok in self.tokens if shared and tok.namespace == "shared"), None)
        if rule is not None and set(rule) != set(spec["dedupe_on"]):
            # A token with another dedupe rule may not join the namespace (one event through two tools would be
            # two): the operator is refused, and creates it with the namespace's rule.
            with pytest.raises(messages.Problem) as refused, self.app.app_context(), db.transaction() as session:
                tokens.create(session, spec, now=self.clock.now())
            assert refused.value.name == "namespace-rule-differs", refused.value.name
            spec["dedupe_on"] = list(rule)
        with self.app.app_context(), db.transaction() as session:
            token, token_text = tokens.create(session, spec, now=self.clock.now())
            tok = Tok(token.id, token_text, token.namespace, list(token.dedupe_on), token.daily_cap_micros)
        self.tokens.append(tok)
        return tok

    # A call, and (as Zapier and n8n do on an error) maybe the tool's immediate retry, which meets its own fault.
    @rule(target=sent, tok=toks, body=BODIES, key=CLIENT_KEYS, fault=MAYBE_FAULT, record_failures=RECORD_FAILURES,
          retried=MAYBE_RETRIED)
    def deposit(self, tok, body, key, fault, record_failures, retried):
        return self.call(Sent(tok, "deposit", body, client_key_for(key, "deposit", body)), fault, record_failures,
                         retried)

    @rule(target=sent, tok=toks, body=BODIES, key=CLIENT_KEYS, fault=MAYBE_FAULT, record_failures=RECORD_FAILURES,
          retried=MAYBE_RETRIED)
    def charge(self, tok, body, key, fault, record_failures, retried):
        return self.call(Sent(tok, "charge", body, client_key_for(key, "charge", body)), fault, record_failures,
                         retried)

    @rule(request=sent, fault=MAYBE_FAULT, record_failures=RECORD_FAILURES)
    def retry(self, request, fault, record_failures):
        self.send(request, fault, record_failures)

    @rule(request=sent)
    def retry_after_the_lease(self, request):
        """A client (Zapier, n8n) retrying half a minute later: any claim it meets has run out."""
        self.clock.advance(LEASE + 1)
        self.send(request)

    @rule(target=sent, request=sent, tok=toks)
    def same_request_through_another_token(self, request, tok):
        """The same event arriving through a second tool (its own token), with the same headers."""
        return self.send(Sent(tok, request.op, request.body, request.client_key))

    @rule(tok=toks, change=st.sampled_from(EDITS))
    def edit_token(self, tok, change):
        try:
            with self.app.app_context(), db.transaction() as session:
                tokens.update_token(session, tokens.get(session, tok.id), change, now=self.clock.now())
        except messages.Problem as refused:
            assert refused.name in ("token-identity-locked", "namespace-rule-differs"), refused.name
            return
        tok.namespace = change.get("namespace", tok.namespace)
        tok.dedupe_on = list(change.get("dedupe_on", tok.dedupe_on))

    @rule()
    def purge(self):
        rows_before, bound_before = self.stored()
        with self.app.app_context(), db.write() as connection:
            claims.purge(connection, self.clock.now() + timedelta(seconds=1))
        rows_after, bound_after = self.stored()
        forgotten = {self.first_sent[k] for row in rows_before.keys() - rows_after.keys()
                     for k in self.upstream_keys(rows_before[row]) if k in self.first_sent}
        self.forgotten.update(forgotten)
        for binding in bound_before - bound_after:
            self.client_key_events.pop(binding, None)
        for events in self.client_key_events.values():  # a client key equal to the event key is never bound
            events -= forgotten

    @rule(target=dead, tok=toks, op=OPERATIONS, body=BODIES, key=CLIENT_KEYS, called=st.booleans())
    def process_dies_after_claiming(self, tok, op, body, key, called):
        client_key = client_key_for(key, op, body)
        context = Context(identity(tok, op, body), tok.scope, client_key)
        with self.app.test_request_context():
            with db.read_connection() as connection:
                token = tokens.authenticate(connection, f"Bearer {tok.text}", self.clock.now())
            fingerprint = keys.fingerprint(op, body)
            try:
                claim = money.claim_or_wait(token, op, body, keys.event_key(token, op, body, fingerprint), client_key,
                                            fingerprint, "died")
            except messages.Problem:
                return multiple()
            if isinstance(claim, claims.Replay):
                return multiple()
            self.attribute(claim.upstream_key, context)
            if called:  # it landed at Paywalls before the process died
                self.call_upstream(context, op, body, claim)
        return Dead(token, op, body, client_key, claim, context)

    @rule(late=consumes(dead))
    def stale_owner_comes_back(self, late):
        """The process wakes up (maybe long after its lease), calls Paywalls and records what it answers."""
        with self.app.test_request_context():
            outcome = self.call_upstream(late.context, late.op, late.body, late.claim)
            money.record(late.token, late.op, late.body, late.claim, outcome, late.client_key, "late")

    @rule(fault=MAYBE_FAULT)
    def ledger_resolve(self, fault):
        self.env.inject(fault, None)
        try:
            with self.app.test_request_context():
                money.resolve()
        finally:
            self.env.clear_faults()

    @rule(until=st.sampled_from(["the lease runs out", "just before midnight"]))
    def time_passes(self, until):
        now = self.clock.now()
        if until == "the lease runs out":
            self.clock.advance(LEASE + 1)
            return
        moment = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(seconds=10)
        self.clock.set(moment if moment > now else moment + timedelta(days=1))

    # -- how the rules act ----------------------------------------------------------------------------------------

    def call(self, request: Sent, fault, record_failures, retried):
        self.send(request, fault, record_failures)
        if retried is not None:
            self.send(request, None if retried == "without a fault" else retried)
        return request

    def send(self, request: Sent, fault=None, record_failures=0):
        self.env.inject(fault, request.op)
        self.env.record_failures = record_failures
        self.context = Context(identity(request.tok, request.op, request.body), request.tok.scope, request.client_key)
        headers = {**auth(request.tok.text), **({"Idempotency-Key": request.client_key} if request.client_key else {})}
        try:
            response = self.client.post(PATHS[request.op], json=request.body, headers=headers)
        finally:
            self.context, self.env.record_failures = None, 0
            self.env.clear_faults()
        assert response.status_code != 500, response.get_data(as_text=True)
        return request

    def call_upstream(self, context: Context, op: str, body: dict, claim: claims.Claim):
        self.context = context
        try:
            return money.upstream().call("POST", money.PATHS[op], json=body, idempotency_key=claim.upstream_key)
        finally:
            self.context = None

    def saw_upstream_call(self, upstream_key: str):
        """Every call the relay makes to Paywalls passes here (Env wraps the upstream client)."""
        if self.context is None:  # ledger resolve: it may only re-send what a request claimed
            if upstream_key not in self.first_sent:
                self.problems.append(f"ledger resolve sent {upstream_key}, which no request claimed")
            return
        self.attribute(upstream_key, self.context)
        if self.context.client_key:
            self.client_key_events[(self.context.scope, self.context.client_key)].add(self.context.identity)

    def attribute(self, upstream_key: str, context: Context):
        first = self.first_sent.setdefault(upstream_key, context.identity)
        if first != context.identity:
            self.problems.append(f"upstream key {upstream_key} sent for two events: {first} and {context.identity}")

    @staticmethod
    def upstream_keys(row) -> list[str]:
        return [keys.upstream_key(row.scope, row.key, generation, row.nonce)
                for generation in range(row.generation + 1)]

    # Between steps nothing else runs: plain reads, without a transaction around them, see one state.
    def stored(self):
        with self.app.app_context(), db.read_connection() as connection:
            rows = {(row.id, row.nonce): row for row in connection.execute(select(IdempotencyKey.__table__))}
            bound = {(row.scope, row.key) for row in connection.execute(select(ClientKey.scope, ClientKey.key))}
        return rows, bound

    def read(self):
        with self.app.app_context(), db.read_connection() as connection:
            rows = list(connection.execute(select(IdempotencyKey.__table__)))
            ledger = list(connection.execute(select(LedgerEntry.__table__)
                                             .where(LedgerEntry.outcome.in_(["credited", "charged"]))))
            usage = list(connection.execute(select(Usage.__table__)))
        return rows, ledger, usage

    # -- the invariants ---------------------------------------------------------------------------------------------

    @invariant()
    def money_is_consistent(self):
        self.check(quiesced=False)

    def check(self, quiesced: bool):
        assert not self.problems, self.problems
        snapshot = self.env.sandbox.state.snapshot()
        rows, ledger, usage = self.read()
        for row in rows:
            for upstream_key in self.upstream_keys(row):
                self.owners[upstream_key] = (row.id, row.nonce)

        for op, (kind, outcome) in APPLIED.items():
            applied = [call["idempotency_key"] for call in snapshot[kind]]
            # 1. At most once per upstream key, and per stored event (a row's lifetime: its id and nonce).
            assert None not in applied and max(Counter(applied).values(), default=0) <= 1, applied
            unexplained = [k for k in applied if k not in self.owners]
            assert not unexplained, f"Paywalls applied {unexplained}, which no stored event sends"
            per_event = Counter(self.owners[k] for k in applied)
            assert max(per_event.values(), default=0) <= 1, f"one stored event applied twice: {per_event}"
            # 1, by the model: one event applied again only after a purge forgot it.
            for call in snapshot[kind][self.seen[kind]:]:
                event = self.first_sent.get(call["idempotency_key"])
                assert event is not None, f"Paywalls applied {call}, which no request sent"
                assert self.landed.get(event, -1) < self.forgotten[event], \
                    f"{event} was applied twice by Paywalls without a purge between: {snapshot[kind]}"
                self.landed[event] = self.forgotten[event]
            self.seen[kind] = len(snapshot[kind])
            # 2. The ledger agrees with Paywalls.
            recorded = Counter(entry.upstream_key for entry in ledger if entry.outcome == outcome)
            assert max(recorded.values(), default=0) <= 1, f"an upstream key {outcome} twice in the ledger: {recorded}"
            assert set(recorded) <= set(applied), \
                f"{outcome} in the ledger, never applied: {set(recorded) - set(applied)}"
            # An applied call is in the ledger, or its event is still unresolved (a retry or `ledger resolve` will
            # record it). An open event says nothing was applied; a done one has its outcome recorded.
            unresolved = {(row.id, row.nonce) for row in rows if row.state in ("in_flight", "ambiguous")}
            lost = {self.owners[k] for k in applied if k not in recorded and self.owners[k] not in unresolved}
            assert not lost, f"Paywalls applied a call the ledger has no {outcome} row for, and nothing will record " \
                             f"it: {[(row.id, row.state) for row in rows if (row.id, row.nonce) in lost] or 'purged'}"
            if quiesced:
                assert sorted(recorded) == sorted(applied), \
                    f"Paywalls applied {sorted(set(applied) - set(recorded))} but the ledger has no {outcome} row"

        # 1, by the model: one client key never sends two events to Paywalls.
        for (scope, client_key), events in self.client_key_events.items():
            assert len(events) <= 1, f"client key {client_key} in {scope} sent {len(events)} events: {events}"

        # 3. No cap is exceeded.
        caps = {tok.id: tok.daily_cap_micros for tok in self.tokens if tok.daily_cap_micros}
        for row in usage:
            if row.token_id in caps and row.period.startswith("d:"):
                assert row.settled_micros + row.reserved_micros <= caps[row.token_id], row

        # 4. Settled usage is what the ledger says was applied, in the period it is dated.
        expected = Counter()
        for entry in ledger:
            moment, micros = as_utc(entry.created_at), int(Decimal(entry.amount) * 1_000_000)
            expected[(entry.token_id, "d:" + moment.strftime("%Y-%m-%d"))] += micros
            expected[(entry.token_id, "m:" + moment.strftime("%Y-%m"))] += micros
        # Only a token with a cap has usage rows (caps.py); the others' usage is read from the ledger and the keys.
        capped = {tok.id for tok in self.tokens if tok.daily_cap_micros}
        assert {row.token_id for row in usage} <= capped, "a token without caps wrote a usage row"
        settled = {(row.token_id, row.period): row.settled_micros for row in usage if row.settled_micros}
        assert settled == {period: micros for period, micros in expected.items() if micros and period[0] in capped}
        # What /v1/relay/me shows a token without caps: the applied amounts of the period plus what its calls of
        # unknown outcome still hold.
        held = Counter()
        for row in rows:
            if row.reserved_micros and row.reserved_token_id not in capped:
                moment = as_utc(row.reserved_at)
                held[(row.reserved_token_id, "d:" + moment.strftime("%Y-%m-%d"))] += row.reserved_micros
        with self.app.app_context(), db.read_connection() as connection:
            for tok in self.tokens:
                if tok.id in capped:
                    continue
                for (token_id, period), micros in list(expected.items()) + list(held.items()):
                    if token_id == tok.id and period.startswith("d:"):
                        day = datetime.strptime(period[2:], "%Y-%m-%d").replace(tzinfo=timezone.utc)
                        shown = sum(relay_caps.ledger_usage(connection, tok.id, *relay_caps.bounds(day)["d"]))
                        assert shown == expected[(tok.id, period)] + held[(tok.id, period)], (tok.id, period)

        if quiesced:
            # 5. Nothing is left in flight or reserved.
            assert [row.state for row in rows if row.state in ("in_flight", "ambiguous")] == []
            assert [(row.id, row.state, row.reserved_micros) for row in rows if row.reserved_micros] == []
            assert [(row.token_id, row.period, row.reserved_micros) for row in usage if row.reserved_micros] == []

    def quiesce(self):
        """Faults gone, every lease run out, `ledger resolve` until nothing is stranded."""
        self.env.clear_faults()
        self.env.record_failures = 0
        for _ in range(5):
            self.clock.advance(LEASE + 1)
            with self.app.test_request_context():
                money.resolve()
            if not [row for row in self.read()[0] if row.state in ("in_flight", "ambiguous")]:
                return

    def teardown(self):
        try:
            # When a step failed, that failure is the report: quiescing after it would only add noise.
            if sys.exc_info()[0] is None:
                self.quiesce()
                self.check(quiesced=True)
        finally:
            self.env.machine = None
            self.env.record_failures = 0


class PostgresMoneyMachine(MoneyMachine):
    """On PostgreSQL the database can also restart: its server terminates the relay's connections."""

    @rule()
    def database_restarts(self):
        self.env.kill_connections()
        self.env.wait_until_ready(self.client)

    @rule(request=MoneyMachine.sent)
    def retry_while_the_database_restarts(self, request):
        """The database restarts while Paywalls is being called: the record meets the dead connections."""
        self.env.restart_during_call = True
        try:
            self.send(request)
        finally:
            self.env.restart_during_call = False
        self.env.wait_until_ready(self.client)


def test_the_money_path_keeps_its_invariants_under_any_interleaving(database_url, sandbox_server, monkeypatch):
    env = Env(database_url, sandbox_server, monkeypatch)
    machine = PostgresMoneyMachine if env.admin is not None else MoneyMachine
    try:
        run_state_machine_as_test(lambda: machine(env), settings=SETTINGS)
    finally:
        env.stop()


# --- the shortest failing examples the machine found, replayed step by step -----------------------------------

class Steps:
    """Runs the machine's rules by hand, checking the invariants after each, as Hypothesis would; quiesces and
    checks the stronger ones at the end."""

    def __init__(self, env: Env):
        self.machine = MoneyMachine(env)
        self.machine.check(quiesced=False)

    def __getattr__(self, name):
        def step(**arguments):
            result = getattr(self.machine, name)(**arguments)
            self.machine.check(quiesced=False)
            return result.values if isinstance(result, MultipleResults) else result
        return step

    def finish(self):
        self.machine.teardown()


@pytest.fixture
def steps(database_url, sandbox_server, monkeypatch):
    env = Env(database_url, sandbox_server, monkeypatch)
    yield Steps(env)
    env.machine = None
    env.stop()


@pytest.mark.parametrize("key", ["derived", "k1"])
def test_one_client_key_through_two_tokens_of_a_namespace_is_one_event(steps, key):
    """Two tools (two tokens of one namespace; the second asks for another dedupe rule, is refused, and takes the
    namespace's) send the same body with the same Idempotency-Key: one event, so Paywalls is called once."""
    tokens_0, tokens_1 = steps.two_tools_in_one_namespace(first_cap=None, first_by_reference=False, second_cap=None,
                                                          second_by_reference=True)
    sent_0 = steps.deposit(tok=tokens_0, body=make_body("u1", "10", "r1"), key=key, fault=None, record_failures=0,
                           retried=None)
    steps.same_request_through_another_token(request=sent_0, tok=tokens_1)
    steps.finish()


@pytest.mark.parametrize("then,fault", [("retry", "429"), ("retry", "302"), ("retry", "400"),
                                        ("ledger resolve", "401")])
def test_an_event_that_may_have_landed_stays_unresolved_until_paywalls_answers_for_it(steps, then, fault):
    """A credit lands but its answer is lost (ambiguous); re-sending it meets a fault that says nothing about that
    key (rate limited, a redirect, a 400, the relay's own key refused): the credit still may have landed."""
    tokens_0 = steps.create_token(shared=False, daily_cap="25", by_reference=False)
    if then == "retry":
        steps.deposit(tok=tokens_0, body=make_body("u1", "10", "r1"), key="none", fault="drop_after_credit",
                      record_failures=0, retried=fault)
    else:
        steps.deposit(tok=tokens_0, body=make_body("u1", "10", "r1"), key="none", fault="drop_after_credit",
                      record_failures=0, retried=None)
        steps.ledger_resolve(fault=fault)
    steps.finish()


def test_a_stale_owner_never_records_over_a_newer_event(steps):
    """A process claims an event and stalls; after its lease `ledger resolve` completes it and a purge forgets
    it; a new event is claimed (on SQLite it gets the purged row's id, and lease 1 like the stale claim).
    The stale owner comes back: its outcome must not be recorded, least of all on the new event's row."""
    tokens_0 = steps.create_token(shared=False, daily_cap=None, by_reference=False)
    dead_0 = steps.process_dies_after_claiming(tok=tokens_0, op="deposit", body=make_body("u1", "10", "r1"), key="none",
                                               called=False)
    steps.time_passes(until="the lease runs out")
    steps.ledger_resolve(fault=None)
    steps.purge()
    steps.process_dies_after_claiming(tok=tokens_0, op="deposit", body=make_body("u2", "10", "r1"), key="none",
                                      called=True)
    steps.stale_owner_comes_back(late=dead_0)
    steps.finish()
