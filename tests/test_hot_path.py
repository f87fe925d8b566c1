"""The request path's cheaper mechanisms (issue 15) keep what the costlier ones guaranteed: a connection the
database ended is never used, the SQLite writer queue still excludes other processes, every upstream call carries
its own key and body, and the watchdog still cuts every call at its own deadline."""

import fcntl
import os
import threading
import time

import pytest
import requests
from sqlalchemy import create_engine, event, text

from conftest import needs_postgres, postgres_database, wait_for
from relay import db, upstream


# --- PostgreSQL: liveness without a ping per checkout ------------------------------------------------------------

def counting_pings(monkeypatch, engine) -> list:
    pings = []
    real = engine.dialect.do_ping

    def ping(dbapi_connection):
        pings.append(1)
        return real(dbapi_connection)
    monkeypatch.setattr(engine.dialect, "do_ping", ping)
    return pings


def backend_pid(engine) -> tuple[int, object]:
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar(), connection.connection.dbapi_connection


@needs_postgres
def test_a_busy_pool_reuses_connections_without_a_ping(monkeypatch):
    with postgres_database() as url:
        engine = db.make_engine(url)
        pings = counting_pings(monkeypatch, engine)
        pids = {backend_pid(engine)[0] for _ in range(20)}
        engine.dispose()
    assert pings == [] and len(pids) == 1  # one pooled connection, reused twenty times, never pinged


@needs_postgres
def test_callers_in_waves_reuse_the_pools_connections_instead_of_opening_new_ones():
    """A slow upstream answers a whole wave of callers at once: three waves of 15 connections held together open
    15 server sessions, not 15 more for every wave (10 + 10 overflow closed 5 after each wave and reopened them)."""
    with postgres_database() as url:
        engine = db.make_engine(url)
        opened = []
        event.listen(engine.pool, "connect", lambda *_: opened.append(1))
        for _wave in range(3):
            together = threading.Barrier(15)

            def caller():
                with engine.connect() as connection:
                    together.wait(timeout=20)  # all 15 hold one at the same time
                    connection.execute(text("SELECT 1"))
            callers = [threading.Thread(target=caller) for _ in range(15)]
            for thread in callers:
                thread.start()
            for thread in callers:
                thread.join()
        engine.dispose()
    assert len(opened) == 15


@needs_postgres
@pytest.mark.parametrize("how", ["terminated", "idle past the limit"])
def test_a_connection_the_server_ended_is_replaced_before_it_is_used(monkeypatch, how):
    with postgres_database() as url:
        engine = db.make_engine(url)
        pings = counting_pings(monkeypatch, engine)
        first, raw = backend_pid(engine)
        if how == "terminated":
            admin = create_engine(engine.url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
            admin.dispose()
            wait_for(lambda: db._ended_by_server(raw))  # the server's goodbye has reached the socket
        else:
            # A path that dropped the connection silently shows nothing on the socket: age is the only clue.
            monkeypatch.setattr(db, "LIVENESS_PING_IDLE", 0.0)
        second, _ = backend_pid(engine)  # no error: the dead connection never reached the caller
        engine.dispose()
    assert pings == [1]
    if how == "terminated":
        assert second != first


@needs_postgres
def test_a_claim_on_an_uncapped_token_writes_and_locks_no_shared_row(make_app, sandbox):
    """Two calls on one busy token in flight at once: neither locks the token's row (a FOR KEY SHARE per claim made a
    multixact and rewrote the row on every call), and neither writes a usage row."""
    import threading
    from datetime import datetime, timezone

    from conftest import create_token, deposit
    from relay import claims, keys, tokens
    with postgres_database() as url:
        app = make_app(url)
        token_id, text_ = create_token(app)
        assert deposit(app.test_client(), text_).status_code == 200  # its use is recorded: no touch for a minute
        now = datetime.now(timezone.utc)
        with app.app_context(), db.read_connection() as connection:
            token = tokens.authenticate(connection, f"Bearer {text_}", now)
        held, release, results = [], threading.Event(), []

        def claim(user):
            body = {"user": user, "amount": "1"}
            fingerprint = keys.fingerprint("deposit", body)
            with app.app_context(), db.write() as connection:
                results.append(claims.claim(connection, token, "deposit", fingerprint, None, fingerprint, "{}",
                                            1_000_000, now, 30))
                held.append(1)
                release.wait(10)
        threads = [threading.Thread(target=claim, args=(f"u{n}",)) for n in range(2)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(held) == 2)
            probe = create_engine(url)
            with probe.connect() as connection:
                # FOR UPDATE NOWAIT fails at once if any transaction holds a lock on the row, even a key share.
                connection.execute(text("SET lock_timeout = '100ms'"))
                locked = connection.execute(text("SELECT id FROM tokens WHERE id = :id FOR UPDATE NOWAIT"),
                                            {"id": token_id}).scalar()
                usage_rows = connection.execute(text("SELECT count(*) FROM usage")).scalar()
                connection.rollback()
            probe.dispose()
        finally:
            release.set()
            for thread in threads:
                thread.join(10)
        assert locked == token_id
        assert usage_rows == 0
        assert [type(result).__name__ for result in results] == ["Claim", "Claim"]



# --- SQLite: the writer queue's lock file, opened once per process ---------------------------------------------

def test_the_writer_lock_still_excludes_a_forked_process(tmp_path):
    path = str(tmp_path / "relay.db")
    with db._writer_lock(path):  # this process opens its descriptor and holds the lock
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit status
            try:
                fcntl.flock(db._lock_file(path), fcntl.LOCK_EX | fcntl.LOCK_NB)
                os._exit(1)  # it got the lock the parent holds: the inherited descriptor was reused
            except BlockingIOError:
                os._exit(0)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with db._writer_lock(path):  # released, and taken again by the same descriptor
        fcntl.flock(db._lock_file(path), fcntl.LOCK_EX | fcntl.LOCK_NB)


# --- SQLite: how transactions begin, without an engine event ------------------------------------------------------

def test_a_sqlite_write_holds_the_write_lock_from_its_begin_and_a_lone_read_opens_no_transaction(make_app, tmp_path):
    import sqlite3

    app = make_app()
    path = app.extensions["relay.engine"].url.database
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with app.app_context():
        with db.write() as connection:  # nothing executed yet: BEGIN IMMEDIATE alone must hold the lock
            raw = connection.connection.driver_connection
            assert raw.in_transaction
            assert raw.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: write() syncs after the lock
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        assert not raw.in_transaction
        other.execute("BEGIN IMMEDIATE")  # released at commit
        other.execute("ROLLBACK")
        with app.extensions["relay.engine"].begin() as connection:  # any other writer: synchronous=FULL
            assert connection.connection.driver_connection.execute("PRAGMA synchronous").fetchone()[0] == 2
        with db.read_connection() as connection:
            connection.execute(text("SELECT 1"))
            assert not connection.connection.driver_connection.in_transaction
        with db.read() as session:  # the lone read's exemption does not leak to the next read
            session.execute(text("SELECT 1"))
            assert session.connection().connection.driver_connection.in_transaction
    other.close()


def test_a_deleted_lock_file_is_followed_so_every_process_still_queues_on_one(tmp_path):
    path = str(tmp_path / "relay.db")
    with db._writer_lock(path):
        pass
    os.remove(path + ".writer-lock")  # an operator's clean-up while the relay runs
    with db._writer_lock(path):
        other = os.open(path + ".writer-lock", os.O_RDWR)  # what a process started now would lock
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)


# --- the upstream request: a copy of one prepared per path -------------------------------------------------------

def upstream_client() -> upstream.Upstream:
    return upstream.Upstream({"PAYWALLS_BASE_URL": "https://api.example.test/v1", "PAYWALLS_API_KEY": "sk-test",
                              "RELAY_CONNECT_TIMEOUT": 1.0, "RELAY_READ_TIMEOUT": 1.0, "RELAY_UPSTREAM_BUDGET": 2.0,
                              "RELAY_UPSTREAM_RETRIES": 0})


def test_each_call_carries_its_own_key_and_body():
    client = upstream_client()
    first = client._prepare("POST", "/user/balance/deposit", {"user": "a", "amount": "1"}, None, "pwr1_a")
    second = client._prepare("POST", "/user/balance/deposit", {"user": "bé", "amount": "2.5"}, None, "pwr1_b")
    unkeyed = client._prepare("POST", "/user/balance/deposit", {"user": "c", "amount": "3"}, None, None)
    reference = requests.Request("POST", "https://api.example.test/v1/user/balance/deposit", json={
        "user": "bé", "amount": "2.5"}, headers={"Authorization": "Bearer sk-test", "Accept": "application/json",
                                                "User-Agent": client.user_agent, "Idempotency-Key": "pwr1_b"}).prepare()
    assert (first.headers["Idempotency-Key"], second.headers["Idempotency-Key"]) == ("pwr1_a", "pwr1_b")
    assert "Idempotency-Key" not in unkeyed.headers
    assert (second.method, second.url, second.body) == (reference.method, reference.url, reference.body)
    assert dict(second.headers) == dict(reference.headers)
    assert first.body != second.body and first.headers["Content-Length"] != second.headers["Content-Length"]


def test_a_key_that_would_split_the_headers_is_refused_as_before():
    with pytest.raises(requests.exceptions.InvalidHeader):
        upstream_client()._prepare("POST", "/user/charge", {"user": "a"}, None, "pwr1_a\r\nX-Evil: 1")


# --- the watchdog: woken only for an earlier deadline, still cutting every call at its own ------------------------

def test_every_deadline_fires_in_its_turn_and_a_finished_call_never_does():
    watchdog = upstream._Watchdog()
    now = time.monotonic()
    late = watchdog.arm(now + 60)
    soon = watchdog.arm(now + 0.2)       # earlier than the one it sleeps for: it is woken
    later = watchdog.arm(now + 0.4)      # not the earliest: it is found when `soon` fires
    finished = watchdog.arm(now + 0.1)
    watchdog.disarm(finished)
    wait_for(lambda: soon.fired and later.fired, seconds=5)
    assert not late.fired and not finished.fired
    watchdog.disarm(late)
    watchdog.disarm(soon)
    watchdog.disarm(later)
