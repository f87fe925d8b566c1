"""What SQLAlchemy Core adds to one statement of the money path, against the same SQL on the DBAPI cursor.

    .venv/bin/python bench/statement_overhead.py [--database-url postgresql://...]

The statement is the token lookup every request makes (tokens.authenticate: all of the token's columns by id),
run N times on one connection in this process: CPU time per statement (process time, so the database server's
own work and the wait for it are not counted), through `Connection.execute` and through the driver's cursor with
the SQL SQLAlchemy compiled. Then the cost of a connection checkout and of an empty transaction. It answers one
question: how much of a deposit's CPU would moving the money path's statements to the DBAPI save (bench/results.md).
"""

import argparse
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import run as bench  # noqa: E402
from sqlalchemy import bindparam, select  # noqa: E402

from relay import db, migrate  # noqa: E402
from relay.models import Token  # noqa: E402

TOKENS = Token.__table__
BY_ID = select(TOKENS).where(TOKENS.c.id == bindparam("tid"))  # as tokens.authenticate's statement


def per_call(n: int, call) -> float:
    call()
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (a fresh database is made); SQLite if absent")
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args()
    bench.WORK.mkdir(exist_ok=True)
    with ExitStack() as stack:
        url = stack.enter_context(bench.postgres_database(args.database_url)) if args.database_url else \
            f"sqlite:///{bench.WORK}/overhead-{uuid.uuid4().hex[:8]}.db"
        migrate.upgrade(url)
        engine = db.make_engine(url)
        with engine.connect() as connection:
            through_core = per_call(args.n, lambda: connection.execute(BY_ID, {"tid": "x"}).first())
            sql = str(BY_ID.compile(dialect=engine.dialect))
            params = {"tid": "x"} if engine.dialect.paramstyle in ("pyformat", "named") else ("x",)
            cursor = connection.connection.dbapi_connection.cursor()

            def raw():
                cursor.execute(sql, params)
                cursor.fetchone()
            through_dbapi = per_call(args.n, raw)
        checkout = per_call(args.n, lambda: engine.connect().close())

        def empty_transaction():
            with engine.begin():
                pass
        transaction = per_call(args.n, empty_transaction)
        engine.dispose()
    name = engine.dialect.name
    print(f"{name}: the token lookup ({len(TOKENS.c)} columns): SQLAlchemy Core {through_core:.0f} us of CPU, the "
          f"DBAPI cursor {through_dbapi:.0f} us (difference {through_core - through_dbapi:.0f} us per statement)")
    print(f"{name}: connection checkout and return {checkout:.0f} us; an empty transaction {transaction:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
