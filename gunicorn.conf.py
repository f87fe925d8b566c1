"""gunicorn settings for production: threaded workers, timeouts that fit the upstream budget.

Why 2 x 256 gthread threads (README, Performance): a money call spends almost all of its time waiting for
Paywalls, an internet round trip away, and a waiting thread costs memory, not CPU. With 8 threads a worker
served only 8 calls at once whatever the CPUs could do; 256 per worker keep up with 256 callers even when all
of them land on one worker. Threads, not gevent: the money path blocks in places a monkey-patched event loop
cannot see (SQLite's fsync and its cross-process flock, psycopg's C waits), and the upstream watchdog is a
real thread. The database pools (relay/db.py) and the upstream connection pool (relay/upstream.py) are sized
from the same number, so no thread ever waits for a pool."""

import glob
import os
import shutil
import tempfile

from relay.config import from_env as _relay_config  # not `config`: gunicorn would read it as its own setting

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("RELAY_THREADS", "256"))
# A call may take RELAY_UPSTREAM_BUDGET (20 s) upstream; give it room before gunicorn kills the worker.
timeout = int(float(os.environ.get("RELAY_UPSTREAM_BUDGET", "20")) + 15)
graceful_timeout = timeout
keepalive = 5
accesslog = None  # the relay writes one JSON line per request itself
errorlog = "-"
# The same setting the app reads (relay/proxies.py), from the environment or .env: one list of trusted proxies.
forwarded_allow_ips = _relay_config()["FORWARDED_ALLOW_IPS"]

# Metrics across workers: each worker writes its values here and /metrics adds them up (prometheus-client's
# multiprocess mode). Set before any worker imports prometheus_client; a directory of our own unless given.
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="paywalls-relay-metrics-")


def on_starting(server):
    """Sandbox mode: one embedded upstream in the master, shared by every worker. The workers' start-up line
    says how many workers and threads serve (the command line may override this file)."""
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)  # a previous run's values would be added to this one's
    os.environ.update(RELAY_SERVER="gunicorn", RELAY_SERVER_WORKERS=str(server.cfg.workers),
                      RELAY_SERVER_THREADS=str(server.cfg.threads))
    if not os.environ.get("PAYWALLS_API_KEY") and not os.environ.get("RELAY_SANDBOX_URL"):
        from relay import sandbox

        os.environ["RELAY_SANDBOX_URL"] = sandbox.ensure_embedded(None)


def child_exit(server, worker):
    """A dead worker's gauges (connections in use, claims waiting) stop counting; its counters still do."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def worker_exit(server, worker):
    """A worker stopping (a deploy, a restart): its bulk runner finishes the rows in flight and queues its batch again,
    so another worker resumes it at once instead of after RELAY_BULK_LEASE; its hooks worker claims no more
    deliveries and lets the POSTs in flight finish (each within RELAY_HOOKS_TIMEOUT)."""
    from relay import batches, deliveries

    batches.stop_all(timeout=graceful_timeout - 5)
    deliveries.stop_all(timeout=10)
