"""gunicorn settings for production: threaded workers, timeouts that fit the upstream budget."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("RELAY_THREADS", "8"))
# A call may take RELAY_UPSTREAM_BUDGET (20 s) upstream; give it room before gunicorn kills the worker.
timeout = int(float(os.environ.get("RELAY_UPSTREAM_BUDGET", "20")) + 15)
graceful_timeout = timeout
keepalive = 5
accesslog = None  # the relay writes one JSON line per request itself
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server):
    """Sandbox mode: one embedded upstream in the master, shared by every worker. The workers' start-up line
    says how many workers and threads serve (the command line may override this file)."""
    os.environ.update(RELAY_SERVER="gunicorn", RELAY_SERVER_WORKERS=str(server.cfg.workers),
                      RELAY_SERVER_THREADS=str(server.cfg.threads))
    if not os.environ.get("PAYWALLS_API_KEY") and not os.environ.get("RELAY_SANDBOX_URL"):
        from relay import sandbox

        os.environ["RELAY_SANDBOX_URL"] = sandbox.ensure_embedded(None)
