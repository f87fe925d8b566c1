"""Issue 7, faults: whatever the upstream, the network or the database does, each deposit is credited
exactly once or not at all, and the caller is told which. Every case asserts the upstream's final credits.

(The lead's tests/test_idempotency.py covers credit-then-dropped-connection, a worker SIGKILLed mid-call
and 50 concurrent identical deposits.)
"""

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import create_engine, text

from conftest import (SANDBOX_KEY, auth, base_settings, credits, deposit, free_port, gunicorn_relay, ledger_rows,
                      manual_clock, migrated_token, wait_for,
                      needs_postgres, postgres_database)
from relay import db, tokens
from relay.sandbox import Server

INVOICE = {"invoice_id": "in_faults_1"}


def fault(sandbox, **spec):
    requests.post(sandbox.url.replace("/v1", "/_sandbox/faults"), json=spec, timeout=5).raise_for_status()


def new_token(app, **spec) -> str:
    with app.app_context(), db.transaction() as session:
        return tokens.create(session, {"label": "faults", "operations": list(tokens.OPERATIONS), **spec})[1]


def ledger_outcomes(app) -> list[str]:
    from relay.models import LedgerEntry
    from sqlalchemy import select
    with app.app_context(), db.read() as session:
        return [entry.outcome for entry in session.scalars(select(LedgerEntry).order_by(LedgerEntry.id))]


def used_today(client, token) -> str:
    return client.get("/v1/relay/me", headers=auth(token)).get_json()["usage"]["today"]


def assert_problem(response, status, name):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["type"] == f"urn:paywalls-relay:problem:{name}"
    return body


# --- upstream answers ------------------------------------------------------------------------------------------

def test_upstream_5xx_then_success_is_one_credit(make_app, sandbox):
    app = make_app(RELAY_UPSTREAM_RETRIES=3)
    client, token = app.test_client(), new_token(app)
    fault(sandbox, kind="status", status=503, count=2, endpoint="deposit")
    response = deposit(client, token, metadata=INVOICE)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"balanceFormatted": "10.00"}
    assert sandbox.state.snapshot()["calls"]["deposit"] == 3  # two 503s, then the credit
    assert [c["amount"] for c in credits(sandbox)] == ["10"]
    # All three attempts carried the same upstream key, so even a 5xx that had applied would dedupe.
    assert len({c["idempotency_key"] for c in credits(sandbox)}) == 1
    assert deposit(client, token, metadata=INVOICE).headers["Idempotent-Replayed"] == "true"
    assert len(credits(sandbox)) == 1
    assert ledger_outcomes(app) == ["credited", "replayed"]


def test_upstream_5xx_past_the_retries_is_ambiguous_and_a_later_retry_credits_once(make_app, sandbox):
    app = make_app(RELAY_UPSTREAM_RETRIES=1)
    client, token = app.test_client(), new_token(app, daily_cap="25")
    fault(sandbox, kind="status", status=500, count=2, endpoint="deposit")
    first = deposit(client, token, metadata=INVOICE)
    body = assert_problem(first, 502, "upstream-ambiguous")
    assert "safe" in body["detail"]
    assert credits(sandbox) == []
    assert used_today(client, token) == "10"  # held: the outcome is unknown
    retry = deposit(client, token, metadata=INVOICE)
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "false"
    assert [c["amount"] for c in credits(sandbox)] == ["10"]
    assert used_today(client, token) == "10"  # settled once, not twice
    assert ledger_outcomes(app) == ["ambiguous", "credited"]


def test_429_with_retry_after_is_waited_out_then_one_credit(make_app, sandbox):
    app = make_app(RELAY_UPSTREAM_RETRIES=2, RELAY_UPSTREAM_BUDGET=5.0)
    client, token = app.test_client(), new_token(app)
    fault(sandbox, kind="rate_limit", retry_after=1, count=1, endpoint="deposit")
    started = time.monotonic()
    response = deposit(client, token, metadata=INVOICE)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.get_json()
    assert elapsed >= 1.0, "the relay retried before Paywalls' Retry-After"
    assert sandbox.state.snapshot()["calls"]["deposit"] == 2
    assert [c["amount"] for c in credits(sandbox)] == ["10"]


def test_429_past_the_budget_applies_nothing_and_a_later_retry_credits_once(make_app, sandbox):
    app = make_app(RELAY_UPSTREAM_RETRIES=3, RELAY_UPSTREAM_BUDGET=1.5)
    client, token = app.test_client(), new_token(app, daily_cap="25")
    fault(sandbox, kind="rate_limit", retry_after=5, count=10, endpoint="deposit")
    first = deposit(client, token, metadata=INVOICE)
    # A 429 means Paywalls did not apply the call: a definite "nothing changed", not "maybe".
    body = assert_problem(first, 502, "upstream-unavailable")
    assert "Nothing was changed" in body["detail"]
    assert sandbox.state.snapshot()["calls"]["deposit"] == 1  # Retry-After 5 s does not fit a 1.5 s budget
    assert credits(sandbox) == []
    assert used_today(client, token) == "0"  # the reservation was released
    requests.post(sandbox.url.replace("/v1", "/_sandbox/reset"), timeout=5)
    retry = deposit(client, token, metadata=INVOICE)
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "false"
    assert [c["amount"] for c in credits(sandbox)] == ["10"]
    assert ledger_outcomes(app) == ["failed", "credited"]


def test_latency_past_the_read_timeout_then_retry_is_one_credit(make_app, sandbox):
    app = make_app(RELAY_READ_TIMEOUT=0.5, RELAY_UPSTREAM_RETRIES=0, RELAY_UPSTREAM_BUDGET=5.0)
    client, token = app.test_client(), new_token(app)
    # Paywalls sleeps 1.5 s, then applies the credit: the relay has given up by then.
    fault(sandbox, kind="latency", seconds=1.5, count=1, endpoint="deposit")
    first = deposit(client, token, metadata=INVOICE)
    body = assert_problem(first, 504, "upstream-ambiguous")
    assert "may or may not have been applied" in body["detail"]
    wait_for(lambda: credits(sandbox), seconds=5)
    assert len(credits(sandbox)) == 1  # it did land, late
    retry = deposit(client, token, metadata=INVOICE)
    assert retry.status_code == 200
    assert retry.get_json() == {"balanceFormatted": "10.00"}
    assert sandbox.state.snapshot()["calls"]["deposit"] == 2  # re-sent with the same key, absorbed upstream
    assert len(credits(sandbox)) == 1
    assert sandbox.state.snapshot()["balances"]["acme:user_1"] == "10"
    assert ledger_outcomes(app) == ["ambiguous", "credited"]


# --- the network ----------------------------------------------------------------------------------------------

def test_connection_refused_applies_nothing_and_a_later_retry_credits_once(make_app):
    port = free_port()  # nothing listens here yet
    app = make_app(PAYWALLS_BASE_URL=f"http://127.0.0.1:{port}/v1", RELAY_UPSTREAM_RETRIES=1)
    client, token = app.test_client(), new_token(app, daily_cap="25")
    first = deposit(client, token, metadata=INVOICE)
    body = assert_problem(first, 502, "upstream-unavailable")
    assert "connection refused" in body["detail"] and "Nothing was changed" in body["detail"]
    assert used_today(client, token) == "0"
    upstream = Server(port=port, api_key=SANDBOX_KEY).start()  # Paywalls is back
    try:
        retry = deposit(client, token, metadata=INVOICE)
        assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "false"
        assert [c["amount"] for c in credits(upstream)] == ["10"]
        assert deposit(client, token, metadata=INVOICE).headers["Idempotent-Replayed"] == "true"
        assert len(credits(upstream)) == 1
        assert used_today(client, token) == "10"
    finally:
        upstream.stop()
    assert ledger_outcomes(app) == ["failed", "credited", "replayed"]


# --- the database, a private PostgreSQL cluster stopped and started under a running relay ----------------------

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivateCluster:
    """A throwaway PostgreSQL cluster on a free port: the machine's shared one is never touched."""

    def __init__(self):
        self.bin = PG_BIN[-1]
        self.dir = tempfile.mkdtemp(prefix="relay-faults-pg-")
        self.data, self.port = os.path.join(self.dir, "data"), free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(["initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])

    def _run(self, command: list[str]):
        done = subprocess.run(_as_postgres([os.path.join(self.bin, command[0]), *command[1:]]),
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}\n{done.stderr}")

    def start(self):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(["pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.dir, "log"), "-w", "start"])

    def stop(self):
        self._run(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])

    def url(self, database="postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self):
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private_postgres():
    if not PG_BIN or not os.path.exists(os.path.join(PG_BIN[-1], "initdb")):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: database-outage test skipped")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: initdb cannot run as postgres")
    cluster = PrivateCluster()
    try:
        cluster.start()
        admin = create_engine(db.make_engine(cluster.url()).url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text('CREATE DATABASE "relay"'))
        admin.dispose()
        yield cluster
    finally:
        cluster.remove()


def test_database_outage_is_503_loses_nothing_and_recovers_without_a_restart(make_app, sandbox):
    with private_postgres() as cluster:
        app = make_app(database_url=cluster.url("relay"), RELAY_UPSTREAM_RETRIES=0, RELAY_READ_TIMEOUT=5.0,
                       RELAY_RECORD_BUDGET=0.5)
        clock = manual_clock(app)
        client, token = app.test_client(), new_token(app)
        assert deposit(client, token, metadata={"n": "before"}).status_code == 200

        # 1. A deposit in flight when the database goes: Paywalls credits it, the relay cannot record it.
        fault(sandbox, kind="latency", seconds=1.5, count=1, endpoint="deposit")
        result = {}
        in_flight = threading.Thread(target=lambda: result.update(
            response=deposit(client, token, metadata={"n": "in-flight"})))
        in_flight.start()
        wait_for(lambda: sandbox.state.snapshot()["calls"].get("deposit") == 2)  # claimed, Paywalls is being called
        cluster.stop()
        in_flight.join(15)
        outage = result["response"]
        body = assert_problem(outage, 503, "outcome-unrecorded")
        assert outage.headers["Retry-After"] and "safe" in body["detail"] and "may or may not" in body["detail"]
        assert len(credits(sandbox)) == 2  # it did land upstream

        # 2. While the database is down: every answer is a clean 503 problem, nothing reaches Paywalls.
        for attempt in ({"n": "during"}, {"n": "in-flight"}):
            down = deposit(client, token, metadata=attempt)
            assert_problem(down, 503, "unavailable")
        assert client.get("/readyz").status_code == 503
        assert len(credits(sandbox)) == 2

        # 3. The database is back; the same relay object, not restarted, recovers.
        cluster.start()
        assert client.get("/readyz").status_code == 200
        early = deposit(client, token, metadata={"n": "in-flight"})
        assert_problem(early, 409, "idempotency-in-flight")  # its lease still protects the unrecorded call
        clock.advance(31)  # past RELAY_LOCK_TIMEOUT
        retried = deposit(client, token, metadata={"n": "in-flight"})
        assert retried.status_code == 200, retried.get_json()
        during = deposit(client, token, metadata={"n": "during"})
        assert during.status_code == 200
        replayed = deposit(client, token, metadata={"n": "before"})
        assert replayed.headers["Idempotent-Replayed"] == "true"
        # Exactly one credit per deposit: the in-flight one was re-sent with its key and absorbed upstream.
        assert sorted(c["metadata"]["n"] for c in credits(sandbox)) == ["before", "during", "in-flight"]
        assert sandbox.state.snapshot()["balances"]["acme:user_1"] == "30"
        with app.app_context(), db.read() as session:
            credited = [row.metadata_["n"] for row in ledger_rows(session) if row.outcome == "credited"]
        assert sorted(credited) == ["before", "during", "in-flight"]
        app.extensions["relay.engine"].dispose()


# --- load on one token: no database deadlock -------------------------------------------------------------------

@needs_postgres
@pytest.mark.parametrize("limits", [{"daily_cap": "100000"}, {}], ids=["capped", "uncapped"])
def test_concurrent_deposits_on_one_token_never_deadlock_postgres(sandbox, limits):
    """Claims of a capped token reserve the day's then the month's usage row while other requests settle
    theirs: every statement must lock the two rows in that same order (a settle that locked them in scan order
    deadlocked under make bench's 16 connections). A token without caps touches no usage row at all."""
    with postgres_database() as url:
        token = migrated_token(url, operations=["deposit"], **limits)
        settings = base_settings(url, sandbox.url, RELAY_UPSTREAM_RETRIES=0)
        with gunicorn_relay(settings, workers=2, threads=8) as (relay_url, _process):
            def one(n):
                return requests.post(relay_url + "/v1/user/balance/deposit", headers=auth(token), timeout=30,
                                     json={"user": f"u{n % 3}", "amount": "1", "metadata": {"n": n}}).status_code
            with ThreadPoolExecutor(16) as pool:
                statuses = list(pool.map(one, range(160)))
    assert statuses == [200] * 160
    assert len(credits(sandbox)) == 160


# --- connections killed under load: the ledger still agrees with Paywalls ----------------------------------------

@needs_postgres
def test_killing_database_connections_under_load_loses_no_credit_from_the_ledger(make_app, sandbox):
    """Issue 11: with PostgreSQL connections terminated during 200 deposits, 25 credits used to have no ledger row
    and their keys stayed in flight for good. Now every answer is a clean one, and after `ledger resolve` every
    credit Paywalls made has exactly one `credited` row, and nothing is left reserved or in flight."""
    from datetime import datetime, timedelta, timezone

    from relay import money
    from relay.models import IdempotencyKey, Usage
    from sqlalchemy import select

    with postgres_database() as url:
        token = migrated_token(url, operations=["deposit"], daily_cap="100000")
        settings = base_settings(url, sandbox.url, RELAY_UPSTREAM_RETRIES=0, RELAY_UPSTREAM_BUDGET=2.0,
                                 RELAY_RECORD_BUDGET=0.3, RELAY_LOCK_TIMEOUT=7.3)
        killer_engine = create_engine(db.make_engine(url).url, isolation_level="AUTOCOMMIT")
        stop, kills = threading.Event(), []

        def kill_connections():
            with killer_engine.connect() as connection:
                while not stop.is_set():
                    kills.append(connection.execute(text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar())
                    stop.wait(0.15)

        with gunicorn_relay(settings, workers=2, threads=4) as (relay_url, _process):
            killer = threading.Thread(target=kill_connections)
            killer.start()

            def one(n):
                response = requests.post(relay_url + "/v1/user/balance/deposit", headers=auth(token), timeout=30,
                                         json={"user": f"u{n % 5}", "amount": "1", "metadata": {"n": n}})
                return response.status_code, response.headers.get("Content-Type", "")

            try:
                with ThreadPoolExecutor(8) as pool:
                    answers = list(pool.map(one, range(200)))
            finally:
                stop.set()
                killer.join(10)
        killer_engine.dispose()
        assert sum(kills) > 0, "no connection was killed: the test proved nothing"
        statuses = [status for status, _ in answers]
        assert set(statuses) <= {200, 409, 502, 503}, sorted(set(statuses))
        assert all(kind.startswith(("application/json", "application/problem+json")) for _, kind in answers)

        # Nobody retries. The operator's `ledger resolve`, once the leases have run out, completes every key.
        app = make_app(database_url=url)
        manual_clock(app, datetime.now(timezone.utc) + timedelta(seconds=60))
        with app.test_request_context():
            money.resolve()
        with app.app_context(), db.read() as session:
            credited = [row.upstream_key for row in ledger_rows(session, "deposit") if row.outcome == "credited"]
            keys_left = session.scalars(select(IdempotencyKey).where(
                (IdempotencyKey.state == "in_flight") | (IdempotencyKey.reserved_micros != 0))).all()
            reserved = [row.reserved_micros for row in session.scalars(select(Usage))]
        assert sorted(credited) == sorted(c["idempotency_key"] for c in credits(sandbox))
        assert len(set(credited)) == len(credited)
        assert keys_left == [] and set(reserved) == {0}
        app.extensions["relay.engine"].dispose()
