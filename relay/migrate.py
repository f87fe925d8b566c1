"""Schema migrations with Alembic, driven from the relay's own configuration."""

import fcntl
import os
import pathlib
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from . import db

HERE = pathlib.Path(__file__).resolve().parent
# Any constant shared by every relay release; PostgreSQL advisory locks are per database.
ADVISORY_LOCK = 0x7061_7977_6c6c  # "paywll"


class SchemaNotCurrent(RuntimeError):
    """The database is not at the head migration, or cannot be reached; the message says what to do."""


class DatabaseUnreachable(SchemaNotCurrent):
    """The schema could not be checked because the database did not answer."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.set_main_option("sqlalchemy.url", db.normalize_url(url).replace("%", "%%"))
    return config


def head() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current(connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def check_current(engine) -> None:
    """Refuse to serve a database that is not at the head migration: every query would fail later, one by one."""
    try:
        with engine.connect() as connection:
            found = current(connection)
    except DBAPIError as error:
        raise DatabaseUnreachable(unreachable(engine.url, error)) from None
    wanted = head()
    if found != wanted:
        state = "has no relay schema" if found is None else f"is at migration {found}, this relay needs {wanted}"
        raise SchemaNotCurrent(f"The database {state}: run `paywalls-relay db upgrade` (the Procfile's release "
                               "step) with the same DATABASE_URL, then start the relay again.")


def unreachable(url, error: DBAPIError) -> str:
    where = db.describe_url(str(url))
    place = where.get("database_path") or f"{where.get('database_host')}/{where.get('database_name')}"
    why = str(getattr(error, "orig", error)).strip().splitlines()[0]
    return f"The database ({where['database']} at {place}) cannot be reached: {why}. Check DATABASE_URL."


def upgrade(url: str, revision: str = "head"):
    """Apply migrations, one process at a time: a platform may run the release phase on several machines at
    once, and two concurrent first migrations both try to create the same tables. The others wait, then find
    nothing to do."""
    engine = db.make_engine(url)
    try:
        try:
            engine.connect().close()
        except DBAPIError as error:  # say so in one line, not a traceback
            raise DatabaseUnreachable(unreachable(engine.url, error)) from None
        with _migration_lock(engine) as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
    finally:
        engine.dispose()


@contextmanager
def _migration_lock(engine):
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK})
                connection.commit()
        elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            fd = os.open(os.path.abspath(engine.url.database) + ".migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield connection
            finally:
                os.close(fd)
        else:
            yield connection


def revision(url: str, message: str):
    command.revision(alembic_config(url), message=message, autogenerate=True)
