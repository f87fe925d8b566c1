"""The database: one SQLAlchemy engine per app, SQLite (WAL) by default, PostgreSQL to scale out."""

import fcntl
import os
import select
import threading
import time
from contextlib import contextmanager

from flask import current_app
from sqlalchemy import create_engine, event, exc, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .config import server_threads


DEFAULT_PATH = os.path.join("instance", "relay.db")


def default_url() -> str:
    """SQLite at `instance/relay.db` under the working directory. Not Flask's instance folder: after a plain
    `pip install .` that lies inside the virtualenv, so the release step (the installed CLI) and gunicorn
    (started from the repository) migrated one file and served another."""
    path = os.path.abspath(DEFAULT_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return "sqlite:///" + path


def normalize_url(url: str) -> str:
    """`postgres://` (what Heroku and Render set) and `postgresql://` both mean psycopg 3; SQLAlchemy knows
    neither the first name nor, without the suffix, which driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def describe_url(url: str) -> dict:
    """What a start-up line may say about the database: its kind and file or host, never credentials."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        return {"database": "sqlite", "database_path": os.path.abspath(parsed.database or ":memory:")}
    return {"database": parsed.get_backend_name(), "database_host": f"{parsed.host or 'localhost'}:{parsed.port or 5432}",
            "database_name": parsed.database}


# PostgreSQL: connections per process. Not one per thread: the server's max_connections (100 by default) is
# shared by every worker and process, and a transaction here lasts a few statements. A thread that finds them all
# busy queues for one instead of failing: POOL_TIMEOUT is far above any wait seen under load.
# No overflow: QueuePool closes an overflow connection as soon as it is returned to a full pool, and callers come
# in waves (a slow upstream answers a whole wave at once), so 10 + 10 opened and closed server sessions all the
# time: 0.10 to 0.18 per deposit at 300 ms and 64 callers, each a backend start (bench/waves.py). 20 kept once
# opened: the same peak, and 11 % less CPU per deposit on the machine. Opened lazily: a quiet process keeps few.
PG_POOL_SIZE, PG_MAX_OVERFLOW, PG_POOL_TIMEOUT = 20, 0, 15

# What the request path treats as "the database failed": an error from the driver, or every pooled connection
# still busy after PG_POOL_TIMEOUT (SQLAlchemy's own TimeoutError, not a DBAPIError). Before a claim nothing was
# done (503, safe to retry); after the call to Paywalls the record is retried like any other database error.
FAILURES = (exc.DBAPIError, exc.TimeoutError)


def make_engine(url: str, writer: bool = True) -> Engine:
    url = normalize_url(url)
    threads = server_threads()
    if url.startswith("sqlite"):
        # A SQLite connection is a file handle: enough for every thread, so none waits for the pool (writers
        # queue on _writer_lock instead); only a few stay open when idle.
        database = make_url(url).database
        pooled = {} if not database or database == ":memory:" or "mode=memory" in url else \
            {"pool_size": min(threads, 8), "max_overflow": threads, "pool_timeout": 30}
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pooled)
        event.listen(engine, "connect", _sqlite_pragmas)  # a pool event: no per-statement dispatch
        # Errors raised here are wrapped like any statement's (DBAPIError), since SQLAlchemy calls do_begin itself.
        engine.dialect.do_begin = _sqlite_begin_immediate if writer else _sqlite_begin_deferred
        return engine
    # Sessions in UTC, whatever the server's TimeZone: every page and export shows UTC times (the console's
    # date formatting reads the datetimes as the driver returns them). A URL's own `options` wins.
    utc = {} if "options" in make_url(url).query else {"connect_args": {"options": "-c TimeZone=UTC"}}
    engine = create_engine(url, pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW,
                           pool_timeout=PG_POOL_TIMEOUT, **utc)
    watch_liveness(engine)
    return engine


# PostgreSQL: is a pooled connection still alive? pool_pre_ping answered with a round trip (SELECT 1) at every
# checkout: three per fresh deposit, a quarter of its messages to the server. A connection the server has ended
# (pg_terminate_backend, a restart, a crash, a failover) has something to read on its socket: the server's
# "terminating connection" error, or the end of the stream. An idle connection between transactions never has
# anything else to read here (the relay uses no LISTEN), so a readable socket costs one poll(), no round trip,
# and only then is the connection pinged (and replaced, with every connection older than it, if the ping fails,
# as pool_pre_ping did). A connection that sat idle longer than LIVENESS_PING_IDLE is pinged as before: a network
# path that dropped it silently (a NAT or firewall timeout) shows nothing on the socket.
LIVENESS_PING_IDLE = 10.0  # seconds
_CHECKED_IN = "relay_checked_in"


def watch_liveness(engine: Engine):
    dialect = engine.dialect

    def check_alive(dbapi_connection, record, _proxy):
        idle_since = record.info.get(_CHECKED_IN)
        if idle_since is None:  # connected just now (info is cleared with every new DBAPI connection)
            return
        if time.monotonic() - idle_since < LIVENESS_PING_IDLE and not _ended_by_server(dbapi_connection):
            return
        try:
            dialect.do_ping(dbapi_connection)  # what pool_pre_ping sends
        except Exception as error:
            # As pool_pre_ping: this connection and every one opened before it are replaced (a restart ends them all).
            raise exc.InvalidatePoolError("the database ended this connection") from error

    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", check_alive)


def _note_checkin(_dbapi_connection, record):
    if record is not None:
        record.info[_CHECKED_IN] = time.monotonic()


def _ended_by_server(dbapi_connection) -> bool:
    """Anything to read on an idle connection's socket: the server ended it (or sent what only a ping can tell)."""
    try:
        fd = dbapi_connection.fileno()
    except Exception:  # closed or broken on the client's side already
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


# FULL: SQLite syncs the WAL on every commit, so a ledger row the client was told about survives a power loss.
# NORMAL (faster) may lose the last commits then. bench/sqlite_durability.py measures the difference.
SQLITE_SYNCHRONOUS = "FULL"


def _sqlite_pragmas(dbapi_connection, _record):
    # Let SQLAlchemy, not the driver, decide when a transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# How a SQLite transaction begins: the dialect's own do_begin (a no-op for pysqlite) replaced on each engine's dialect,
# not a "begin" event listener. Any engine event makes SQLAlchemy dispatch before/after events on every statement the
# engine runs (nine per fresh deposit), which cost more than the BEGIN itself. What the connection needs to know per
# transaction comes through this thread's _begin: set by write() and read_connection() just before they begin.
_begin = threading.local()


def _sqlite_begin_immediate(dbapi_connection):
    # group: a write() whose commit need not sync, since write() syncs after releasing the lock (group commit).
    # synchronous can only change outside a transaction: set it for this one (and remember, per connection).
    mode = "NORMAL" if getattr(_begin, "group", False) else SQLITE_SYNCHRONOUS
    info = dbapi_connection.info
    if info.get("synchronous") != mode:
        dbapi_connection.execute(f"PRAGMA synchronous={mode}")
        info["synchronous"] = mode
    # Writers queue up at BEGIN instead of failing on a lock upgrade mid-transaction.
    dbapi_connection.execute("BEGIN IMMEDIATE")


def _sqlite_begin_deferred(dbapi_connection):
    if getattr(_begin, "single_read", False):  # read_connection(): one SELECT, no transaction around it
        _begin.single_read = False  # for that connection's first statement only
        return
    dbapi_connection.execute("BEGIN")


def init_app(app, url: str):
    engine = make_engine(url)
    # SQLite: readers get their own engine so they never queue behind BEGIN IMMEDIATE (WAL lets them run).
    reader = make_engine(url, writer=False) if engine.dialect.name == "sqlite" else engine
    from . import metrics

    metrics.watch_pool(engine, "writer" if reader is not engine else "main")
    if reader is not engine:
        metrics.watch_pool(reader, "reader")
    app.extensions["relay.engine"] = engine
    app.extensions["relay.sessions"] = sessionmaker(engine, expire_on_commit=False)
    app.extensions["relay.readers"] = sessionmaker(reader, expire_on_commit=False)
    app.extensions["relay.reader"] = reader


def engine() -> Engine:
    return current_app.extensions["relay.engine"]


@contextmanager
def transaction():
    """One short transaction: committed on success, rolled back on any error."""
    with current_app.extensions["relay.sessions"].begin() as session:
        yield session


@contextmanager
def write():
    """One short write transaction on a bare Core connection, for the request path's claim and record
    phases (prebuilt Core statements; an ORM session costs more than they do): committed on success,
    rolled back on any error, and on disk when this returns.

    SQLite: group commit. A synchronous=FULL commit syncs the WAL while holding the database's only write
    lock, so every fresh deposit (two commits) waited for two disk flushes in turn: about 3 ms each on the
    benchmark machine, a ceiling of some 150 deposits a second whatever the CPUs or the upstream. Here the
    commit writes its WAL frames without syncing, releases the write lock, then syncs the WAL file: the next
    writer commits meanwhile, and one flush carries every commit written before it. The promise is FULL's:
    nothing is acted on (Paywalls called, a client answered) before its commit is on disk; another request
    may only read a commit that is not yet on disk, and then its own commit, later in the same WAL, is
    synced before it acts."""
    bound = engine()
    group = _group_commit_path(bound)
    _unflushed.flag = False
    if group is None:
        with bound.begin() as connection:
            yield connection
        return
    with _writer_lock(group):
        with bound.connect() as connection:
            _begin.group = True
            try:
                transaction = connection.begin()  # BEGIN IMMEDIATE runs here, with synchronous=NORMAL
            finally:
                _begin.group = False
            with transaction:
                yield connection
    if not _unflushed.flag:
        _sync_file(group + "-wal")


_unflushed = threading.local()


def without_flush(connection):
    """This write() transaction's rows are never acted on (a replay's ledger row: the answer it gives is already
    stored): it need not wait for the disk. The next flush, or PostgreSQL's WAL writer, carries it."""
    _unflushed.flag = True
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def _sync_file(path: str):
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # the WAL was checkpointed and removed, which syncs the database file first
    try:
        # What SQLite's own synchronous=FULL calls on Linux: the data and what reading it back needs (the size),
        # without the inode's timestamps, which fsync() also journals on every commit.
        _datasync(fd)
    finally:
        os.close(fd)


_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def _group_commit_path(bound: Engine) -> str | None:
    """The SQLite database file whose writers queue on a lock and commit as a group; None otherwise."""
    database = bound.url.database
    if bound.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


_thread_locks: dict = {}


@contextmanager
def _writer_lock(path: str):
    """SQLite admits one writer at a time, and a writer that finds the database locked waits in
    SQLite's busy handler, which polls with sleeps of up to 100 ms: under concurrent deposits that, not
    the work, set throughput and p99. The request path's writers queue here instead, on a thread lock
    and an flock on `<database>.writer-lock`, and are woken as soon as it is free. Other writers (CLI,
    admin) still meet SQLite's own locking: this is scheduling, not correctness."""
    with _thread_locks.setdefault(path, threading.Lock()):
        fd = _lock_file(path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


_lock_files: dict = {}


def _lock_file(path: str) -> int:
    """This process's descriptor of `<database>.writer-lock`, kept open (an open and a close per write were two of
    a deposit's syscalls; a stat remains, to follow the file if someone deleted or replaced it: processes locking
    different files would no longer queue together). Per process: a descriptor inherited over fork() shares its
    flock with the parent, so a gunicorn worker opens its own. Called under the path's thread lock."""
    lock_path = path + ".writer-lock"
    held = _lock_files.get(path)
    if held is not None:
        pid, fd, inode = held
        if pid == os.getpid():
            try:
                if os.stat(lock_path).st_ino == inode:
                    return fd
            except FileNotFoundError:
                pass
        os.close(fd)  # replaced, or the parent's (inherited): only the parent's own unlock or exit releases its lock
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    _lock_files[path] = (os.getpid(), fd, os.fstat(fd).st_ino)
    return fd


@contextmanager
def read():
    """A read-only transaction."""
    with current_app.extensions["relay.readers"].begin() as session:
        yield session


@contextmanager
def read_connection():
    """One SELECT on a bare Core connection and outside a transaction, for the hot path (the token
    lookup): a single statement is consistent on its own, and BEGIN and ROLLBACK would be two more
    round trips on PostgreSQL."""
    with current_app.extensions["relay.reader"].connect() as connection:
        if connection.dialect.name == "postgresql":
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
            return
        _begin.single_read = True  # the SELECT's automatic begin sends no BEGIN (_sqlite_begin_deferred)
        try:
            yield connection
        finally:
            _begin.single_read = False


def ping() -> bool:
    try:
        with engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def dialect_name(session_or_connection) -> str:
    bind = session_or_connection.get_bind() if isinstance(session_or_connection, Session) else session_or_connection
    return bind.dialect.name


_INSERT_IGNORE: dict = {}


def insert_ignore_returning(session: Session, model, values: dict):
    """INSERT ... ON CONFLICT DO NOTHING RETURNING the primary key: its row when this call inserted, else None.

    The statement is built once per dialect and table and the values are bound at execution: building
    SQLAlchemy statements costs far more than running them on the request path.
    """
    dialect = dialect_name(session)
    statement = _INSERT_IGNORE.get((dialect, model))
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        table = model.__table__
        statement = insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)
        _INSERT_IGNORE[(dialect, model)] = statement
    return session.execute(statement, values).first()
