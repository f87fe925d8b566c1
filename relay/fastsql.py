"""Prebuilt Core statements run straight on the pooled DBAPI connection: the request path's database access.

Profiling a deposit showed SQLAlchemy's per-execution machinery (execution context, events, result
wrapping, pool reset) costing ~110 us per transaction and ~100 us per statement on top of the database's
own ~20 us. Here SQLAlchemy still compiles each statement (once per dialect) and supplies its own bind
and result type processors, so the SQL and the stored values are exactly what Core would produce; only
the execution is done by hand. Statements must be fully specified: no Python-side column defaults and
no expanding IN parameters (both are refused when the statement is prepared).

The connection object offers the small part of the Connection API the request path uses:
`execute(statement, params)` returning a result with first/one/one_or_none/scalar/all/rowcount, and
`dialect`. DBAPI errors are raised as SQLAlchemy's, so the app's "database unavailable" handler works.
"""

import fcntl
import os
import threading
from collections import namedtuple
from contextlib import contextmanager, nullcontext

from sqlalchemy import exc
from sqlalchemy.engine import Engine
from sqlalchemy.sql.dml import Insert


class _Prepared:
    __slots__ = ("sql", "positional", "names", "processors", "escaped", "literals", "row", "result_processors")


_prepared: dict = {}
_prepared_lock = threading.Lock()


def _prepare(statement, dialect, keys: tuple) -> _Prepared:
    column_keys = list(keys) if isinstance(statement, Insert) and statement._values is None else None
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise RuntimeError("fastsql: give every column a value (no Python-side defaults): " + compiled.string)
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise RuntimeError("fastsql: expanding or literal-execute parameters are not supported: " + compiled.string)
    prepared = _Prepared()
    prepared.sql = compiled.string
    prepared.positional = compiled.positional
    prepared.names = list(compiled.positiontup) if compiled.positional else None
    prepared.processors = dict(compiled._bind_processors)
    prepared.escaped = dict(compiled.escaped_bind_names or {})
    # Values compiled into the statement (e.g. .values(state="done")) and bind parameters' defaults.
    prepared.literals = compiled.construct_params(escape_names=False, _check=False)
    columns = list(statement.exported_columns) if compiled._result_columns else []
    if columns:
        names = [column.key if isinstance(getattr(column, "key", None), str) and column.key.isidentifier()
                 else f"column_{i}" for i, column in enumerate(columns)]
        prepared.row = _row_class(names)
        prepared.result_processors = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                                      for column in columns]
    else:
        prepared.row, prepared.result_processors = None, None
    return prepared


def _row_class(names):
    base = namedtuple("Row", names, rename=True)

    class Row(base):
        __slots__ = ()

        @property
        def _mapping(self):
            return dict(zip(names, self))

    return Row


class Result:
    __slots__ = ("rows", "rowcount")

    def __init__(self, rows, rowcount):
        self.rows, self.rowcount = rows, rowcount

    def first(self):
        return self.rows[0] if self.rows else None

    def one_or_none(self):
        if len(self.rows) > 1:
            raise exc.MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.first()

    def one(self):
        if len(self.rows) != 1:
            raise (exc.NoResultFound("No row was found when one was required") if not self.rows
                   else exc.MultipleResultsFound("Multiple rows were found when exactly one was required"))
        return self.rows[0]

    def scalar(self):
        return self.rows[0][0] if self.rows else None

    def all(self):
        return list(self.rows)

    def __iter__(self):
        return iter(self.rows)


class Connection:
    """One pooled DBAPI connection, for one transaction of prebuilt statements."""

    def __init__(self, dbapi_connection, dialect):
        self.dbapi_connection, self.dialect = dbapi_connection, dialect
        self._error = dialect.loaded_dbapi.Error

    def execute(self, statement, params: dict | None = None) -> Result:
        params = params or {}
        key = (statement, self.dialect.name, tuple(params) if isinstance(statement, Insert) else ())
        prepared = _prepared.get(key)
        if prepared is None:
            with _prepared_lock:
                prepared = _prepared.get(key) or _prepare(statement, self.dialect, key[2])
                _prepared[key] = prepared
        values = {**prepared.literals, **params}
        processors = prepared.processors
        if prepared.positional:
            bound = [processors[name](values[name]) if name in processors else values[name] for name in prepared.names]
        else:
            escaped = prepared.escaped
            bound = {escaped.get(name, name): processors[name](value) if name in processors else value
                     for name, value in values.items()}
        cursor = self.dbapi_connection.cursor()
        try:
            cursor.execute(prepared.sql, bound)
            rows = []
            if prepared.row is not None:
                result_processors = prepared.result_processors
                for raw in cursor.fetchall():
                    rows.append(prepared.row(*[value if process is None else process(value)
                                               for process, value in zip(result_processors, raw)]))
            return Result(rows, cursor.rowcount)
        except self._error as error:
            raise self._wrap(error, prepared.sql) from error
        finally:
            cursor.close()

    def _wrap(self, error, sql):
        return exc.DBAPIError.instance(sql, None, error, self._error, hide_parameters=True, dialect=self.dialect)


_thread_locks: dict = {}


@contextmanager
def _writer_lock(engine: Engine):
    """SQLite admits one writer at a time. A writer that finds the database locked waits in SQLite's
    busy handler, which polls with sleeps of up to 100 ms: under concurrent deposits that, not the work,
    set throughput and p99 (p99 over 1 s at 16 connections). The relay's own writers queue here instead,
    on a thread lock and an flock on `<database>.writer-lock`, and are woken as soon as it is free.
    Other writers (CLI, admin) still meet SQLite's own locking: this is scheduling, not correctness."""
    database = engine.url.database
    path = os.path.abspath(database) if database and database != ":memory:" and not database.startswith("file:") \
        else None
    threads = _thread_locks.get(path)
    if threads is None:
        threads = _thread_locks.setdefault(path, threading.Lock())
    with threads:
        if path is None:
            yield
            return
        fd = os.open(path + ".writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


@contextmanager
def transaction(engine: Engine, *, write: bool):
    """A transaction on a pooled DBAPI connection: committed on success, rolled back on any error.

    SQLite (driver autocommit, see db.py): writers BEGIN IMMEDIATE, as the engine's "begin" event does;
    a read is one SELECT, which SQLite runs in its own snapshot. PostgreSQL: the driver begins implicitly.
    """
    sqlite = engine.dialect.name == "sqlite"
    with _writer_lock(engine) if sqlite and write else nullcontext():
        with _transaction(engine, write=write, sqlite=sqlite) as connection:
            yield connection


@contextmanager
def _transaction(engine: Engine, *, write: bool, sqlite: bool):
    dbapi_error = engine.dialect.loaded_dbapi.Error
    try:
        fairy = engine.raw_connection()  # pool checkout, with pre-ping on PostgreSQL
    except dbapi_error as error:  # e.g. the database is down: raised as SQLAlchemy's, like Connection does
        raise exc.DBAPIError.instance(None, None, error, dbapi_error, hide_parameters=True,
                                      connection_invalidated=True, dialect=engine.dialect) from error
    connection = Connection(fairy.dbapi_connection, engine.dialect)
    try:
        try:
            if sqlite and write:
                fairy.dbapi_connection.execute("BEGIN IMMEDIATE")
            yield connection
            fairy.dbapi_connection.commit()
        except connection._error as error:
            raise connection._wrap(error, None) from error
    except BaseException as error:
        try:
            fairy.dbapi_connection.rollback()
        except Exception:  # the connection itself is broken: the pool must not hand it out again
            fairy.invalidate()
        else:
            if isinstance(error, exc.DBAPIError) and isinstance(error.orig, (engine.dialect.loaded_dbapi.OperationalError,
                                                                             engine.dialect.loaded_dbapi.InterfaceError)):
                fairy.invalidate()
        raise
    finally:
        fairy.close()
