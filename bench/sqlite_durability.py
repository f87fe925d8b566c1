"""What syncing every money-path commit costs a fresh deposit on SQLite (part of `make bench`, not a test).

Sequential fresh deposits through the relay (Flask test client, the embedded path of a real request minus HTTP)
against an in-process sandbox, on a temporary database on this machine's disk. FULL: the relay as it runs (its
group commit syncs the WAL after each claim and record, db.write); NORMAL: the same with that sync skipped, as
synchronous=NORMAL would (the WAL synced only at checkpoints). One connection, so no commit shares a flush here:
this is the single-caller cost. Prints one line per mode and appends nothing.

    .venv/bin/python bench/sqlite_durability.py [deposits]
"""

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay import db, migrate, tokens  # noqa: E402
from relay.app import create_app  # noqa: E402
from relay.sandbox import Server  # noqa: E402


_SYNC = db._sync_file


def run(mode: str, count: int, sandbox_url: str) -> list[float]:
    db.SQLITE_SYNCHRONOUS = mode
    db._sync_file = _SYNC if mode == "FULL" else (lambda path: None)
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as folder:
        url = f"sqlite:///{folder}/bench.db"
        migrate.upgrade(url)
        app = create_app({"DATABASE_URL": url, "PAYWALLS_API_KEY": "sk-bench", "PAYWALLS_BASE_URL": sandbox_url,
                          "REDIS_URL": None, "RELAY_LOG_LEVEL": "WARNING"})
        with app.app_context(), db.transaction() as session:
            _, text = tokens.create(session, {"label": "bench"})
        client, headers, times = app.test_client(), {"Authorization": f"Bearer {text}"}, []
        for n in range(count):
            started = time.perf_counter()
            response = client.post("/v1/user/balance/deposit", headers=headers,
                                   json={"user": "bench:u", "amount": "1", "metadata": {"n": n}})
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.get_data(as_text=True)
        app.extensions["relay.engine"].dispose()
        return times


def main():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the sandbox's access log
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    sandbox = Server().start()
    results = {}
    for mode in ("NORMAL", "FULL", "NORMAL", "FULL"):  # interleaved, so a noisy moment hits both
        results.setdefault(mode, []).extend(run(mode, count, sandbox.url))
    sandbox.stop()
    for mode, times in results.items():
        times.sort()
        print(f"synchronous={mode:<6} {len(times)} fresh deposits: p50 {statistics.median(times):.2f} ms, "
              f"p99 {times[int(len(times) * 0.99)]:.2f} ms, mean {statistics.fmean(times):.2f} ms")
    full, normal = statistics.median(results["FULL"]), statistics.median(results["NORMAL"])
    print(f"FULL costs {full - normal:+.2f} ms per fresh deposit at p50 ({full / normal:.2f}x)")


if __name__ == "__main__":
    main()
