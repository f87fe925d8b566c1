"""Shared fixtures: a sandbox upstream on 127.0.0.1, a relay app on a fresh database, tokens.

Every test gets a fresh SQLite database. With RELAY_TEST_DATABASE_URL set, tests marked
`postgres` (and the `any_db` parametrisation) run against a fresh PostgreSQL database too.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import create_engine, text

from relay import db, migrate, tokens
from relay.app import create_app
from relay.sandbox import Server

SANDBOX_KEY = "sk-paywalls-test-" + uuid.uuid4().hex
PG_URL = os.environ.get("RELAY_TEST_DATABASE_URL")
needs_postgres = pytest.mark.skipif(not PG_URL, reason="RELAY_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")


def pytest_configure(config):
    config.addinivalue_line("markers", "postgres: needs RELAY_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def sandbox_server():
    server = Server(api_key=SANDBOX_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server):
    """The sandbox, reset for this test."""
    with sandbox_server.state.lock:
        sandbox_server.state.reset()
    return sandbox_server


def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'relay.db'}"


@contextmanager
def postgres_database():
    """A fresh PostgreSQL database, dropped afterwards."""
    name = "relay_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(db.make_engine(PG_URL).url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = db.make_engine(PG_URL).url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def base_settings(database_url: str, sandbox_url: str, **more) -> dict:
    settings = {
        "DATABASE_URL": database_url,
        "PAYWALLS_API_KEY": SANDBOX_KEY,
        "PAYWALLS_BASE_URL": sandbox_url,
        "RELAY_ADMIN_KEY": "admin-" + uuid.uuid4().hex,
        "REDIS_URL": None,
        "RELAY_UPSTREAM_BUDGET": 5.0,
        "RELAY_READ_TIMEOUT": 2.0,
        "RELAY_INFLIGHT_WAIT": 2.0,
        "RELAY_AUTH_FAILURE_LIMIT": "1000/minute",
    }
    settings.update(more)
    return settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[needs_postgres, pytest.mark.postgres])])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def operator_env(tmp_path, sandbox, monkeypatch):
    """What an operator's shell has for the CLI: the relay's settings, a migrated SQLite database, the sandbox as
    Paywalls, and the working directory. Returns the database URL."""
    url = sqlite_url(tmp_path)
    for name in ("PAYWALLS_API_KEY", "PAYWALLS_BASE_URL", "DATABASE_URL", "RELAY_ENV", "RELAY_ADMIN_KEY", "REDIS_URL",
                 "RELAY_METRICS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("PAYWALLS_API_KEY", SANDBOX_KEY)
    monkeypatch.setenv("PAYWALLS_BASE_URL", sandbox.url)
    monkeypatch.chdir(tmp_path)
    migrate.upgrade(url)
    return url


@pytest.fixture
def make_app(sandbox, tmp_path):
    """Build a relay app with overrides; the database is migrated first."""
    apps = []

    def make(database_url=None, **overrides):
        url = database_url or sqlite_url(tmp_path)
        migrate.upgrade(url)
        app = create_app(base_settings(url, sandbox.url, **overrides))
        app.testing = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["relay.engine"].dispose()


@pytest.fixture
def app(make_app, database_url):
    return make_app(database_url)


@pytest.fixture
def client(app):
    return app.test_client()


def create_token(app, **spec) -> tuple[str, str]:
    """(id, token text) of a new token in `app`, with every operation unless the spec says otherwise."""
    spec.setdefault("label", "test token")
    spec.setdefault("operations", list(tokens.OPERATIONS))
    with app.app_context(), db.transaction() as session:
        token, text = tokens.create(session, spec)
        return token.id, text


@pytest.fixture
def make_token(app):
    return lambda **spec: create_token(app, **spec)


@pytest.fixture
def make_token_on():
    """A token in the given app (for tests that build their own app with make_app)."""
    return create_token


@pytest.fixture
def token(make_token):
    return make_token()[1]


def auth(token_text: str) -> dict:
    return {"Authorization": f"Bearer {token_text}"}


def deposit(client, token_text, body=None, headers=None, **fields):
    body = body if body is not None else {"user": "acme:user_1", "amount": "10", **fields}
    return client.post("/v1/user/balance/deposit", json=body, headers={**auth(token_text), **(headers or {})})


def manual_clock(app, start=None):
    """Put the app on a clock that moves only when the test says (clock.advance(seconds)), so leases, token
    expiry and cap periods are tested without sleeping."""
    from datetime import datetime, timezone

    from relay.clock import ManualClock
    clock = ManualClock(start or datetime.now(timezone.utc))
    app.extensions["relay.clock"] = clock
    return clock


@pytest.fixture
def relay_log(caplog):
    """caplog, also fed by the relay's own loggers (which do not propagate to the root)."""
    logger = logging.getLogger("relay")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def wait_for(condition, seconds: float = 10.0):
    """Poll until `condition()` holds: synchronisation on an observable fact, never on a guessed duration."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def ledger_rows(session, operation=None):
    from sqlalchemy import select

    from relay.models import LedgerEntry
    query = select(LedgerEntry).order_by(LedgerEntry.id)
    if operation:
        query = query.where(LedgerEntry.operation == operation)
    return list(session.scalars(query))


def key_rows(session):
    from sqlalchemy import select

    from relay.models import IdempotencyKey
    return list(session.scalars(select(IdempotencyKey).order_by(IdempotencyKey.id)))


def credits(sandbox_server, user=None) -> list[dict]:
    deposits = sandbox_server.state.snapshot()["deposits"]
    return [d for d in deposits if user is None or d["user"] == user]


def migrated_token(database_url: str, **spec) -> str:
    """Migrate a database and create one token in it (for relays run as real processes)."""
    migrate.upgrade(database_url)
    app = create_app(base_settings(database_url, "http://127.0.0.1:9/v1"))
    with app.app_context(), db.transaction() as session:
        _, text_ = tokens.create(session, {"label": "test token", **spec})
    app.extensions["relay.engine"].dispose()
    return text_


# --- real processes, for concurrency and crash tests ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def relay_env(settings: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYWALLS_", "RELAY_", "DATABASE_URL"))}
    env.update({k: str(v) for k, v in settings.items() if v is not None})
    return env


@contextmanager
def gunicorn_relay(settings: dict, workers: int = 1, threads: int = 8, log_path=None, boot_seconds: float = 20):
    """The relay under gunicorn (the production server) on a free port."""
    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", str(threads), "relay.app:create_app()"],
        env=relay_env(settings), cwd=os.path.dirname(os.path.dirname(__file__)), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, boot_seconds)
        yield url, process
    finally:
        stop_process(process)
        if log_path:
            log.close()


def stop_process(process):
    """SIGTERM, then SIGKILL if it has not exited within 10 s; reaped either way (no zombie between tests)."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- the dev stack: one command starts the sandbox and a relay, for every suite (issue 14) ----------------------

RELAY_BIN = os.path.join(os.path.dirname(sys.executable), "paywalls-relay")


class DevStack:
    """A running `paywalls-relay dev-stack --json`: its printed URLs and keys, and what suites do with them."""

    def __init__(self, process, info: dict):
        self.process, self.info = process, info
        self.relay_url, self.sandbox_url = info["relay_url"], info["sandbox_url"]

    def admin(self, method: str, path: str, **kwargs):
        return requests.request(method, self.relay_url + "/v1/admin/tokens" + path, timeout=10,
                                headers={"Authorization": f"Bearer {self.info['admin_key']}"}, **kwargs)

    def token(self, **spec) -> str:
        spec.setdefault("label", "test token")
        spec.setdefault("operations", list(tokens.OPERATIONS))
        answer = self.admin("POST", "", json=spec)
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]

    def sandbox(self, method: str, path: str, **kwargs):
        return requests.request(method, f"{self.sandbox_url}/_sandbox/{path}", timeout=10,
                                headers={"X-Sandbox-Control": self.info["sandbox_control"]}, **kwargs)

    def sandbox_state(self) -> dict:
        return self.sandbox("GET", "state").json()


@contextmanager
def dev_stack_process(*args, env=None):
    """`paywalls-relay dev-stack --json --exit-with-stdin`, stopped with SIGTERM afterwards (its stdin closing
    stops it too, should this process die)."""
    process = subprocess.Popen([RELAY_BIN, "dev-stack", "--json", "--exit-with-stdin", *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=env or relay_env({}), cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"dev-stack exited before printing its URLs (exit code {process.wait(10)})")
        stack = DevStack(process, json.loads(line))
        wait_until_up(stack.relay_url)
        yield stack
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def dev_stack():
    """One live relay and sandbox for the session, started the way the Zapier and n8n suites start theirs."""
    with dev_stack_process() as stack:
        yield stack


# Security (issue 7): every answer and log line of the run is scanned for secrets at the end (tests/leakcheck.py).
from leakcheck import pytest_sessionfinish, pytest_sessionstart  # noqa: E402,F401
